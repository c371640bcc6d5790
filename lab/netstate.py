"""The lab's network as a run finds it, and what a dead run left there.

Every ``lab run`` (and every pytest session of the plugin) is recorded on the
lab itself: its reaper container (:mod:`lab.reaper`) carries the run's id,
what it runs, its owner (``pid@host``) and start time as labels, and its log
holds the journal of every shaping, partition and heal the run applied. Any
later ``lab`` process reads those records (:func:`read_records`) and the
shaping and partitions really in force (``lab.shaping.link_status``: the
helpers and the rules in each namespace).

Before a scenario runs, :func:`prepare_network` makes the network the one the
scenario declares (none of anything left over):

* another run that is alive uses the lab: refused, naming it;
* something is shaped or partitioned: with ``keep_network`` (``lab run
  --keep-network``) refused with what it is and who left it; otherwise undone,
  with **one** warning line naming what and who (a dead run, by its id and
  what it ran; else "by hand");
* a dead run whose reaper already undid its faults: one warning line naming
  it and what its reaper did; its record is removed.

:func:`decide` is the pure decision; the rest is I/O through the
:class:`lab.interface.Lab` protocol.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from lab import shaping
from lab.errors import LabError, NotReady
from lab.interface import HelperContainer, Lab
from lab.progress import Progress
from lab.reaper import LABEL_OWNER, LABEL_RUN, LABEL_SCOPE, LABEL_STARTED, LABEL_WHAT, REAPER_ROLE
from lab.shaping import LinkState
from lab.waiting import wait_for

_JOURNAL = re.compile(r"event=journal run=\S* note=(\{.*\})\s*$")
_REAPED = re.compile(r"event=reaped scope=run run=\S* (.*)$")
_RESET = re.compile(r"event=reset container=(\S+) exit=(-?\d+)")
# How long a dead controller's reaper may take to undo its run (linger, one helper each).
REAPING_WAIT = 60.0


class NetworkRefused(LabError):
    """The lab's network is not the one the scenarios declare, and may not be changed."""


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """A run as its reaper records it: who, what, whether it still runs, what it applied."""

    run_id: str
    what: str
    owner: str
    started: str
    alive: bool
    notes: tuple[dict[str, object], ...] = ()
    reaped: str | None = None  # the reaper's summary when it undid the run's faults
    reset: tuple[str, ...] = ()  # containers whose namespaces it reset
    container: HelperContainer | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """``run 20261201T1015Z-ab12 (lab run chat-partition, pid 1234@host, since T)``."""
        owner = self.owner.replace("@", " on ", 1)
        return f"run {self.run_id} ({self.what}, pid {owner}, started {self.started})"

    def applied(self) -> list[str]:
        """What the journal says the run did to the network, in words, once each."""
        words = [str(note.get("did", "")) for note in self.notes if note.get("did")]
        return list(dict.fromkeys(words))


def parse_journal(logs: str) -> tuple[list[dict[str, object]], str | None, list[str]]:
    """A reaper's log -> its journal notes, its "reaped" summary, the namespaces it reset."""
    notes: list[dict[str, object]] = []
    reaped = None
    reset: list[str] = []
    for line in logs.splitlines():
        if match := _JOURNAL.search(line):
            with contextlib.suppress(ValueError):
                value = json.loads(match[1])
                if isinstance(value, dict):
                    notes.append(value)
        elif match := _REAPED.search(line):
            reaped = match[1].strip()
        elif (match := _RESET.search(line)) and match[2] == "0":
            reset.append(match[1])
    return notes, reaped, reset


def record_of(container: HelperContainer) -> RunRecord:
    labels = container.labels
    notes, reaped, reset = parse_journal(container.logs())
    return RunRecord(
        run_id=labels.get(LABEL_RUN, "?"),
        what=labels.get(LABEL_WHAT, "?"),
        owner=labels.get(LABEL_OWNER, "?"),
        started=labels.get(LABEL_STARTED, "?"),
        alive=container.status in {"running", "created", "restarting"},
        notes=tuple(notes),
        reaped=reaped,
        reset=tuple(reset),
        container=container,
    )


def owner_is_dead(owner: str, *, host: str | None = None) -> bool:
    """Whether ``pid@host`` names a process of this host that no longer exists (a
    controller on another host, or an odd owner, is taken as alive)."""
    pid, _, where = owner.partition("@")
    if where != (host or socket.gethostname()) or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, as another user
    return False


def _settled(lab: Lab, records: list[RunRecord], progress: Progress) -> list[RunRecord]:
    """Records again, once the reapers of controllers that died here have done their work."""
    dying = [r for r in records if r.alive and owner_is_dead(r.owner)]
    if not dying:
        return records
    progress(f"waiting for the reaper of {dying[0].describe()} (its controller died)")

    def done() -> list[RunRecord] | None:
        again = read_records(lab)
        still = {r.run_id for r in dying}
        return again if not any(r.alive and r.run_id in still for r in again) else None

    try:
        return wait_for(done, timeout=REAPING_WAIT, what="a dead run's reaper", interval=0.5)
    except NotReady:
        return read_records(lab)


def read_records(lab: Lab) -> list[RunRecord]:
    """Every run recorded on this lab (its ``run``-scope reapers), alive or dead."""
    records = []
    for container in lab.helpers(REAPER_ROLE):
        if container.labels.get(LABEL_SCOPE) != "run":
            continue
        container.reload()
        records.append(record_of(container))
    return sorted(records, key=lambda record: record.started)


def in_force(states: Sequence[LinkState]) -> list[str]:
    """The shaping and partitions of ``lab status``'s links table, in words."""
    described = []
    for state in states:
        if state.shaping == "partition":
            described.append(f"partition {state.link}")
        elif state.shaping == "?":
            described.append(f"{state.state.split(':')[0]} on {state.link}")
        else:
            described.append(f"shaping {state.link}: {state.shaping}")
    return described


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What to do before a scenario: refuse (``refusal``), undo (``undo``), and the one
    warning line to print (if any); ``forget``: dead runs' records to remove."""

    refusal: str | None = None
    undo: bool = False
    warning: str | None = None
    forget: tuple[RunRecord, ...] = ()


def _by_whom(dead: Sequence[RunRecord]) -> str:
    if not dead:
        return "by hand (no run recorded it)"
    return "by " + "; ".join(f"{record.describe()}, which died" for record in dead)


def decide(
    *,
    left: Sequence[str],
    records: Sequence[RunRecord],
    own_run: str,
    keep_network: bool,
) -> Decision:
    """The pure decision of :func:`prepare_network` (see the module docstring)."""
    others = [record for record in records if record.run_id != own_run]
    alive = [record for record in others if record.alive]
    dead = tuple(record for record in others if not record.alive)
    if alive:
        running = "; ".join(record.describe() for record in alive)
        return Decision(refusal=f"another run is using this lab's network: {running}")
    if left and keep_network:
        return Decision(
            refusal=f"the lab's network is not as the scenarios declare: {', '.join(left)} "
            f"(left {_by_whom(dead)}); run without --keep-network to undo it"
        )
    if left:
        warning = f"undoing what was left on the lab's network {_by_whom(dead)}: {', '.join(left)}"
        return Decision(undo=True, warning=warning, forget=dead)
    if dead:
        undone = [
            f"{record.describe()} died; its reaper undid "
            + (", ".join(record.applied()) or "its faults")
            + (f" (reset {', '.join(record.reset)})" if record.reset else "")
            for record in dead
        ]
        return Decision(warning="; ".join(undone), forget=dead)
    return Decision()


def restore(lab: Lab) -> None:
    """Remove every shaping and partition in force (helpers and orphan rules alike)."""
    shaping.unshape(lab)
    shaping.heal(lab)


def prepare_network(
    lab: Lab, *, own_run: str = "", keep_network: bool = False, progress: Progress
) -> Decision:
    """Make the network the declared one (or refuse): see the module docstring."""
    records = _settled(lab, read_records(lab), progress)
    left = in_force(shaping.link_status(lab))
    decision = decide(left=left, records=records, own_run=own_run, keep_network=keep_network)
    if decision.refusal is not None:
        raise NetworkRefused(decision.refusal)
    if decision.warning is not None:
        progress(f"warning: {decision.warning}")
    if decision.undo:
        restore(lab)
    for record in decision.forget:
        if record.container is not None:
            record.container.remove()
    return decision
