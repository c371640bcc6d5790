"""A run's record on the lab and what a dead one left: the reaper's options and connection,
the journal read back, the decision before a scenario (undo with one warning, refuse with
--keep-network or while another run lives), and run_files recording and journaling."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.interface import ExecResult
from lab.netstate import (
    NetworkRefused,
    RunRecord,
    decide,
    in_force,
    owner_is_dead,
    parse_journal,
    prepare_network,
)
from lab.reaper import (
    LABEL_OWNER,
    LABEL_RUN,
    LABEL_SCOPE,
    LABEL_STARTED,
    LABEL_WHAT,
    REAPER_ROLE,
    ReaperError,
    ReaperHandle,
    ReaperSpec,
    host_port,
    reaper_run_options,
    reset_script,
    socket_path,
)
from lab.scenario.session import run_files
from lab.shaping import LinkState

SPEC = ReaperSpec(
    project="p",
    scope="run",
    run_id="r1",
    image="socketlab/netkit:abc",
    token="k" * 48,
    socket_path="/var/run/docker.sock",
    socket_gid=998,
    what="lab run chat-partition",
    owner="1234@host",
    started="2026-12-01T10:00:00Z",
)


# --------------------------------------------------------------------------- reaper options


def test_a_reaper_is_labelled_confined_and_reachable_only_from_this_host() -> None:
    options = reaper_run_options(SPEC)
    labels = options["labels"]
    assert labels["io.socketlab.project"] == "p"  # lab down removes it
    assert labels["io.socketlab.role"] == REAPER_ROLE
    assert (labels[LABEL_SCOPE], labels[LABEL_RUN], labels[LABEL_WHAT]) == (
        "run",
        "r1",
        "lab run chat-partition",
    )
    assert options["ports"] == {"7070/tcp": ("127.0.0.1", None)}
    assert options["volumes"] == {
        "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}
    }
    assert (options["user"], options["group_add"]) == ("10001", ["998"])
    assert options["cap_drop"] == ["ALL"]
    assert options["read_only"] is True
    assert options["security_opt"] == ["no-new-privileges:true"]
    assert options["auto_remove"] is False  # a run's reaper stays as its record
    # the token is in the environment, never on the command line
    assert options["environment"] == {"SOCKETLAB_REAPER_TOKEN": SPEC.token}
    assert SPEC.token not in " ".join(options["command"])
    command = options["command"]
    assert command[command.index("--project") + 1] == "p"
    assert command[command.index("--reset-script") + 1] == reset_script()
    session = reaper_run_options(ReaperSpec(**{**SPEC.__dict__, "scope": "session"}))
    assert session["auto_remove"] is True
    assert "--reset-script" not in session["command"]
    with pytest.raises(ReaperError, match="no reaper scope"):
        reaper_run_options(ReaperSpec(**{**SPEC.__dict__, "scope": "all"}))


def test_the_reset_script_undoes_everything_socketlab_puts_in_a_namespace() -> None:
    script = reset_script()
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "raw", "mangle"):
            assert f"{tool} -w 5 -t {table} -F SOCKETLAB 2>/dev/null" in script
            assert f"{tool} -w 5 -t {table} -X SOCKETLAB 2>/dev/null" in script
        assert f"{tool} -w 5 -t mangle -S PREROUTING" in script  # capture's NFLOG rules
    assert 'tc qdisc del dev "$dev" root' in script
    assert 'ethtool -K "$dev" tso on gso on' in script
    assert script.rstrip().endswith("true")  # a namespace already clean is no failure


def test_the_engine_socket_and_the_published_port() -> None:
    assert socket_path("unix:///run/user/1000/docker.sock") == "/run/user/1000/docker.sock"
    with pytest.raises(ReaperError, match="needs the engine's unix socket"):
        socket_path("tcp://10.0.0.1:2375")
    attrs = {
        "NetworkSettings": {"Ports": {"7070/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]}}
    }
    assert host_port(attrs) == 49153
    assert host_port({"NetworkSettings": {"Ports": {"7070/tcp": None}}}) is None


@pytest.fixture
def reaper_peer() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """The far end of a reaper connection, answering as the reaper does."""
    ours, theirs = socket.socketpair()
    received: list[bytes] = []

    def answer() -> None:
        reader = theirs.makefile("rb")
        while line := reader.readline():
            received.append(line)
            theirs.sendall(b"bye\n" if line == b"done\n" else b"ok\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield ours, received
    theirs.close()
    thread.join(timeout=5)


def test_a_handle_journals_notes_and_says_done_once(
    reaper_peer: tuple[socket.socket, list[bytes]],
) -> None:
    conn, received = reaper_peer
    conn.settimeout(5)
    handle = ReaperHandle(name="p-reaper-r1", conn=conn, helper=None, scope="run")
    handle.note({"did": "partition client server", "scenario": "s"})
    handle.release()
    handle.release()
    handle.note({"did": "late"})  # after release: nothing sent
    assert received == [
        b'note {"did": "partition client server", "scenario": "s"}\n',
        b"done\n",
    ]


# --------------------------------------------------------------------------- records


LOGS = (
    "socketlab.reaper event=reaper_listening port=7070 scope=run project=p run=r1\n"
    'socketlab.reaper event=journal run=r1 note={"did":"shaping client -> server: delay=40ms","scenario":"s"}\n'
    'socketlab.reaper event=journal run=r1 note={"did":"partition server udp-listener","scenario":"s"}\n'
    'socketlab.reaper event=journal run=r1 note={"did":"partition server udp-listener","scenario":"s"}\n'
    'socketlab.reaper event=reaping run=r1 reason="the controller\'s connection dropped"\n'
    "socketlab.reaper event=reset container=p_server_1 exit=0\n"
    "socketlab.reaper event=reset container=p_client_1 exit=1\n"
    "socketlab.reaper event=reaped scope=run run=r1 reset=1 removed=2\n"
)


def test_the_journal_is_read_back_from_the_reapers_log() -> None:
    notes, reaped, reset = parse_journal(LOGS + "garbage event=journal run=x note={broken\n")
    assert [note["did"] for note in notes] == [
        "shaping client -> server: delay=40ms",
        "partition server udp-listener",
        "partition server udp-listener",
    ]
    assert reaped == "reset=1 removed=2"
    assert reset == ["p_server_1"]
    record = RunRecord(run_id="r1", what="lab run s", owner="1@h", started="t", alive=False,
                       notes=tuple(notes))  # fmt: skip
    assert record.applied() == [
        "shaping client -> server: delay=40ms",
        "partition server udp-listener",
    ]


def dead_run(**changes: Any) -> RunRecord:
    values: dict[str, Any] = {
        "run_id": "20261201T100000Z-ab12",
        "what": "lab run chat-partition",
        "owner": "4242@ci",
        "started": "2026-12-01T10:00:00Z",
        "alive": False,
        "notes": ({"did": "partition server udp-listener"},),
    }
    return RunRecord(**(values | changes))


def test_what_a_dead_run_left_is_undone_with_one_line_naming_it() -> None:
    decision = decide(left=["partition server <-> udp-listener"], records=[dead_run()],
                      own_run="me", keep_network=False)  # fmt: skip
    assert decision.undo
    assert decision.refusal is None
    assert decision.warning == (
        "undoing what was left on the lab's network by run 20261201T100000Z-ab12 "
        "(lab run chat-partition, pid 4242 on ci, started 2026-12-01T10:00:00Z), which died: "
        "partition server <-> udp-listener"
    )
    assert "\n" not in decision.warning
    assert [record.run_id for record in decision.forget] == ["20261201T100000Z-ab12"]


def test_keep_network_refuses_with_the_reason() -> None:
    decision = decide(left=["partition server <-> udp-listener"], records=[dead_run()],
                      own_run="me", keep_network=True)  # fmt: skip
    assert not decision.undo
    assert decision.refusal is not None
    assert decision.refusal.startswith(
        "the lab's network is not as the scenarios declare: partition server <-> udp-listener "
        "(left by run 20261201T100000Z-ab12"
    )
    assert decision.refusal.endswith("run without --keep-network to undo it")


def test_shaping_left_by_hand_is_named_so() -> None:
    decision = decide(left=["shaping client -> server: delay=40ms"], records=[], own_run="me",
                      keep_network=False)  # fmt: skip
    assert decision.warning == (
        "undoing what was left on the lab's network by hand (no run recorded it): "
        "shaping client -> server: delay=40ms"
    )


def test_a_dead_run_its_reaper_cleaned_up_is_still_named() -> None:
    decision = decide(left=[], records=[dead_run(reset=("p_server_1",))], own_run="me",
                      keep_network=False)  # fmt: skip
    assert not decision.undo
    assert decision.warning is not None
    assert decision.warning.endswith(
        "died; its reaper undid partition server udp-listener (reset p_server_1)"
    )


def test_another_live_run_is_refused_and_our_own_record_is_ignored() -> None:
    alive = dead_run(alive=True)
    assert decide(left=[], records=[alive], own_run="me", keep_network=False).refusal == (
        f"another run is using this lab's network: {alive.describe()}"
    )
    mine = dead_run(alive=True, run_id="me")
    assert decide(left=[], records=[mine], own_run="me", keep_network=False).warning is None


def test_links_table_rows_become_words() -> None:
    states = [
        LinkState(
            link="server <-> udp-listener",
            shaping="partition",
            engine="iptables",
            state="blocked both ways",
            helper="-",
            healthy=True,
        ),
        LinkState(
            link="client -> server",
            shaping="delay=40ms",
            engine="nfqueue",
            state="active",
            helper="h: running",
            healthy=True,
        ),
        LinkState(
            link="client -> server",
            shaping="?",
            engine="?",
            state="orphan rule (NFQUEUE 3, no helper): run lab unshape",
            helper="-",
            healthy=False,
        ),
    ]
    assert in_force(states) == [
        "partition server <-> udp-listener",
        "shaping client -> server: delay=40ms",
        "orphan rule (NFQUEUE 3, no helper) on client -> server",
    ]


def test_an_owner_pid_that_is_gone_here_is_dead() -> None:
    here = socket.gethostname()
    assert not owner_is_dead(f"{os.getpid()}@{here}")
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    assert owner_is_dead(f"{child}@{here}")
    assert not owner_is_dead(f"{child}@another-host")  # not ours to judge
    assert not owner_is_dead("odd")


# --------------------------------------------------------------------------- with the fake lab


PARTITION_RULES = "%%iptables\n-N SOCKETLAB\n-A SOCKETLAB -s {peer}/32 -j DROP\n%%raw\n%%tc\n"


def record_helper(lab: Any, *, run_id: str, status: str, logs: str = LOGS) -> Any:
    return lab.add_helper(
        name=f"fake-reaper-{run_id}",
        status=status,
        stdout=logs,
        labels={
            "io.socketlab.role": REAPER_ROLE,
            LABEL_SCOPE: "run",
            LABEL_RUN: run_id,
            LABEL_WHAT: "lab run chat-partition",
            LABEL_OWNER: "4242@elsewhere",
            LABEL_STARTED: "2026-12-01T10:00:00Z",
        },
    )


@pytest.fixture
def lab(fake_lab: Any) -> Any:
    def commands(lab: Any, service: str, argv: list[str]) -> ExecResult:
        if argv[:2] == ["sh", "-c"]:  # heal and unshape steps in a namespace
            return ExecResult(exit_code=0, stdout="", stderr="")
        if argv[:1] == ["echo"]:
            return ExecResult(exit_code=0, stdout=" ".join(argv[1:]) + "\n", stderr="")
        raise AssertionError(f"unexpected command {argv}")

    fake_lab.commands = commands
    fake_lab.rules = {
        "server": PARTITION_RULES.format(peer=fake_lab.ip("udp-listener")),
        "udp-listener": PARTITION_RULES.format(peer=fake_lab.ip("server")),
    }
    return fake_lab


def test_prepare_heals_a_dead_runs_partition_and_forgets_its_record(lab: Any) -> None:
    record = record_helper(lab, run_id="old", status="exited", logs="")
    said: list[str] = []
    decision = prepare_network(lab, own_run="new", progress=said.append)
    (line,) = said
    assert line.startswith("warning: undoing what was left on the lab's network by run old")
    assert line.endswith("partition server <-> udp-listener")
    heals = [argv[2] for name, argv, _ in lab.netkit_runs if "-D SOCKETLAB" in argv[2]]
    assert len(heals) == 2  # both sides' DROP rules removed
    assert record.removed
    assert decision.undo


def test_prepare_refuses_with_keep_network_and_changes_nothing(lab: Any) -> None:
    record_helper(lab, run_id="old", status="exited", logs="")
    with pytest.raises(NetworkRefused, match="run without --keep-network"):
        prepare_network(lab, own_run="new", keep_network=True, progress=lambda _m: None)
    assert not any("-D SOCKETLAB" in argv[2] for _, argv, _ in lab.netkit_runs)


GOOD = """\
name: s
description: a partition while a step runs
steps:
  - {name: e, service: client, run: [echo, hi], timeout: 5}
faults:
  - {at: 0, partition: [server, udp-listener]}
checks:
  - {kind: exit_code, step: e, equals: 0}
"""


def test_run_files_undoes_whats_left_records_the_run_and_journals_its_faults(
    lab: Any, tmp_path: Path
) -> None:
    record_helper(lab, run_id="old", status="exited", logs="")
    (tmp_path / "s.yaml").write_text(GOOD)
    said: list[str] = []
    report = run_files(lab, [tmp_path / "s.yaml"], results_root=tmp_path, run_id="r2",
                       progress=said.append)  # fmt: skip
    assert [line for line in said if line.startswith("warning:")] == [
        "warning: undoing what was left on the lab's network by run old (lab run chat-partition, "
        "pid 4242 on elsewhere, started 2026-12-01T10:00:00Z), which died: "
        "partition server <-> udp-listener"
    ]
    (reaper,) = lab.reapers
    assert reaper.scope == "run"
    assert reaper.notes[0] == {"started": "lab run s"}
    assert {"scenario": "s", "did": "partition server udp-listener"} in reaper.notes
    assert reaper.released
    assert report.results[0].name == "s"


def test_a_run_refused_by_keep_network_runs_nothing(lab: Any, tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(GOOD)
    with pytest.raises(NetworkRefused):
        run_files(lab, [tmp_path / "s.yaml"], results_root=tmp_path, run_id="r3",
                  keep_network=True)  # fmt: skip
    assert lab.reapers == []
    assert not any(service == "client" for service, _ in lab.execs)
