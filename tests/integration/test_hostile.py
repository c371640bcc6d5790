"""A hostile peer on the lab network, against the real lab: every attack is bounded, and the
service still serves a normal client (issue 20).

Attacks run from one container (usually ``client``); the normal client runs from
another, so per-address limits tell them apart. Each test checks a real outcome
across containers: answers, counts, file descriptors, what the poller printed.
"""

from __future__ import annotations

import json
import textwrap
import threading
import uuid
from typing import Any

import pytest

from lab.api import ExecResult, Lab
from lab.congestion import congestion_in_use, ensure_congestion
from lab.waiting import wait_for

pytestmark = pytest.mark.integration

DATA_ROOT = "/srv/socketlab/data"
TEXT = "sample-text.txt"
ADMIN_TOKEN_FILE = "/run/secrets/socketlab/admin-token"  # noqa: S105 - a path


def python(lab: Lab, service: str, script: str, *, timeout: float = 60) -> str:
    """Run a Python script in ``service``'s container; its stdout (it must succeed)."""
    result = lab.exec(service, ["python3", "-c", textwrap.dedent(script)], timeout=timeout)
    return result.check(f"python in {service}").stdout


def in_background(lab: Lab, service: str, script: str) -> None:
    """Start a Python script in ``service``'s container and return at once (it ends itself)."""
    lab.container(service).exec_run(["python3", "-c", textwrap.dedent(script)], detach=True)


def hello_from(lab: Lab, service: str) -> dict[str, Any]:
    result = lab.exec(service, ["socketlab", "client", "hello", "--json"], timeout=60)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    answer: dict[str, Any] = json.loads(lines[-1]) if lines else {"stderr": result.stderr}
    return answer


# --- services -------------------------------------------------------------------------

FLOOD = """
    import select, socket, time
    held, refused = [], 0
    for _ in range({count}):
        sock = socket.create_connection(("server", 4571), timeout=5)
        held.append(sock)
    # The refusals come as the server accepts (later on a loaded machine); the held ones
    # stay silent. Read until no more than {most} can be held, then a second longer.
    unread, deadline, settle = list(held), time.monotonic() + 30, None
    while unread and time.monotonic() < (settle or deadline):
        if settle is None and len(held) - refused <= {most}:
            settle = time.monotonic() + 1.0
        for sock in select.select(unread, [], [], 0.2)[0]:
            unread.remove(sock)
            refused += b"too many connections from your address" in sock.recv(4096)
    open("{marker}", "w").write(str(refused))
    deadline = time.monotonic() + {hold}
    while time.monotonic() < deadline:  # until the test says it has seen enough
        try:
            open("{marker}.stop")
            break
        except OSError:
            time.sleep(0.2)
    for sock in held:
        sock.close()
"""


def test_one_host_flooding_idle_connections_locks_nobody_else_out(lab: Lab) -> None:
    marker = f"/tmp/flood-{uuid.uuid4().hex[:8]}"
    in_background(lab, "client", FLOOD.format(count=200, most=128, marker=marker, hold=45))

    def refusals() -> int | None:
        result = lab.exec("client", ["cat", marker], timeout=10)
        return int(result.stdout) if result.ok and result.stdout.strip() else None

    try:
        refused = wait_for(refusals, timeout=60, what="the flood to be in place")
        _flooded(lab, refused)
    finally:
        lab.exec("client", ["touch", f"{marker}.stop"], timeout=10)
    wait_for(
        lambda: lab.exec("client", ["socketlab", "client", "hello"], timeout=30).ok,
        timeout=30,
        what="the flooding address to be served again once it let go",
    )


def _flooded(lab: Lab, refused: int) -> None:
    # 128 held at most; the client's own healthcheck (a connect from the same address
    # every few seconds) may hold one slot for an instant while the flood arrives.
    assert 127 <= 200 - refused <= 128, "one address holds at most 128 connections"
    # Another host is still served, and so is the server's own healthcheck.
    answer = hello_from(lab, "rss-poller")
    assert answer.get("ok") is True, answer
    assert "Hello" in str(answer)
    assert lab.exec("client", ["socketlab", "client", "hello"], timeout=30).exit_code == 1
    probe = lab.exec(
        "server",
        ["bash", "/opt/socketlab/src/socketlab/healthcheck.sh", "hello", "127.0.0.1", "4571"],
        timeout=30,
    )
    assert probe.ok, probe.stderr


STALLED = "hostile-stalled-32m.bin"
STALLED_READER = """
    import socket, time
    from socketlab.protocol import encode_request
    sock = socket.create_connection(("server", 4571), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(encode_request("fetch", {{"name": "{name}"}}))
    sock.recv(1)
    # A reader that stopped reading: the transfer waits, the file stays open, until the
    # test has counted it (or a minute has gone).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            open("{stop}")
            break
        except OSError:
            time.sleep(0.2)
    sock.close()
"""

FETCH_AND_RESET = """
    import socket, struct
    from socketlab.protocol import encode_request
    for _ in range(5):
        sock = socket.create_connection(("server", 4571), timeout=5)
        sock.sendall(encode_request("fetch", {{"name": "{name}"}}))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # an RST right after the request
    print("reset 5 times")
"""

# The server's Python process (PID 1 is docker-init): "python3 -m socketlab server".
FIND_SERVER = """
    import os
    def server_pids():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                args = [a for a in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0") if a]
            except OSError:
                continue
            if pid != "1" and args[-2:] == [b"socketlab", b"server"] and b"python" in args[0]:
                yield int(pid)
"""

COUNT_FDS = """
    target = os.path.realpath("__PATH__")
    pids = list(server_pids())
    count = 0
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                count += os.readlink(f"/proc/{pid}/fd/{fd}") == target
            except OSError:
                pass
    print(len(pids), count)
"""


def count_fds_on(path: str) -> str:
    """A script printing how many server processes there are, and their fds on ``path``."""
    return textwrap.dedent(FIND_SERVER) + textwrap.dedent(COUNT_FDS).replace("__PATH__", path)


def test_resets_right_after_a_fetch_leave_no_descriptor_open(lab: Lab) -> None:
    count_fds = count_fds_on(f"{DATA_ROOT}/{STALLED}")
    # First, that the count sees an open file: a fetch whose reader stops reading
    # holds the file open on the server (32 MiB: more than the socket buffers).
    lab.exec(
        "server",
        [
            "sh",
            "-c",
            f"test -s {DATA_ROOT}/{STALLED} || head -c 33554432 /dev/zero > {DATA_ROOT}/{STALLED}",
        ],
        timeout=60,
    ).check("making the stalled file")
    stop = f"/tmp/stalled-{uuid.uuid4().hex[:8]}.stop"
    in_background(lab, "client", STALLED_READER.format(name=STALLED, stop=stop))
    try:
        wait_for(
            lambda: python(lab, "server", count_fds).split() == ["1", "1"],
            timeout=30,
            what="the count to see the stalled transfer's descriptor",
        )
    finally:
        lab.exec("client", ["touch", stop], timeout=10)
    count_fds = count_fds_on(f"{DATA_ROOT}/{TEXT}")
    assert python(lab, "client", FETCH_AND_RESET.format(name=TEXT)).strip() == "reset 5 times"
    # The server may hold the file for a moment while hashing it; then never again.
    wait_for(
        lambda: python(lab, "server", count_fds).split() == ["1", "0"],
        timeout=30,
        what="the server to hold no descriptor on the file",
    )
    assert python(lab, "client", FETCH_AND_RESET.format(name=TEXT)).strip() == "reset 5 times"
    wait_for(
        lambda: python(lab, "server", count_fds).split() == ["1", "0"], timeout=30, what="again"
    )
    fetched = lab.exec(
        "client",
        [
            "socketlab",
            "client",
            "fetch",
            TEXT,
            "--dest",
            f"/tmp/after-resets-{uuid.uuid4().hex[:6]}",
        ],
        timeout=60,
    )
    assert fetched.ok, fetched.stderr


ADMIN_CALLS = """
    import json, urllib.request, urllib.error
    calls = [
        ("POST", "http://server:8080/admin/feeds/news/entries", {"title": "forged"}),
        ("POST", "http://server:8080/admin/feeds/flood/schedule", {"every": 0.001}),
        ("GET", "http://server:8080/faults/huge.rss", None),
        ("GET", "http://server:8080/faults/slow.rss?seconds=600", None),
        ("POST", "http://udp-listener:37021/reset", None),
    ]
    reads = ["http://server:8080/feeds/news.rss", "http://server:8080/stats",
             "http://udp-listener:37021/stats"]
    out = {"writes": [], "reads": []}
    for token in (None, "wrong-token"):
        for method, url, body in calls:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    out["writes"].append([url, answer.status])
            except urllib.error.HTTPError as exc:
                out["writes"].append([url, exc.code])
    for url in reads:
        with urllib.request.urlopen(url, timeout=10) as answer:
            out["reads"].append([url, answer.status])
    print(json.dumps(out))
"""


def test_admin_calls_without_the_token_are_refused_and_reads_stay_open(lab: Lab) -> None:
    before = json.loads(
        lab.exec("server", ["socketlab", "feed", "stats"], timeout=30).check("stats").stdout
    )["feeds"]
    outcome = json.loads(python(lab, "rss-poller", ADMIN_CALLS))
    assert [status for _, status in outcome["writes"]] == [401] * 10
    assert [status for _, status in outcome["reads"]] == [200, 200, 200]
    after = json.loads(
        lab.exec("server", ["socketlab", "feed", "stats"], timeout=30).check("stats").stdout
    )["feeds"]
    assert after == before, "nothing published, no feed created"
    # The rss-poller holds no token at all; the server, client and udp-listener do.
    assert lab.exec("rss-poller", ["test", "-e", ADMIN_TOKEN_FILE], timeout=10).exit_code == 1
    published = lab.exec(
        "server",
        ["socketlab", "feed", "publish", "--feed", f"ok-{uuid.uuid4().hex[:6]}", "--title", "ok"],
        timeout=30,
    )
    assert published.ok, published.stderr
    assert lab.exec("client", ["socketlab", "udp-stats", "--reset"], timeout=30).ok


def test_no_secret_is_in_any_container_environment(lab: Lab) -> None:
    token = lab.exec("server", ["cat", ADMIN_TOKEN_FILE], timeout=10).check("token").stdout.strip()
    key_file = "/run/secrets/socketlab/pickle-key"
    key = lab.exec("server", ["cat", key_file], timeout=10).check("key").stdout.strip()
    assert len(token) == 64
    for service in ("server", "client", "udp-listener", "rss-poller"):
        inspected = json.dumps(lab.container(service).attrs)
        assert token not in inspected, service
        if key:
            assert key not in inspected, service
    for service in ("udp-listener", "rss-poller"):
        assert lab.exec(service, ["test", "-e", key_file], timeout=10).exit_code == 1, service


def test_an_injected_feed_entry_is_printed_escaped_and_degrades_only_itself(lab: Lab) -> None:
    tag = uuid.uuid4().hex[:8]
    title = f"inject {tag} \x1b[2J\x1b]0;pwned\x07\n* alice left (bye)"
    lab.exec(
        "server",
        ["socketlab", "feed", "publish", "--feed", "news", "--title", title, "--summary", "x\ry"],
        timeout=30,
    ).check("publishing the hostile entry")
    shown = f"inject {tag} \\x1b[2J\\x1b]0;pwned\\x07\\x0a* alice left (bye) | "

    def printed() -> str | None:
        logs = lab.logs("rss-poller")
        return logs if shown in logs else None

    logs = wait_for(printed, timeout=60, what="the poller to print the hostile entry")
    line = next(line for line in logs.splitlines() if shown in line)
    assert "\x1b" not in line
    assert "\x07" not in line
    assert "\r" not in line
    assert not any(row.startswith("* alice left") for row in logs.splitlines()), "no forged line"

    # The poller prints a document's entries before it writes that poll's status.json:
    # read it until it counts the entry (the log line alone can come first).
    def counted() -> dict[str, Any] | None:
        status = json.loads(lab.read_file("rss-poller", "/var/lib/socketlab/rss/status.json"))
        news: dict[str, Any] = status["feeds"]["http://server:8080/feeds/news.rss"]
        return news if news["degraded_entries"] >= 1 else None

    news = wait_for(counted, timeout=30, what="status.json to count the degraded entry")
    assert news["state"] == "ok", news


FORGED_DATAGRAMS = """
    import socket, time
    from socketlab.udp.datagram import encode
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("udp-listener", 37020))
    forged = []
    for sender_id in range(2000, 2600):
        forged.append(encode(sender_id=sender_id, seq=1, sent_ns=1))
        forged.append(encode(sender_id=sender_id, seq=65537, sent_ns=2))
    forged += [encode(sender_id=7, seq=1 + k * 65536, sent_ns=k) for k in range(1, 402)]
    forged.append(encode(sender_id=8, seq=1, sent_ns=1))
    forged.append(encode(sender_id=8, seq=2**64 - 1, sent_ns=2))
    started = time.monotonic()
    for number, data in enumerate(forged):
        sock.send(data)
        if number % 100 == 99:
            time.sleep(0.01)  # the attacker's own pace
    print(len(forged))
"""


def _udp_stats(lab: Lab) -> dict[str, Any]:
    stats: dict[str, Any] = json.loads(
        lab.exec("client", ["socketlab", "udp-stats"], timeout=30).check("stats").stdout
    )
    return stats


def _sessions_of(stats: dict[str, Any], sender_id: int) -> list[dict[str, Any]]:
    return [s for s in stats["sessions"] if s["sender_id"] == sender_id]


def test_forged_datagrams_leave_a_normal_sender_accounted_right(lab: Lab) -> None:
    lab.exec("client", ["socketlab", "udp-stats", "--reset"], timeout=30).check("reset")
    sender_id = 0x5EED0000 + int(uuid.uuid4().hex[:4], 16)
    honest: list[ExecResult] = []
    send = ["socketlab", "udp-send", "--count", "1000", "--rate", "200"]
    sender = threading.Thread(
        target=lambda: honest.append(
            lab.exec("rss-poller", [*send, "--sender-id", f"{sender_id:#x}"], timeout=90)
        )
    )
    sender.start()
    try:
        # The forgeries go out once the honest session is under way, so they meet it.
        wait_for(lambda: _sessions_of(_udp_stats(lab), sender_id), timeout=60, what="its start")
        forged = int(python(lab, "client", FORGED_DATAGRAMS).strip())
    finally:
        sender.join(timeout=120)
    assert honest, "the honest sender did not finish"
    assert honest[0].ok, honest[0].stderr

    def accounted() -> dict[str, Any] | None:
        stats = _udp_stats(lab)
        mine = _sessions_of(stats, sender_id)
        return stats if mine and mine[-1]["highest_seq"] >= 1000 else None

    stats = wait_for(accounted, timeout=60, what="the honest sender's last datagram")
    session = _sessions_of(stats, sender_id)[0]
    # Every honest datagram is accounted for, once. A loaded listener may miss some of them
    # while the forged burst fills its socket buffer: the kernel counts those, and only
    # those may be missing (on a quiet machine, none are).
    missing = session["lost"] + session["missed_at_start"]
    assert session["received"] + missing == 1000, session
    assert session["duplicates"] == 0, session
    assert missing <= stats["kernel_drops"], (session, stats["kernel_drops"])
    assert session["number"] == 1, "never split into sessions by the forgeries"
    assert stats["datagrams"] >= forged + 1000 - stats["kernel_drops"]
    assert stats["lost"] < forged * (1 << 20), "no datagram adds more than 2^20 to lost"
    assert stats["implausible_starts"] >= 1, "the jump to 2^64-1 is a session apart"
    assert session["transit_ms_max"] < 1000, "the listener never stalled"


SLOW_CLIENTS = """
    import socket, time
    held = []
    for _ in range(150):
        sock = socket.create_connection(("server", 8080), timeout=5)
        sock.send(b"GET /feeds/news.rss HTTP/1.1\\r\\nX-Slow: ")
        held.append(sock)
    idle = [socket.create_connection(("udp-listener", 37021), timeout=5) for _ in range(60)]
    started = time.monotonic()
    closed_at = {{}}
    while time.monotonic() - started < {hold}:
        for number, sock in enumerate(held):
            if number in closed_at:
                continue
            try:
                sock.send(b"a")  # one byte now and then: per-read timeouts never fire
            except OSError:
                closed_at[number] = time.monotonic() - started
        time.sleep(2)
    print(len(closed_at), max(closed_at.values(), default=0))
"""


def test_slow_and_idle_http_clients_do_not_stop_the_feed_server(lab: Lab) -> None:
    in_background(lab, "client", SLOW_CLIENTS.format(hold=30))
    news = "http://server:8080/feeds/news.rss"
    timing = python(
        lab,
        "rss-poller",
        f"""
        import time, urllib.request
        time.sleep(3)  # the slow crowd is in place by now
        started = time.monotonic()
        for _ in range(5):
            with urllib.request.urlopen("{news}", timeout=10) as answer:
                assert answer.status == 200
        with urllib.request.urlopen("http://udp-listener:37021/stats", timeout=10) as answer:
            assert answer.status == 200
        print(time.monotonic() - started)
        """,
    )
    assert float(timing) < 5.0, "served at once despite 150 slow clients"
    outcome = python(
        lab,
        "client",
        """
        import socket, time
        sock = socket.create_connection(("server", 8080), timeout=5)
        sock.send(b"GET / HTTP/1.0\\r\\nX: ")
        started = time.monotonic()
        sock.settimeout(30)
        data = sock.recv(100)
        print(round(time.monotonic() - started, 1), data[:12].decode())
        """,
    )
    seconds, status = outcome.split(" ", 1)
    assert float(seconds) < 15.0, "the whole-request deadline (10 s) ended it"
    assert status.startswith("HTTP/1.0 408")


KILL_SERVER_PROCESS = """
    import signal
    for pid in server_pids():
        print(pid, flush=True)
        os.kill(pid, signal.SIGKILL)  # a crash: no clean shutdown
"""


def test_a_crashed_server_comes_back_by_itself_and_status_counts_it(lab: Lab) -> None:
    def restarts() -> int:
        return next(row.restarts for row in lab.status() if row.service == "server")

    before = restarts()
    started = lab.started_at("server")
    script = textwrap.dedent(FIND_SERVER) + textwrap.dedent(KILL_SERVER_PROCESS)
    # The container goes down with its main process, and this exec with it (137).
    killed = lab.exec("server", ["python3", "-c", script], timeout=30)
    assert killed.stdout.strip().isdigit(), killed.stderr
    wait_for(lambda: restarts() == before + 1, timeout=60, what="Docker to restart the server")
    lab.wait_healthy(timeout=120)
    assert lab.started_at("server") != started
    assert hello_from(lab, "client").get("ok") is True
    # Docker's restart gave the server a fresh network namespace, without the
    # per-route congestion control `lab up` sets; `lab up` does it again, as here.
    assert congestion_in_use(lab, ["server"]) != {"server": "cubic"}
    ensure_congestion(lab, names=["server"])
    assert congestion_in_use(lab, ["server"]) == {"server": "cubic"}


# --- chat

CHAT_PORT = 4572

# Runs in the client container (python3 -c SCRIPT MODE TAG ...). "readers N": N
# participants that read everything until the flooder's end marker; "flood S": one
# participant that sends as fast as the socket takes for S seconds (bounded in
# count too), then waits until the hub has read all of it (its answer to who) and
# sends the end marker. Each prints one JSON report.
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
            "present": set(), "seqs": [], "errors": {}, "marker": False, "pings": 0,
            "who": False}

def on_event(peer, event):
    kind = event["type"]
    if kind == "welcome":
        peer["present"] = set(event["participants"])
    elif kind == "joined":
        peer["present"].add(event["name"])
    elif kind == "participants":
        peer["who"] = True
    elif kind == "ping":
        peer["sock"].settimeout(10)
        try:
            peer["sock"].sendall(wire.pong())
        except OSError as exc:
            peer["ended"] = peer["ended"] or f"pong failed: {exc}"
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
    me["sock"].settimeout(60)
    # The hub reads a throttled sender only as its bucket refills, so seconds of flood may still
    # wait in the sockets. It answers "who" in stream order and without a token: the answer
    # means it has read everything before it, and the marker will not meet an empty bucket.
    try:
        me["sock"].sendall(out + wire.who())
    except OSError as exc:
        me["ended"] = me["ended"] or f"send failed: {exc}"
    me["sock"].setblocking(False)
    drain_t0 = time.monotonic()
    while time.monotonic() < DEADLINE and not me["who"] and not me["ended"]:
        pump(sel, on_event, 0.2)
    drain_s = time.monotonic() - drain_t0
    refill_end = time.monotonic() + 1.0  # a second's tokens for the marker
    while time.monotonic() < refill_end:
        pump(sel, on_event, 0.1)
    me["sock"].settimeout(60)
    try:
        me["sock"].sendall(wire.say("__end__"))
    except OSError as exc:
        me["ended"] = me["ended"] or f"send failed: {exc}"
    me["sock"].setblocking(False)
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        pump(sel, on_event, 0.1)
    report = {"sent": sent, "flood_s": round(flood_s, 2), "rate": round(sent / flood_s),
              "drained": me["who"], "drain_s": round(drain_s, 2), "errors": me["errors"],
              "ended": me["ended"]}
print(json.dumps(report))
"""


def _run_flood_part(lab: Lab, *args: str) -> Any:
    result = lab.exec("client", ["python3", "-c", _FLOOD_SCRIPT, *args], timeout=400)
    lines = [line for line in result.stdout.splitlines() if line.startswith(("{", "["))]
    assert lines, f"flood script exit {result.exit_code}: {result.stderr.strip()[-2000:]}"
    return json.loads(lines[-1])


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
    assert flood["drained"], f"the hub never answered who after the flood: {flood}"
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
