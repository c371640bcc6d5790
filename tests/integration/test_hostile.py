"""Hostile peers against the real lab: each attack runs beside a normal client that must still be served."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest

from lab.api import ExecResult, Lab
from lab.waiting import wait_for

pytestmark = pytest.mark.integration


# --- chat

CHAT_PORT = 4572

# Runs in the client container (python3 -c SCRIPT MODE TAG ...). "readers N": N
# participants that read everything until the flooder's end marker; "flood S": one
# participant that sends as fast as the socket takes for S seconds (bounded in
# count too), then pauses and sends the end marker. Each prints one JSON report.
_FLOOD_SCRIPT = r"""
import json, selectors, socket, sys, time
from socketlab.chat import wire
from socketlab.protocol import ProtocolError

mode, tag, arg = sys.argv[1], sys.argv[2], float(sys.argv[3])
HOST, PORT, DEADLINE = "server", 4572, time.monotonic() + 240
MAX_FLOOD = 400_000

def connect(name):
    sock = socket.create_connection((HOST, PORT), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(wire.join(name))
    sock.setblocking(False)
    return sock

def pump(sel, state, timeout):
    for key, _ in sel.select(timeout):
        peer = key.data
        try:
            data = peer["sock"].recv(262144)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as exc:
            data = b""
            peer["ended"] = peer["ended"] or f"recv failed: {exc}"
        try:
            events = peer["stream"].receive_data(data)
        except ProtocolError as exc:  # e.g. a notice cut into a half-sent frame
            peer["ended"] = peer["ended"] or f"garbled stream: {exc}"[:200]
            sel.unregister(peer["sock"])
            continue
        for event in events:
            state(peer, event)
        if not data:
            peer["ended"] = peer["ended"] or "hub closed the connection"
            sel.unregister(peer["sock"])

def new_peer(name):
    return {"name": name, "sock": connect(name), "stream": wire.ChatStream(), "ended": None,
            "present": set(), "seqs": [], "errors": {}, "marker": False, "pings": 0}

def on_event(peer, event):
    kind = event["type"]
    if kind == "welcome":
        peer["present"] = set(event["participants"])
    elif kind == "joined":
        peer["present"].add(event["name"])
    elif kind == "ping":
        peer["sock"].setblocking(True)
        peer["sock"].sendall(wire.pong())
        peer["sock"].setblocking(False)
    elif kind == "error":
        peer["errors"][event["code"]] = peer["errors"].get(event["code"], 0) + 1
        if event["code"] == "overflow":
            peer["ended"] = peer["ended"] or "dropped: " + event["detail"]
    elif kind == "message" and event["from"] == f"flooder-{tag}":
        if event["text"] == "__end__":
            peer["marker"] = True
        else:
            peer["seqs"].append(event["seq"])

sel = selectors.DefaultSelector()
if mode == "readers":
    peers = [new_peer(f"reader{i}-{tag}") for i in range(int(arg))]
    for peer in peers:
        sel.register(peer["sock"], selectors.EVENT_READ, peer)
    while time.monotonic() < DEADLINE and not all(p["marker"] or p["ended"] for p in peers):
        pump(sel, on_event, 0.2)
    report = [{"name": p["name"], "count": len(p["seqs"]),
               "in_order": p["seqs"] == list(range(1, len(p["seqs"]) + 1)),
               "marker": p["marker"], "ended": p["ended"], "errors": p["errors"]} for p in peers]
else:
    me = new_peer(f"flooder-{tag}")
    sel.register(me["sock"], selectors.EVENT_READ, me)
    while time.monotonic() < DEADLINE and sum(n.startswith("reader") for n in me["present"]) < 5:
        pump(sel, on_event, 0.2)
    frame = wire.say("flood " + "x" * 60)
    burst = frame * 64
    sent, out, t0 = 0, b"", time.monotonic()
    while time.monotonic() - t0 < arg and sent < MAX_FLOOD and not me["ended"]:
        if not out:
            out, sent = burst, sent + 64
        try:
            out = out[me["sock"].send(out):]
        except (BlockingIOError, InterruptedError):
            pump(sel, on_event, 0.001)
        except OSError as exc:
            me["ended"] = f"send failed: {exc}"
    flood_s = time.monotonic() - t0
    me["sock"].setblocking(True)
    me["sock"].sendall(out)
    pause_end = time.monotonic() + 3.0  # let the rate limiter's bucket refill, then the marker
    while time.monotonic() < pause_end:
        pump(sel, on_event, 0.1)
    me["sock"].setblocking(True)
    me["sock"].sendall(wire.say("__end__"))
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        pump(sel, on_event, 0.1)
    report = {"sent": sent, "flood_s": round(flood_s, 2), "rate": round(sent / flood_s),
              "errors": me["errors"], "ended": me["ended"]}
print(json.dumps(report))
"""


def _run_flood_part(lab: Lab, *args: str) -> Any:
    result = lab.exec("client", ["python3", "-c", _FLOOD_SCRIPT, *args], timeout=400)
    lines = [line for line in result.stdout.splitlines() if line.startswith(("{", "["))]
    assert lines, f"flood script exit {result.exit_code}: {result.stderr.strip()[-2000:]}"
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def chat_hub(lab: Lab) -> Lab:
    wait_for(
        lambda: (
            lab.exec(
                "client", ["socketlab", "health", "tcp", "server", str(CHAT_PORT)], timeout=15
            ).ok
        ),
        timeout=120,
        what="the chat hub on server:4572",
    )
    return lab


def test_chat_flood_beside_fast_readers_throttles_the_flooder_only(chat_hub: Lab) -> None:
    tag = uuid.uuid4().hex[:6]
    readers: list[Any] = []
    thread = threading.Thread(
        target=lambda: readers.append(_run_flood_part(chat_hub, "readers", tag, "5"))
    )
    thread.start()
    try:
        flood = _run_flood_part(chat_hub, "flood", tag, "5")
    finally:
        thread.join(timeout=420)
    assert readers, "the readers did not report"
    (report,) = readers
    print(f"\nchat flood: flooder {json.dumps(flood)}; readers {json.dumps(report)}")
    # No reader was dropped; each got the same stream, complete and in order, and the end marker.
    assert [r["ended"] for r in report] == [None] * 5, report
    assert all(r["marker"] and r["in_order"] for r in report), report
    counts = {r["count"] for r in report}
    assert len(counts) == 1, f"readers got different streams: {report}"
    # The flooder was throttled: told so, and far from everything it sent was relayed.
    assert flood["errors"].get("rate-limited", 0) >= 1, flood
    assert 0 < counts.pop() < flood["sent"]


def _chat(lab: Lab, name: str, *args: str) -> ExecResult:
    return lab.exec("client", ["socketlab", "chat", "--name", name, *args], timeout=120)


def test_chat_injection_reaches_nobody_raw(chat_hub: Lab) -> None:
    tag = uuid.uuid4().hex[:6]
    mallory, bob = f"mallory-{tag}", f"bob-{tag}"
    hostile = [
        "\x1b[2J\x1b[Hscreen cleared",  # ESC: clear the screen
        "\x1b]0;pwned\x07title set",  # OSC: set the terminal title
        "fine\r* alice left (bye)",  # CR: overwrite the line with a forged notice
        "fine\n* alice left (bye)",  # LF: a whole forged line
    ]
    bidi = "invoice \u202eexe.pdf"  # allowed by the hub, shown escaped by the client
    bob_out: list[ExecResult] = []
    # bob prints what he hears like a person's terminal would (no transcript).
    thread = threading.Thread(
        target=lambda: bob_out.append(
            _chat(chat_hub, bob, "--wait-for", mallory, "--expect-count", "2", "--deadline", "90")
        )
    )
    thread.start()
    try:
        args = ["--wait-for", bob, "--pause", "0.2", "--deadline", "8", "--transcript", "-"]
        for text in [*hostile, bidi, "still here"]:
            args += ["--say", text]
        args += ["--expect", f"{bob}:never"]  # keeps mallory in until bob is done
        mal = _chat(chat_hub, mallory, *args)
        forger = _chat(chat_hub, f"* alice-{tag}", "--say", "x")
    finally:
        thread.join(timeout=180)
    assert bob_out, "bob did not finish"
    screen = bob_out[0].stdout
    print(f"\nbob's terminal: {screen!r}")
    assert bob_out[0].ok, bob_out[0].stderr
    assert "\x1b" not in screen
    assert "\r" not in screen
    assert not [line for line in screen.splitlines() if line.startswith("* alice")]
    assert f"{mallory}: invoice \\u202eexe.pdf" in screen
    assert f"{mallory}: still here" in screen
    # mallory was told why, each time, and stayed connected.
    events = [json.loads(line)["event"] for line in mal.stdout.splitlines() if line.startswith("{")]
    codes = [e["code"] for e in events if e["type"] == "error"]
    assert codes == ["bad-text"] * len(hostile), events
    # A name imitating a system notice is refused with a reason.
    assert forger.exit_code == 1
    assert "bad-name" in forger.stderr
