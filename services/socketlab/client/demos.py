"""The request demos: ``hello``, ``echo``, ``request``, ``objects`` and ``ls``."""

from __future__ import annotations

import argparse
import json
import pickle
import socket
import time
from collections.abc import Callable
from typing import Any

from socketlab import objects
from socketlab.client.connection import Endpoint, LabConnection
from socketlab.client.errors import CommandFailed
from socketlab.client.output import Output
from socketlab.protocol import RemoteProtocolError, encode_message, encode_request
from socketlab.protocol.messages import response_result


def cmd_hello(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    del args
    with LabConnection.open(endpoint) as conn:
        greeting = conn.request("hello")
    out.say(str(greeting))
    out.result("hello", True, result=greeting)


def _echo_payload(args: argparse.Namespace) -> str:
    size: int = args.size
    if size:
        # Larger than any single recv: the framing has to put it back together.
        words = "framing keeps messages whole across many recv calls "
        return (words * (size // len(words) + 1))[:size]
    return str(args.text)


def cmd_echo(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    payload = _echo_payload(args)
    wire = encode_request("echo", payload)
    started = time.monotonic()
    with LabConnection.open(endpoint) as conn:
        if args.trickle:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for index in range(len(wire)):
                conn.send(wire[index : index + 1])
        else:
            conn.send(wire)
        result = response_result(conn.read_message())
    if result != payload:
        raise CommandFailed(
            f"echo came back different ({len(str(result))} vs {len(payload)} chars)"
        )
    shown = payload if len(payload) <= 80 else f"{len(payload.encode())} bytes, identical"
    out.say(f"echo: {shown}")
    out.result(
        "echo",
        True,
        bytes=len(payload.encode()),
        wire_bytes=len(wire),
        sends=len(wire) if args.trickle else 1,
        seconds=round(time.monotonic() - started, 4),
    )


def cmd_request(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    try:
        value = json.loads(args.value) if args.value is not None else None
    except ValueError:
        value = args.value  # a bare word is a string value
    with LabConnection.open(endpoint) as conn:
        result = conn.request(args.action, value)
    out.say(json.dumps(result, ensure_ascii=False) if not isinstance(result, str) else result)
    out.result("request", True, action=args.action, result=result)


class _SentinelPayload:
    """For the refusal demo: unpickling this would create ``path`` (harmless, but visible)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return (open, (self.path, "w"))


def cmd_objects(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    if args.pickle:
        _objects_pickle(endpoint, out, args)
        return
    registry = objects.default_registry()
    sample = objects.sample_objects()
    with LabConnection.open(endpoint) as conn:
        result = conn.request("objects", json.loads(registry.dumps(sample)))
    echoed = registry.loads(json.dumps(result["echo"]))
    theirs = registry.loads(json.dumps(result["sample"]))
    equal = echoed == sample and theirs == sample and bool(result["equal_to_sample"])
    for name, value in sample.items():
        out.say(f"{name}: {value!r}")
    out.say(f"server rebuilt {', '.join(result['types'])}; equal after the round trip: {equal}")
    out.result("objects", equal, types=result["types"], equal=equal, encoding="json")
    if not equal:
        raise CommandFailed("objects differ after the round trip")


def _objects_pickle(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    key: bytes = args.pickle_key or b""
    obj: Any = _SentinelPayload(args.sentinel) if args.sentinel else objects.sample_objects()
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if args.unsigned:
        sig = None
    elif not key:
        raise CommandFailed(
            "no pickle key: lab up mounts it (SOCKETLAB_PICKLE_KEY_FILE); "
            "or give --pickle-key, or --unsigned"
        )
    else:
        sig = objects.signature(payload, key)
        if args.tamper:
            payload = payload[:-2] + bytes([payload[-2] ^ 0x01]) + payload[-1:]
    extra = {"action": "pickle"} | ({"signature": sig} if sig else {})
    with LabConnection.open(endpoint) as conn:
        conn.send(encode_message(objects.PICKLE_TYPE, payload, extra=extra))
        try:
            result = response_result(conn.read_message())
        except RemoteProtocolError as exc:
            out.result("objects", False, encoding="pickle", refused=str(exc))
            raise CommandFailed(f"server refused the pickle: {exc}") from exc
    out.say(f"server loaded a signed pickle of {', '.join(result['types'])}")
    out.result("objects", True, encoding="pickle", **result)


def cmd_ls(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    del args
    with LabConnection.open(endpoint) as conn:
        entries = conn.request("ls")
    for entry in entries:
        out.say(f"{entry['size']:>14}  {entry['name']}")
    out.result("ls", True, files=entries)
