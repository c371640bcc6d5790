"""The examples of ``examples/``, through the CLI as a user types it: each project is
brought up once (its own Compose project name), exercised, and taken down, and
``lab down`` must leave nothing labelled.

* routed: the router's hop shows in the TTL; 40 ms on client -> router adds
  ~40 ms to client -> server; cutting router <-> server cuts the client from the
  server and nothing else.
* replicas: three clients each fetch and verify the sample image (hashes compared
  across containers); 100 ms on client.2 -> server changes only client.2's RTT.
* ipv6: dual stack; 40 ms on the IPv6 path, measured by ``ping -6``, within 15 %;
  IPv4 untouched; an IPv6 request on an IPv4-only network is an error; a capture
  of the shaped link holds its IPv6 packets.
* own-image: a service from its own Dockerfile (nothing of socketlab inside) is
  shaped, partitioned and its output checked by a scenario.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import re
import statistics
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest

from lab.api import Lab
from lab.cli import main as lab_main
from lab.errors import DockerUnavailable

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


class Project:
    """One example project: ``run(...)`` is ``lab -p P -f FILE ...`` with its output."""

    def __init__(self, name: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.file = EXAMPLES / name / "docker-compose.yml"
        self.project = f"socketlab-ex-{name}-{uuid.uuid4().hex[:6]}"
        self.capsys = capsys
        self.lab = Lab(project=self.project, compose_files=[self.file])

    def run(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = lab_main(["-p", self.project, "-f", str(self.file), *argv])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def ok(self, *argv: str) -> str:
        code, out, err = self.run(*argv)
        assert code == 0, f"lab {' '.join(argv)} exited {code}: {err[-800:]}"
        return out


@contextlib.contextmanager
def example(name: str, capsys: pytest.CaptureFixture[str]) -> Iterator[Project]:
    """``lab up`` the example once; ``lab down`` at the end must leave nothing labelled."""
    project = Project(name, capsys)
    try:
        project.lab.docker  # noqa: B018 - fail clearly without an engine
    except DockerUnavailable as exc:
        pytest.fail(f"integration tests need a Docker engine: {exc}", pytrace=False)
    try:
        project.ok("up", "--timeout", "240")
        yield project
    finally:
        code, _, err = project.run("down")
        assert code == 0, err
        assert project.lab.leftovers() == {"containers": [], "networks": [], "volumes": []}


def report(project: Project, message: str) -> None:
    """A measured figure, printed past pytest's capture (shown with -s)."""
    with project.capsys.disabled():
        print(f"\n{message}")


def ping_medians(out: str) -> dict[str, float | None]:
    """``lab ping`` table rows -> link: median RTT in ms (None when nothing came back)."""
    medians: dict[str, float | None] = {}
    for line in out.splitlines():
        match = re.search(r"(\S+ -> \S+)\s*│\s*(\d+)/(\d+)\s*│\s*(?:([\d.]+) ms|-)", line)
        if match:
            medians[match[1]] = float(match[4]) if match[4] else None
    return medians


def ping_times(out: str) -> list[float]:
    """Per-packet times (ms) from iputils ``ping`` output."""
    return [float(t) for t in re.findall(r"time=([\d.]+) ms", out)]


# --------------------------------------------------------------------------- routed


def test_routed(capsys: pytest.CaptureFixture[str]) -> None:
    with example("routed", capsys) as project:
        lab = project.lab
        server_ip = lab.ip("server")
        router_a = lab.ip("router", network="net-a")

        status = project.ok("status")
        assert re.search(r"client\s*│\s*\S+/\d+\s*│\s*router \(" + re.escape(router_a), status)

        # the router's hop: TTL 1 expires there, and the server answers with TTL 63
        code, out, _ = project.run("exec", "client", "--", "ping", "-c", "1", "-t", "1", server_ip)
        assert code != 0
        assert f"From {router_a}" in out
        assert "Time to live exceeded" in out
        out = project.ok("exec", "client", "--", "ping", "-c", "3", "-i", "0.2", server_ip)
        assert "ttl=63" in out

        before = ping_medians(project.ok("ping", "client", "server", "--count", "40"))
        project.ok("shape", "client", "router", "--delay", "40ms")
        after = ping_medians(project.ok("ping", "client", "server", "--count", "40"))
        added = after["client -> server"] - before["client -> server"]  # type: ignore[operator]
        assert 40 * 0.85 <= added <= 40 * 1.15, f"client -> server RTT rose by {added:.2f} ms"
        report(
            project, f"routed: 40 ms on client -> router added {added:.2f} ms to client -> server"
        )

        # no link between client and server: they share no network
        code, _, err = project.run("shape", "client", "server", "--delay", "1ms")
        assert code == 1
        assert "share no network" in err
        assert "router" in err

        project.ok("unshape")
        project.ok("partition", "router", "server")
        code, out, _ = project.run("ping", "client", "server", "--count", "5")
        assert code == 1
        assert ping_medians(out)["client -> server"] is None
        # nothing else: the client still reaches the router
        assert (
            ping_medians(project.ok("ping", "client", "router", "--count", "5"))["client -> router"]
            is not None
        )
        assert re.search(
            r"router <-> server\s*│\s*partition\s*│\s*iptables\s*│\s*blocked both",
            project.ok("status"),
        )
        assert "healed: router <-> server" in project.ok("heal")
        assert (
            ping_medians(project.ok("ping", "client", "server", "--count", "5"))["client -> server"]
            is not None
        )


# --------------------------------------------------------------------------- replicas


def test_replicas(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with example("replicas", capsys) as project:
        status = project.ok("status")
        for n in (1, 2, 3):
            assert f"client.{n}" in status

        sample = "/srv/socketlab/data/sample-image.png"
        server_sum = project.ok("exec", "server", "--", "sha256sum", sample).split()[0]
        for n in (1, 2, 3):
            out = project.ok(
                "exec", f"client.{n}", "--", "socketlab", "client", "fetch", "sample-image.png",
                "--dest", f"/tmp/fetched-{n}",
            )  # fmt: skip
            assert "verified" in out
            copy = tmp_path / f"client-{n}.png"
            project.ok("cp", f"client.{n}:/tmp/fetched-{n}/sample-image.png", str(copy))
            assert hashlib.sha256(copy.read_bytes()).hexdigest() == server_sum

        # a copy back into one replica arrives whole, in that replica only
        project.ok("cp", str(tmp_path / "client-1.png"), "client.3:/tmp/back.png")
        assert project.ok("exec", "client.3", "--", "sha256sum", "/tmp/back.png").split()[0] == (
            server_sum
        )
        code, _, _ = project.run("exec", "client.2", "--", "test", "-e", "/tmp/back.png")
        assert code == 1  # the exit code comes through

        # -i passes stdin, to its end
        stdin = tmp_path / "stdin.bin"
        stdin.write_bytes(b"through stdin\n" * 1000)
        with stdin.open("rb") as source:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(source))
            out = project.ok("exec", "-i", "client.1", "--", "sha256sum")
        assert out.split()[0] == hashlib.sha256(stdin.read_bytes()).hexdigest()

        # an archive with a link out of it is refused, and nothing is written
        project.ok(
            "exec", "client.1", "--", "sh", "-c", "mkdir -p /tmp/evil && ln -sf /etc /tmp/evil/up"
        )
        landing = tmp_path / "landing"
        landing.mkdir()
        code, _, err = project.run("cp", "client.1:/tmp/evil", str(landing))
        assert code == 1
        assert "refusing a symbolic link to /etc" in err
        assert list(landing.iterdir()) == []

        before = ping_medians(project.ok("ping", "client", "server", "--count", "30"))
        project.ok("shape", "client.2", "server", "--delay", "100ms")
        after = ping_medians(project.ok("ping", "client", "server", "--count", "30"))
        for n in (1, 2, 3):
            link = f"client.{n} -> server"
            added = after[link] - before[link]  # type: ignore[operator]
            if n == 2:
                assert 100 * 0.85 <= added <= 100 * 1.15, f"{link} rose by {added:.2f} ms"
                report(project, f"replicas: 100 ms on client.2 -> server added {added:.2f} ms")
            else:
                assert after[link] < 10, f"{link} is {after[link]} ms: shaped by mistake"  # type: ignore[operator]

        # the same names in a scenario: steps on client.N, files checked at client.N:/path
        out = project.ok(
            "run", str(EXAMPLES / "replicas" / "fetch.yaml"), "--results", str(tmp_path / "r")
        )
        assert re.search(r"replicas-fetch\s*│\s*PASS\s*│\s*7/7", out), out
        assert {p.name for p in tmp_path.glob("r/*/replicas-fetch/logs/*.log")} == {
            "server.log",
            "client.1.log",
            "client.2.log",
            "client.3.log",
        }

        code, _, err = project.run("exec", "client.4", "--", "true")
        assert code == 1
        assert "running: client.1, client.2, client.3" in err


# --------------------------------------------------------------------------- ipv6


def test_ipv6(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A /64 of its own, so labs side by side do not overlap.
    monkeypatch.setenv("SOCKETLAB_IPV6_SUBNET", f"fd00:5c:{uuid.uuid4().hex[:4]}::/64")
    with example("ipv6", capsys) as project:
        lab = project.lab
        client6 = lab.ip("client", family=6)
        server6 = lab.ip("server", network="dual", family=6)
        status = project.ok("status")
        assert client6 in status
        assert server6 in status

        def ping(family: str) -> float:
            out = project.ok(
                "exec", "client", "--", "ping", family, "-c", "40", "-i", "0.05", "server"
            )
            return statistics.median(ping_times(out))

        before6, before4 = ping("-6"), ping("-4")
        out = project.ok("shape", "client", "server", "-6", "--delay", "40ms", "--check")
        assert "IPv6" in out
        assert "self-check" in out
        after6, after4 = ping("-6"), ping("-4")
        added = after6 - before6
        assert 40 * 0.85 <= added <= 40 * 1.15, f"ping -6 rose by {added:.2f} ms"
        assert after4 - before4 < 5, "IPv4 was shaped too"
        report(project, f"ipv6: 40 ms on the IPv6 path, ping -6 median rose by {added:.2f} ms")

        code, _, err = project.run("shape", "legacy", "server", "-6", "--delay", "1ms")
        assert code == 1
        assert "network 'plain' has no IPv6" in err

        project.ok("unshape")
        project.ok("partition", "client", "server", "-6")
        code, _, _ = project.run(
            "exec", "client", "--", "ping", "-6", "-c", "2", "-W", "1", "server"
        )
        assert code != 0
        project.ok("exec", "client", "--", "ping", "-4", "-c", "2", "-W", "1", "server")
        project.ok("heal")

        # a capture of the shaped link holds its IPv6 packets
        results = tmp_path / "results"
        out = project.ok(
            "run", str(EXAMPLES / "ipv6" / "ping6.yaml"), "--capture", "--results", str(results)
        )
        (pcap,) = results.glob("*/pcap/*.pcap")
        with pcap.open("rb") as handle:
            reader = dpkt.pcap.Reader(handle)
            header = LINK_HEADER[reader.datalink()]
            packets = [buf[header:] for _, buf in reader]
        v6 = [ip for ip in packets if _ipv6_between(ip, client6, server6)]
        # 20 echo requests and their 20 replies
        assert len(v6) == 40, f"{len(v6)} IPv6 packets between client and server in {pcap.name}"


# link-layer header bytes by pcap link type: Ethernet, Linux cooked (v1, v2)
LINK_HEADER = {1: 14, 113: 16, 276: 20}


def _ipv6_between(raw: bytes, a: str, b: str) -> bool:
    if not raw or raw[0] >> 4 != 6:
        return False
    packet = dpkt.ip6.IP6(raw)
    ends = {str(ipaddress.IPv6Address(packet.src)), str(ipaddress.IPv6Address(packet.dst))}
    return ends == {a, b}


# --------------------------------------------------------------------------- own image


def test_own_image(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with example("own-image", capsys) as project:
        status = project.ok("status")
        assert re.search(r"echo\s*│\s*running\s*│\s*running", status), status
        # nothing of socketlab in it
        code, _, _ = project.run("exec", "echo", "--", "python3", "-c", "import socketlab")
        assert code == 1
        out = project.ok(
            "run", str(EXAMPLES / "own-image" / "echo.yaml"), "--results", str(tmp_path)
        )
        assert re.search(r"echo\s*│\s*PASS\s*│\s*7/7", out), out


# --------------------------------------------------------------------------- bad input


def test_a_file_compose_rejects_is_named_and_nothing_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  a:\n    image: socketlab/base:latest\n    networkz: [n]\n")
    project = f"socketlab-ex-bad-{uuid.uuid4().hex[:6]}"
    assert lab_main(["-p", project, "-f", str(bad), "up"]) == 1
    err = capsys.readouterr().err
    assert "Compose rejects" in err
    assert str(bad) in err
    assert "networkz" in err
    assert Lab(project=project, compose_files=[bad]).leftovers() == {
        "containers": [],
        "networks": [],
        "volumes": [],
    }
