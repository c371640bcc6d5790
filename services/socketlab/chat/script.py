"""Chat scripts: what a scripted participant says, waits for and expects (pure parsing).

One step per line; blank lines and ``#`` comments are ignored::

    wait-for bob            # until bob is present (already there, or joins)
    say hello bob           # send a message
    pause 0.5               # seconds
    deadline 20             # seconds allowed to each following expect (default 30)
    expect bob: hi alice    # a message from bob with exactly this text
    expect-count 3          # at least 3 messages received in total
    expect-left bob         # bob was announced as left
    bye                     # leave (also implied at the end of the script)

The same steps can be given as command-line flags; :func:`steps_from_flags`
builds them in a fixed order (wait-for, say/pause, expects).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from socketlab.chat.errors import ScriptError

DEFAULT_DEADLINE = 30.0


@dataclass(frozen=True)
class Say:
    text: str


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class WaitFor:
    name: str
    deadline: float


@dataclass(frozen=True)
class Expect:
    sender: str
    text: str
    deadline: float


@dataclass(frozen=True)
class ExpectCount:
    count: int
    deadline: float


@dataclass(frozen=True)
class ExpectLeft:
    name: str
    deadline: float


@dataclass(frozen=True)
class Bye:
    pass


Step = Say | Pause | WaitFor | Expect | ExpectCount | ExpectLeft | Bye


def _seconds(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise ScriptError(f"{where}: {text!r} is not a number of seconds") from exc
    if value < 0:
        raise ScriptError(f"{where}: seconds cannot be negative")
    return value


def parse_script(lines: Iterable[str], *, source: str = "<script>") -> list[Step]:
    """Parse script lines into steps; ScriptError names the file and line."""
    steps: list[Step] = []
    deadline = DEFAULT_DEADLINE
    for number, raw in enumerate(lines, start=1):
        where = f"{source}:{number}"
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        verb, _, rest = line.partition(" ")
        rest = rest.strip()
        if verb == "deadline":
            deadline = _seconds(rest, where)
        else:
            steps.append(_parse_step(verb, rest, deadline=deadline, where=where))
    return steps


def _parse_step(verb: str, rest: str, *, deadline: float, where: str) -> Step:  # noqa: PLR0911 - one return per verb
    if verb == "say":
        if not rest:
            raise ScriptError(f"{where}: say needs a text")
        return Say(rest)
    if verb == "pause":
        return Pause(_seconds(rest, where))
    if verb == "wait-for":
        return WaitFor(_name(rest, where), deadline)
    if verb == "expect":
        sender, sep, text = rest.partition(":")
        if not sep or not sender.strip():
            raise ScriptError(f"{where}: expect needs 'NAME: TEXT'")
        return Expect(sender.strip(), text.strip(), deadline)
    if verb == "expect-count":
        try:
            return ExpectCount(int(rest), deadline)
        except ValueError as exc:
            raise ScriptError(f"{where}: expect-count needs a whole number") from exc
    if verb == "expect-left":
        return ExpectLeft(_name(rest, where), deadline)
    if verb == "bye":
        return Bye()
    raise ScriptError(f"{where}: unknown step {verb!r}")


def _name(text: str, where: str) -> str:
    if not text:
        raise ScriptError(f"{where}: a participant name is needed")
    return text


def steps_from_flags(
    *,
    wait_for: Sequence[str] = (),
    says: Sequence[str] = (),
    pause: float = 0.0,
    expects: Sequence[str] = (),
    expect_count: int | None = None,
    expect_left: Sequence[str] = (),
    deadline: float = DEFAULT_DEADLINE,
) -> list[Step]:
    """The steps the command-line flags describe, in a fixed order."""
    steps: list[Step] = [WaitFor(name, deadline) for name in wait_for]
    for index, text in enumerate(says):
        if index and pause:
            steps.append(Pause(pause))
        steps.append(Say(text))
    for item in expects:
        sender, sep, text = item.partition(":")
        if not sep or not sender.strip():
            raise ScriptError(f"--expect {item!r}: use 'NAME:TEXT'")
        steps.append(Expect(sender.strip(), text.strip(), deadline))
    if expect_count is not None:
        steps.append(ExpectCount(expect_count, deadline))
    steps += [ExpectLeft(name, deadline) for name in expect_left]
    return steps
