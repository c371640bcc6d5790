"""A minimal Docker Engine API client over the engine's unix socket, for the reaper.

The reaper runs in a container without the Docker SDK; this speaks the few
calls it needs (list, remove, create, start, wait) with ``http.client`` over
``AF_UNIX``. Every call has a timeout and answers are read up to
:data:`MAX_ANSWER` bytes. Errors are :class:`EngineError`, one line.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

from socketlab.errors import SocketlabError

MAX_ANSWER: Final = 16 * 1024 * 1024
API: Final = "/v1.41"  # Docker 20.10 and later


class EngineError(SocketlabError):
    """A call to the Docker engine failed (status and message)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def request_path(path: str, query: Mapping[str, Any] | None = None) -> str:
    """``/v1.41/containers/json?all=1&filters=...`` (filters as the engine's JSON)."""
    params = {
        key: json.dumps(value) if isinstance(value, dict | list) else str(value)
        for key, value in (query or {}).items()
    }
    return API + path + (("?" + urllib.parse.urlencode(params)) if params else "")


class Engine:
    """The engine at ``socket_path``; each call opens its own connection."""

    def __init__(self, socket_path: str, *, timeout: float) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        connection = _UnixConnection(self.socket_path, timeout or self.timeout)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            connection.request(method, request_path(path, query), body=payload, headers=headers)
            answer = connection.getresponse()
            data = answer.read(MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise EngineError(f"{method} {path}: {exc or type(exc).__name__}") from exc
        finally:
            connection.close()
        if len(data) > MAX_ANSWER:
            raise EngineError(f"{method} {path}: the answer is larger than {MAX_ANSWER} bytes")
        if answer.status >= 400:
            message = data.decode(errors="replace").strip()[:300]
            raise EngineError(f"{method} {path}: HTTP {answer.status} {message}")
        return json.loads(data) if data.strip() else None

    def containers(self, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        found = self.call("GET", "/containers/json", query={"all": 1, "filters": filters})
        return list(found or [])

    def networks(self, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        return list(self.call("GET", "/networks", query={"filters": filters}) or [])

    def volumes(self, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        answer = self.call("GET", "/volumes", query={"filters": filters}) or {}
        return list(answer.get("Volumes") or [])

    def remove_container(self, container_id: str) -> None:
        self.call("DELETE", f"/containers/{container_id}", query={"force": 1, "v": 1})

    def remove_network(self, network_id: str) -> None:
        self.call("DELETE", f"/networks/{network_id}")

    def remove_volume(self, name: str) -> None:
        self.call("DELETE", f"/volumes/{name}", query={"force": 1})

    def run_to_end(self, options: Mapping[str, Any], *, timeout: float) -> int:
        """Create, start and wait for a container; remove it; its exit code."""
        created = self.call("POST", "/containers/create", body=options)
        container_id = str(created["Id"])
        try:
            self.call("POST", f"/containers/{container_id}/start")
            waited = self.call("POST", f"/containers/{container_id}/wait", timeout=timeout)
            return int((waited or {}).get("StatusCode", -1))
        finally:
            # gone with its namespace's owner, say: nothing left to remove
            with contextlib.suppress(EngineError):
                self.remove_container(container_id)
