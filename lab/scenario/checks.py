"""Check evaluation: pure functions from a check and what a run observed to a verdict.

The runner collects observations (step records, texts from captures, URLs and
logs, file digests); nothing here talks to Docker, so every verdict, and the
reason given when it fails, is unit-tested.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from lab.report.metrics import capture_point, format_metric
from lab.scenario.plan import Check, CheckKind, Fault, Source

TIMEOUT_EXIT_CODE: Final = 124  # coreutils `timeout`, which bounds every step in its container
TAIL_LINES: Final = 3
DIFF_LINES: Final = 8
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


@dataclass(frozen=True, kw_only=True)
class StepRecord:
    """What one step did."""

    name: str
    service: str
    argv: tuple[str, ...]
    timeout: float
    exit_code: int | None  # None: it did not finish (error says why)
    stdout: str = ""
    stderr: str = ""
    started: float = 0.0  # seconds after the scenario's first step started
    duration: float = 0.0
    error: str | None = None

    @property
    def timed_out(self) -> bool:
        return self.exit_code == TIMEOUT_EXIT_CODE


@dataclass(frozen=True, kw_only=True)
class FaultRecord:
    """When a fault was applied, or why it was not."""

    fault: Fault
    applied_at: float | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class TextFacts:
    """Text read from a source (a capture, a status URL, container logs)."""

    text: str | None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class FileFacts:
    """A file in a container: its digest, and its bytes when small enough to diff."""

    ref: str
    sha256: str | None = None
    size: int | None = None
    content: bytes | None = field(default=None, repr=False)
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class PcapFacts:
    """The metrics computed from one link's capture (lab.report.analysis), or why none."""

    link: str  # "server -> client", as the capture names it
    metrics: Mapping[str, float | None] | None = None
    file: str | None = None
    packets: int = 0
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Observations:
    steps: Mapping[str, StepRecord] = field(default_factory=dict)
    texts: Mapping[str, TextFacts] = field(default_factory=dict)
    files: Mapping[str, FileFacts] = field(default_factory=dict)
    pcaps: Mapping[str, PcapFacts] = field(default_factory=dict)  # by pcap_key()


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """A verdict and the reason, in words (for a failure: what was expected, what was seen)."""

    name: str
    kind: str
    passed: bool
    detail: str
    line: int = 0
    implicit: bool = False


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)


def _result(check: Check, passed: bool, detail: str) -> CheckResult:
    return CheckResult(
        name=check.name,
        kind=str(check.kind),
        passed=passed,
        detail=detail,
        line=check.line,
        implicit=check.implicit,
    )


def _step_problem(name: str | None, record: StepRecord | None) -> str | None:
    """Why a step's record cannot be judged, or None when it can."""
    if record is None:
        return f"step {name} did not run"
    if record.error is not None:
        return f"step {name}: {record.error}"
    return None


# --------------------------------------------------------------------------- per kind


def check_exit_code(check: Check, record: StepRecord | None) -> CheckResult:
    if problem := _step_problem(check.step, record):
        return _result(check, False, problem)
    assert record is not None  # noqa: S101 - _step_problem covers None
    if record.exit_code == check.equals:
        return _result(check, True, f"exit {record.exit_code}")
    why = f"exit {record.exit_code}, expected {check.equals}"
    if record.timed_out:
        why += f" (timed out after {record.timeout:g} s)"
    if tail := _tail(record.stderr) or _tail(record.stdout):
        why += f": {tail}"
    return _result(check, False, why)


def check_duration(check: Check, record: StepRecord | None) -> CheckResult:
    if problem := _step_problem(check.step, record):
        return _result(check, False, problem)
    assert record is not None  # noqa: S101 - _step_problem covers None
    took = record.duration
    low = check.minimum if check.minimum is not None else 0.0
    high = check.maximum if check.maximum is not None else math.inf
    bounds = f"{low:g}..{high:g} s" if check.maximum is not None else f"at least {low:g} s"
    passed = low <= took <= high
    return _result(check, passed, f"took {took:.2f} s" + ("" if passed else f", expected {bounds}"))


def diff_summary(a: FileFacts, b: FileFacts) -> str:
    """Why two files differ: sizes, the first differing byte, and for text a short diff."""
    parts = [f"sha256 {(a.sha256 or '?')[:12]} vs {(b.sha256 or '?')[:12]}"]
    if a.size is not None and b.size is not None:
        parts.append(f"sizes {a.size} vs {b.size} bytes")
    if a.content is None or b.content is None:
        return "; ".join(parts)
    offset = next(
        (i for i, (x, y) in enumerate(zip(a.content, b.content, strict=False)) if x != y),
        min(len(a.content), len(b.content)),
    )
    parts.append(f"first difference at byte {offset}")
    try:
        text_a, text_b = a.content.decode(), b.content.decode()
    except UnicodeDecodeError:
        return "; ".join(parts)
    line = text_a.count("\n", 0, offset) + 1
    diff = list(
        difflib.unified_diff(
            text_a.splitlines(), text_b.splitlines(), a.ref, b.ref, n=0, lineterm=""
        )
    )
    changed = sum(1 for row in diff[2:] if row[:1] in {"+", "-"})
    parts.append(f"line {line}; {changed} changed lines")
    shown = [row for row in diff[2:] if not row.startswith("@@")][:DIFF_LINES]
    return "; ".join(parts) + ("\n" + "\n".join(shown) if shown else "")


def check_same_file(check: Check, a: FileFacts | None, b: FileFacts | None) -> CheckResult:
    refs = [str(ref) for ref in check.files or ()]
    if a is None or b is None:
        missing = [ref for ref, facts in zip(refs, (a, b), strict=False) if facts is None]
        return _result(check, False, f"{' and '.join(missing)} not read")
    for facts in (a, b):
        if facts.error is not None:
            return _result(check, False, f"{facts.ref}: {facts.error}")
    if a.sha256 == b.sha256:
        size = f" ({a.size} bytes)" if a.size is not None else ""
        return _result(check, True, f"sha256 {a.sha256}{size}")
    return _result(check, False, f"files differ: {diff_summary(a, b)}")


def parse_json_output(text: str) -> Any:
    """The JSON in a command's output: the whole text, else its last line that is JSON."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise ValueError("no JSON document in the output")


def extract(document: Any, path: str) -> Any:
    """``sessions[0].received`` (or ``sessions.0.received``) out of a JSON document."""
    value = document
    walked = ""
    for match in _PATH_PART.finditer(path):
        name, index = match[1], match[2]
        if index is None and isinstance(value, list) and re.fullmatch(r"-?\d+", name):
            index = name
        if index is not None:
            if not isinstance(value, list):
                raise KeyError(f"{walked or 'the document'} is not a list")
            position = int(index)
            if not -len(value) <= position < len(value):
                raise KeyError(f"{walked or 'the list'} has {len(value)} items, no [{position}]")
            value = value[position]
            walked += f"[{position}]"
            continue
        if not isinstance(value, dict):
            raise KeyError(f"{walked or 'the document'} is not an object")
        if name not in value:
            keys = ", ".join(sorted(map(str, value)))[:200]
            raise KeyError(f"no field {name!r} in {walked or 'the document'} (fields: {keys})")
        value = value[name]
        walked += f".{name}" if walked else name
    return value


def compare(op: str, actual: Any, expected: Any) -> bool:
    """``actual OP expected``; ordering needs numbers on both sides (bools are not numbers)."""
    if op == "==":
        return bool(actual == expected)
    if op == "!=":
        return bool(actual != expected)
    if not isinstance(actual, int | float) or isinstance(actual, bool):
        return False
    if op == "between":
        low, high = expected
        return bool(low <= actual <= high)
    comparisons = {
        "<=": actual <= expected,
        ">=": actual >= expected,
        "<": actual < expected,
        ">": actual > expected,
    }
    return bool(comparisons[op])


def _text(check: Check, facts: TextFacts | None) -> tuple[str | None, str | None]:
    source = check.source.key if check.source else "?"
    if facts is None:
        return None, f"{source} was not read"
    if facts.error is not None or facts.text is None:
        return None, f"{source}: {facts.error or 'nothing read'}"
    return facts.text, None


def check_json_field(check: Check, facts: TextFacts | None) -> CheckResult:
    text, problem = _text(check, facts)
    if problem is not None or text is None:
        return _result(check, False, problem or "nothing read")
    try:
        actual = extract(parse_json_output(text), check.path or "")
    except ValueError as exc:
        return _result(check, False, f"{exc}: {_tail(text)!r}")
    except KeyError as exc:
        return _result(check, False, str(exc.args[0]))
    passed = compare(check.op or "==", actual, check.value)
    expected = (
        f"between {check.value[0]} and {check.value[1]}"
        if check.op == "between"
        else f"{check.op} {check.value!r}"
    )
    is_number = isinstance(actual, int | float) and not isinstance(actual, bool)
    if not passed and not is_number and check.op not in {"==", "!="}:
        expected += " (not a number)"
    return _result(
        check, passed, f"{check.path} = {actual!r}" + ("" if passed else f", expected {expected}")
    )


def check_stdout_contains(check: Check, facts: TextFacts | None) -> CheckResult:
    text, problem = _text(check, facts)
    if problem is not None or text is None:
        return _result(check, False, problem or "nothing read")
    needle = check.text or ""
    found = text.count(needle)
    if check.count is None:
        passed = found > 0
        expected = "at least once"
    else:
        passed = found == check.count
        expected = f"exactly {check.count} time(s)"
    detail = f"{needle!r} found {found} time(s)"
    if not passed:
        detail += f", expected {expected}; output ends: {_tail(text)!r}"
    return _result(check, passed, detail)


def check_order(check: Check, facts: TextFacts | None) -> CheckResult:
    text, problem = _text(check, facts)
    if problem is not None or text is None:
        return _result(check, False, problem or "nothing read")
    rows = text.splitlines()
    positions: list[int] = []
    start = 0
    for wanted in check.lines:
        at = next((i for i in range(start, len(rows)) if wanted in rows[i]), None)
        if at is None:
            earlier = next((i for i in range(start) if wanted in rows[i]), None)
            if earlier is None:
                return _result(check, False, f"{wanted!r} never appears")
            after = check.lines[len(positions) - 1]
            return _result(
                check,
                False,
                f"{wanted!r} (line {earlier + 1}) comes before {after!r} (line {start})",
            )
        positions.append(at)
        start = at + 1
    return _result(check, True, "lines " + ", ".join(str(p + 1) for p in positions))


def pcap_key(link: tuple[str, str], point: str = "delivered") -> str:
    """How observations name the capture of link ``[from, to]`` at a capture point
    (:mod:`lab.report.metrics`): ``from -> to (delivered)``."""
    return f"{link[0]} -> {link[1]} ({point})"


def _expected(op: str, value: Any) -> str:
    return f"between {value[0]} and {value[1]}" if op == "between" else f"{op} {value!r}"


def check_pcap(check: Check, facts: PcapFacts | None) -> CheckResult:
    """A metric of a link's packets against the check's bound, with where it came from."""
    metric = check.metric or "?"
    link = pcap_key(check.link, capture_point(metric)) if check.link else "?"
    if facts is None:
        return _result(check, False, f"no capture of {link} (a pcap check needs its link captured)")
    if facts.error is not None or facts.metrics is None:
        return _result(check, False, f"capture of {link}: {facts.error or 'not analysed'}")
    where = f" ({facts.file or link}, {facts.packets:,} packets)"
    value = facts.metrics.get(metric)
    if value is None:
        return _result(check, False, format_metric(metric, None) + where)
    passed = compare(check.op or "==", value, check.value)
    expected = "" if passed else f", expected {_expected(check.op or '==', check.value)}"
    return _result(check, passed, format_metric(metric, value) + expected + where)


def evaluate(check: Check, observations: Observations) -> CheckResult:  # noqa: PLR0911 - a return per kind
    """The verdict on one check, from what was observed."""
    step = observations.steps.get(check.step) if check.step else None
    text = observations.texts.get(check.source.key) if check.source else None
    match check.kind:
        case CheckKind.EXIT_CODE:
            return check_exit_code(check, step)
        case CheckKind.DURATION:
            return check_duration(check, step)
        case CheckKind.SAME_FILE:
            a, b = check.files or (None, None)
            return check_same_file(
                check, observations.files.get(str(a)), observations.files.get(str(b))
            )
        case CheckKind.JSON_FIELD:
            return check_json_field(check, text)
        case CheckKind.STDOUT_CONTAINS:
            return check_stdout_contains(check, text)
        case CheckKind.ORDER:
            return check_order(check, text)
        case CheckKind.PCAP:
            key = pcap_key(check.link, capture_point(check.metric or "")) if check.link else ""
            return check_pcap(check, observations.pcaps.get(key))
    raise AssertionError(f"unknown check kind {check.kind}")  # pragma: no cover


def evaluate_fault(record: FaultRecord) -> CheckResult:
    """A fault that could not be applied fails the scenario: its premise did not happen."""
    name = f"fault {record.fault.when}: {record.fault.describe()}"
    if record.error is not None:
        passed, detail = False, record.error
    elif record.applied_at is None:
        passed, detail = False, "not applied"
    else:
        passed, detail = True, f"applied at {record.applied_at:.2f} s"
    return CheckResult(
        name=name, kind="fault", passed=passed, detail=detail, line=record.fault.line, implicit=True
    )


def capture_sources(
    observations: Mapping[str, StepRecord], captures: Mapping[str, str]
) -> dict[str, TextFacts]:
    """Texts keyed by source for every captured step: capture name -> step record stdout."""
    texts: dict[str, TextFacts] = {}
    for capture, step_name in captures.items():
        record = observations.get(step_name)
        key = Source(kind="capture", name=capture).key
        if record is None:
            texts[key] = TextFacts(text=None, error=f"step {step_name} did not run")
        elif record.error is not None:
            texts[key] = TextFacts(text=None, error=f"step {step_name}: {record.error}")
        else:
            texts[key] = TextFacts(text=record.stdout)
    return texts
