"""Scenario files -> plans: frozen dataclasses, built by pure functions.

``build_scenario`` validates a loaded file against the schema, substitutes
variables (``${RUN_ID}``), checks every cross-reference (steps, captures,
services, shaping options) and returns a :class:`Scenario`. Nothing here runs
anything; :mod:`lab.scenario.runner` does.

A ``flap`` fault becomes its timed partition and heal faults here, so the
runner only ever sees pairs being cut and healed. A scenario ``seed`` gives
every shaped link (and every shape fault) its own seed, derived from it and
the link, unless the link names one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from lab.addressing import REPLICA_NAME
from lab.scenario.errors import ScenarioError
from lab.scenario.loader import Document, load_file
from lab.scenario.schema import (
    FAULT_ACTIONS,
    PAIR_ACTIONS,
    SERVICE_ACTIONS,
    SHAPING_FIELDS,
    validate,
)
from lab.shaping.congestion import parse_congestion
from lab.shaping.errors import SpecError
from lab.shaping.spec import MAX_SEED, SPEC_OPTIONS, LinkSpec, option_flag, resolve_spec

DEFAULT_EXPECT_EXIT: Final = 0
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class CheckKind(StrEnum):
    EXIT_CODE = "exit_code"
    SAME_FILE = "same_file"
    JSON_FIELD = "json_field"
    DURATION = "duration"
    STDOUT_CONTAINS = "stdout_contains"
    ORDER = "order"
    PCAP = "pcap"


@dataclass(frozen=True, kw_only=True)
class Link:
    """Shaping of one direction of one link, in force for the whole scenario."""

    source: str
    dest: str
    spec: LinkSpec
    line: int = 0

    def describe(self) -> str:
        return f"{self.source} -> {self.dest}: {self.spec.describe()}"


@dataclass(frozen=True, kw_only=True)
class Step:
    """A command run in a container (``service``: ``client``, its first replica, or
    ``client.2``)."""

    name: str
    service: str
    run: tuple[str, ...]
    timeout: float
    parallel: str | None = None
    background: bool = False
    expect_exit: int | None = DEFAULT_EXPECT_EXIT
    capture: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    line: int = 0


@dataclass(frozen=True, kw_only=True)
class Fault:
    """Something done ``at`` seconds after the first step started, or after ``after`` finished."""

    at: float
    action: str
    after: str | None = None  # the step whose end ``at`` counts from; None: first step's start
    services: tuple[str, ...] = ()  # one (kill...), a pair (partition, shape), none (heal all)
    spec: LinkSpec | None = None
    line: int = 0
    note: str = ""  # where an expanded fault came from: "flap 2/5"

    @property
    def when(self) -> str:
        """``at 2 s`` or ``at 2 s after fetch``."""
        return f"at {self.at:g} s" + (f" after {self.after}" if self.after else "")

    @property
    def upfront(self) -> bool:
        """Applied before the first step starts (at 0 s, not tied to a later step)."""
        return self.at <= 0 and self.after is None

    def describe(self) -> str:
        suffix = f" ({self.note})" if self.note else ""
        if self.action in {"shape", "unshape"}:
            source, dest = self.services
            detail = f": {self.spec.describe()}" if self.spec is not None else ""
            return f"{self.action} {source} -> {dest}{detail}{suffix}"
        if self.services:
            return " ".join([self.action, *self.services]) + suffix
        return f"{self.action} all{suffix}"


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where a check reads text from: a step's captured stdout, a status URL, or logs."""

    kind: str  # "capture" | "url" | "logs"
    name: str  # capture name, URL, or service
    via: str | None = None  # the service a URL is fetched from (its network view)
    stream: str = "stdout"  # which of a container's log streams: stdout, stderr, both

    @property
    def key(self) -> str:
        if self.kind == "logs":
            return f"logs:{self.name}" + ("" if self.stream == "stdout" else f"/{self.stream}")
        return f"{self.kind}:{self.name}" + (f"@{self.via}" if self.via else "")

    @property
    def dynamic(self) -> bool:
        """Whether reading it again can give a different answer (worth polling)."""
        return self.kind != "capture"


@dataclass(frozen=True, kw_only=True)
class FileRef:
    service: str
    path: str

    def __str__(self) -> str:
        return f"{self.service}:{self.path}"

    @classmethod
    def parse(cls, text: str) -> FileRef:
        service, _, path = text.partition(":")
        return cls(service=service, path=path)


@dataclass(frozen=True, kw_only=True)
class Check:
    """One assertion about a run. Which fields matter depends on ``kind``."""

    kind: CheckKind
    name: str
    line: int = 0
    implicit: bool = False  # made from a step's expect_exit, not written as a check
    step: str | None = None
    equals: int | None = None
    files: tuple[FileRef, FileRef] | None = None
    source: Source | None = None
    path: str | None = None
    op: str | None = None
    value: Any = field(default=None, hash=False)
    minimum: float | None = None
    maximum: float | None = None
    text: str | None = None
    count: int | None = None
    lines: tuple[str, ...] = ()
    within: float = 0.0
    link: tuple[str, str] | None = None  # pcap: the captured link [from, to]
    metric: str | None = None  # pcap: a name of lab.report.metrics.PCAP_METRICS


@dataclass(frozen=True, kw_only=True)
class Congestion:
    """TCP congestion control asked by a scenario: one for all services, and per service."""

    default: str | None = None
    services: tuple[tuple[str, str], ...] = ()

    def for_service(self, service: str) -> str | None:
        return dict(self.services).get(service, self.default)

    @property
    def asked(self) -> bool:
        return self.default is not None or bool(self.services)


@dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str
    description: str
    file: str
    links: tuple[Link, ...] = ()
    steps: tuple[Step, ...] = ()
    faults: tuple[Fault, ...] = ()
    checks: tuple[Check, ...] = ()
    seed: int | None = None
    congestion: Congestion = field(default_factory=Congestion)

    def step(self, name: str) -> Step:
        return next(step for step in self.steps if step.name == name)

    @property
    def services(self) -> tuple[str, ...]:
        """Every service the scenario touches, in first-mention order."""
        names: list[str] = []
        for link in self.links:
            names += [link.source, link.dest]
        names += [step.service for step in self.steps]
        for fault in self.faults:
            names += list(fault.services)
        return tuple(dict.fromkeys(names))


def pcap_links(scenario: Scenario) -> tuple[tuple[str, str], ...]:
    """The links ``[from, to]`` that the scenario's pcap checks read, in order, once each:
    each must be captured (in ``from``'s namespace, traffic with ``to``) for the run."""
    pairs = [check.link for check in scenario.checks if check.kind is CheckKind.PCAP and check.link]
    return tuple(dict.fromkeys(pairs))


def phases(steps: Sequence[Step]) -> list[tuple[Step, ...]]:
    """Steps grouped for execution: a parallel group is one phase, any other step its own."""
    grouped: list[tuple[Step, ...]] = []
    for step in steps:
        if step.parallel is not None and grouped and grouped[-1][0].parallel == step.parallel:
            grouped[-1] = (*grouped[-1], step)
        else:
            grouped.append((step,))
    return grouped


# --------------------------------------------------------------------------- building


class _Problems:
    """Collects located problems so one run reports all of them."""

    def __init__(self, document: Document) -> None:
        self.document = document
        self.messages: list[tuple[int, str]] = []

    def add(self, path: Sequence[str | int], what: str) -> None:
        self.messages.append((self.document.line(path), f"{self.document.where(path)}: {what}"))

    def raise_if_any(self) -> None:
        if self.messages:
            raise ScenarioError([message for _, message in sorted(self.messages)])


def substitute(
    data: Any, variables: Mapping[str, str], problems: _Problems, path: tuple[str | int, ...] = ()
) -> Any:
    """Replace ``${NAME}`` in every string; unknown names are problems."""
    if isinstance(data, str):

        def replace(match: re.Match[str]) -> str:
            name = match[1]
            if name not in variables:
                known = ", ".join(f"${{{v}}}" for v in sorted(variables)) or "none"
                problems.add(path, f"unknown variable ${{{name}}} (known: {known})")
                return match[0]
            return variables[name]

        return _VARIABLE.sub(replace, data)
    if isinstance(data, list):
        return [substitute(item, variables, problems, (*path, i)) for i, item in enumerate(data)]
    if isinstance(data, dict):
        return {k: substitute(v, variables, problems, (*path, k)) for k, v in data.items()}
    return data


# Longest first, so --loss-burst is not read as --loss followed by -burst.
_FLAGS_TO_KEYS = sorted(((option_flag(n), n) for n in SPEC_OPTIONS), key=lambda p: -len(p[0]))


def _yaml_words(message: str) -> str:
    """SpecError talks in CLI flags (``--loss-burst``); a scenario in YAML keys (``loss_burst``)."""
    for flag, key in _FLAGS_TO_KEYS:
        message = message.replace(flag, key)
    return message.replace("--", "")


def derive_seed(seed: int, label: str) -> int:
    """A seed of its own for each link, from the scenario's seed and the link (stable, 64-bit)."""
    digest = hashlib.sha256(f"{seed}:{label}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)


def _spec(
    raw: Mapping[str, Any],
    problems: _Problems,
    path: tuple[str | int, ...],
    *,
    seed: int | None = None,
) -> LinkSpec:
    """The link's spec; ``seed`` (derived from the scenario's) unless the link names its own."""
    options = {name: raw[name] for name in SHAPING_FIELDS if name in raw}
    if "seed" not in options and seed is not None:
        options["seed"] = seed
    try:
        return resolve_spec(profile=raw.get("profile"), options=options)
    except SpecError as exc:
        problems.add(path, _yaml_words(str(exc)))
        return LinkSpec()


def known_name(name: str, services: Collection[str]) -> bool:
    """Whether ``name`` (``client`` or ``client.2``) names something of the lab.

    ``services`` lists service names and, when the lab runs, every ``service.N``
    there is; a replica of a service whose replicas are not listed (validation
    without a running lab) is taken on trust.
    """
    if name in services:
        return True
    match = REPLICA_NAME.match(name)
    if not match or match["service"] not in services:
        return False
    prefix = f"{match['service']}."
    return not any(str(known).startswith(prefix) for known in services)


def _check_service(
    name: str, services: Collection[str] | None, problems: _Problems, path: tuple[str | int, ...]
) -> None:
    if services is not None and not known_name(name, services):
        problems.add(path, f"no service {name!r} in the lab (services: {', '.join(services)})")


def _build_steps(
    raw_steps: list[dict[str, Any]], services: Collection[str] | None, problems: _Problems
) -> tuple[Step, ...]:
    steps: list[Step] = []
    names: set[str] = set()
    captures: set[str] = set()
    closed_groups: set[str] = set()
    for index, raw in enumerate(raw_steps):
        path: tuple[str | int, ...] = ("steps", index)
        name = raw.get("name") or raw.get("capture") or f"step-{index + 1}"
        if name in names:
            problems.add((*path, "name"), f"step name {name!r} used twice")
        names.add(name)
        capture = raw.get("capture")
        if capture is not None:
            if capture in captures:
                problems.add((*path, "capture"), f"capture name {capture!r} used twice")
            captures.add(capture)
        _check_service(raw["service"], services, problems, (*path, "service"))
        group = raw.get("parallel")
        if group is not None and raw.get("background"):
            problems.add((*path, "parallel"), "a step is either in a parallel group or background")
        previous = steps[-1].parallel if steps else None
        if group is not None and group in closed_groups and group != previous:
            problems.add((*path, "parallel"), f"parallel group {group!r} must be consecutive steps")
        if previous is not None and previous != group:
            closed_groups.add(previous)
        steps.append(
            Step(
                name=name,
                service=raw["service"],
                run=tuple(raw["run"]),
                timeout=float(raw["timeout"]),
                parallel=group,
                background=bool(raw.get("background", False)),
                expect_exit=raw.get("expect_exit", DEFAULT_EXPECT_EXIT),
                capture=capture,
                env=tuple(sorted(raw.get("env", {}).items())),
                line=problems.document.line(path),
            )
        )
    return tuple(steps)


def _build_links(
    raw_links: list[dict[str, Any]],
    services: Collection[str] | None,
    problems: _Problems,
    *,
    seed: int | None = None,
) -> tuple[Link, ...]:
    links: list[Link] = []
    seen: set[tuple[str, str]] = set()
    for index, raw in enumerate(raw_links):
        path: tuple[str | int, ...] = ("links", index)
        source, dest = raw["from"], raw["to"]
        _check_service(source, services, problems, (*path, "from"))
        _check_service(dest, services, problems, (*path, "to"))
        if source == dest:
            problems.add(path, f"a link needs two different services (got {source!r} twice)")
        if (source, dest) in seen:
            problems.add(path, f"link {source} -> {dest} given twice")
        seen.add((source, dest))
        link_seed = None if seed is None else derive_seed(seed, f"link {source}->{dest}")
        spec = _spec(raw, problems, path, seed=link_seed)
        links.append(Link(source=source, dest=dest, spec=spec, line=problems.document.line(path)))
    return tuple(links)


def expand_flap(
    *,
    at: float,
    after: str | None,
    between: tuple[str, str],
    down: float,
    up: float,
    times: int,
    line: int = 0,
) -> list[Fault]:
    """``flap``: cut ``between`` for ``down`` s, then heal for ``up`` s, ``times`` times.

    Cycle k (from 0) partitions at ``at + k (down + up)`` and heals ``down``
    later; the last heal ends the flapping, so the link is left up.
    """
    faults = []
    for k in range(times):
        start = at + k * (down + up)
        note = f"flap {k + 1}/{times}"
        for action, when in (("partition", start), ("heal", start + down)):
            faults.append(
                Fault(at=when, action=action, after=after, services=between, line=line, note=note)
            )
    return faults


def _fault_targets(
    action: str,
    value: Any,
    problems: _Problems,
    path: tuple[str | int, ...],
    *,
    seed: int | None,
) -> tuple[tuple[str, ...], LinkSpec | None]:
    """The services one fault acts on, and for ``shape`` its spec."""
    if action in SERVICE_ACTIONS:
        return (value,), None
    if action in PAIR_ACTIONS:
        targets = () if value == "all" else tuple(value)
        if len(set(targets)) == 1:
            problems.add((*path, action), f"cannot {action} {targets[0]!r} from itself")
        return targets, None
    if action == "flap":
        targets = tuple(value["between"])
        if len(set(targets)) == 1:
            problems.add((*path, action, "between"), f"cannot flap {targets[0]!r} with itself")
        return targets, None
    targets = (value["from"], value["to"])
    if action != "shape":
        return targets, None
    fault_seed = None
    if seed is not None:
        fault_seed = derive_seed(seed, f"fault {path[-1]} {targets[0]}->{targets[1]}")
    return targets, _spec(value, problems, (*path, action), seed=fault_seed)


def _build_faults(
    raw_faults: list[dict[str, Any]],
    steps: Sequence[Step],
    services: Collection[str] | None,
    problems: _Problems,
    *,
    seed: int | None = None,
) -> tuple[Fault, ...]:
    faults: list[Fault] = []
    order = {step.name: index for index, step in enumerate(steps)}
    for index, raw in enumerate(raw_faults):
        path: tuple[str | int, ...] = ("faults", index)
        actions = [name for name in FAULT_ACTIONS if name in raw]
        if len(actions) != 1:
            problems.add(
                path,
                f"a fault does exactly one of: {', '.join(FAULT_ACTIONS)} (got {len(actions)})",
            )
            continue
        action = actions[0]
        value = raw[action]
        targets, spec = _fault_targets(action, value, problems, path, seed=seed)
        for target in targets:
            _check_service(target, services, problems, (*path, action))
        after = raw.get("after")
        if after is not None and after not in order:
            known = ", ".join(step.name for step in steps)
            problems.add((*path, "after"), f"no step named {after!r} (steps: {known})")
        if action == "flap":
            faults += expand_flap(
                at=float(raw["at"]),
                after=after,
                between=(targets[0], targets[1]),
                down=float(value["down"]),
                up=float(value["up"]),
                times=int(value["times"]),
                line=problems.document.line(path),
            )
            continue
        faults.append(
            Fault(
                at=float(raw["at"]),
                action=action,
                after=after,
                services=targets,
                spec=spec,
                line=problems.document.line(path),
            )
        )
    # One timeline applies them in turn: by the step they count from, then by time.
    return tuple(sorted(faults, key=lambda f: (order.get(f.after or "", 0), f.at)))


def _source(
    raw: Mapping[str, Any],
    captures: Collection[str],
    services: Collection[str] | None,
    problems: _Problems,
    path: tuple[str | int, ...],
) -> Source | None:
    given = [key for key in ("capture", "url", "logs") if key in raw]
    if len(given) != 1:
        problems.add(path, "needs exactly one source: capture, url or logs")
        return None
    kind = given[0]
    if "via" in raw and kind != "url":
        problems.add((*path, "via"), "'via' goes with 'url' only")
    if "stream" in raw and kind != "logs":
        problems.add((*path, "stream"), "'stream' goes with 'logs' only")
    if "within" in raw and kind == "capture":
        problems.add((*path, "within"), "a capture does not change: 'within' needs url or logs")
    if kind == "capture" and raw["capture"] not in captures:
        known = ", ".join(sorted(captures)) or "none"
        problems.add((*path, "capture"), f"no step captures {raw['capture']!r} (captures: {known})")
    if kind == "logs":
        _check_service(raw["logs"], services, problems, (*path, "logs"))
    via = raw.get("via", "client") if kind == "url" else None
    if via is not None:
        _check_service(via, services, problems, (*path, "via"))
    return Source(kind=kind, name=str(raw[kind]), via=via, stream=raw.get("stream", "stdout"))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_DEFAULT_NAMES: Final[dict[CheckKind, Callable[[Check, str], str]]] = {
    CheckKind.EXIT_CODE: lambda c, _: f"{c.step} exits {c.equals}",
    CheckKind.SAME_FILE: lambda c, _: f"same file {' = '.join(map(str, c.files or ()))}",
    CheckKind.JSON_FIELD: lambda c, where: f"{where} {c.path} {c.op} {c.value!r}",
    CheckKind.DURATION: lambda c, _: (
        f"{c.step} takes {c.minimum or 0:g}..{'inf' if c.maximum is None else f'{c.maximum:g}'} s"
    ),
    CheckKind.STDOUT_CONTAINS: lambda c, where: (
        f"{where} contains {c.text!r}" + ("" if c.count is None else f" {c.count}x")
    ),
    CheckKind.ORDER: lambda c, where: f"{where} in order: {' < '.join(c.lines)}",
    CheckKind.PCAP: lambda c, _: f"pcap {' -> '.join(c.link or ())}: {c.metric} {c.op} {c.value!r}",
}


def _default_name(check: Check) -> str:
    return _DEFAULT_NAMES[check.kind](check, check.source.key if check.source else "")


def _check_comparison(
    op: str, value: Any, problems: _Problems, path: tuple[str | int, ...]
) -> None:
    """``value`` fits ``op``: [low, high] for between, a number for an ordering."""
    if op == "between" and not (
        isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))
    ):
        problems.add((*path, "value"), "'between' needs [low, high] (two numbers)")
    elif op == "between" and value[0] > value[1]:
        problems.add((*path, "value"), f"low {value[0]} is above high {value[1]}")
    elif op in {"<=", ">=", "<", ">"} and not _is_number(value):
        problems.add((*path, "value"), f"{op!r} needs a number, not {value!r}")


def _kind_values(
    kind: CheckKind,
    raw: Mapping[str, Any],
    services: Collection[str] | None,
    problems: _Problems,
    path: tuple[str | int, ...],
) -> dict[str, Any]:
    """The fields particular to one check kind, with their semantic checks."""
    values: dict[str, Any] = {}
    match kind:
        case CheckKind.EXIT_CODE:
            values = {"equals": raw["equals"]}
        case CheckKind.SAME_FILE:
            files = (FileRef.parse(raw["a"]), FileRef.parse(raw["b"]))
            for key, ref in zip(("a", "b"), files, strict=True):
                _check_service(ref.service, services, problems, (*path, key))
            values = {"files": files}
        case CheckKind.JSON_FIELD:
            op, value = raw["op"], raw["value"]
            _check_comparison(op, value, problems, path)
            values = {"path": raw["path"], "op": op, "value": value}
        case CheckKind.PCAP:
            op, value = raw["op"], raw["value"]
            _check_comparison(op, value, problems, path)
            if op != "between" and not _is_number(value):
                problems.add((*path, "value"), f"a pcap metric is a number, not {value!r}")
            source, dest = raw["link"]
            for index, name in enumerate((source, dest)):
                _check_service(name, services, problems, (*path, "link", index))
            if source == dest:
                problems.add(
                    (*path, "link"), f"a link needs two different services (got {source!r} twice)"
                )
            values = {"link": (source, dest), "metric": raw["metric"], "op": op, "value": value}
        case CheckKind.DURATION:
            low, high = raw.get("min"), raw.get("max")
            if low is not None and high is not None and low > high:
                problems.add(path, f"min {low} is above max {high}")
            values = {"minimum": low, "maximum": high}
        case CheckKind.STDOUT_CONTAINS:
            values = {"text": raw["text"], "count": raw.get("count")}
        case CheckKind.ORDER:
            values = {"lines": tuple(raw["lines"])}
    return values


def _build_check(
    raw: Mapping[str, Any],
    steps: Sequence[Step],
    services: Collection[str] | None,
    problems: _Problems,
    path: tuple[str | int, ...],
) -> Check | None:
    kind = CheckKind(raw["kind"])
    step_names = {step.name for step in steps}
    captures = {step.capture for step in steps if step.capture}
    values: dict[str, Any] = {"kind": kind, "line": problems.document.line(path)}
    if "step" in raw:
        if raw["step"] not in step_names:
            known = ", ".join(step.name for step in steps)
            problems.add((*path, "step"), f"no step named {raw['step']!r} (steps: {known})")
        values["step"] = raw["step"]
    if kind in {CheckKind.JSON_FIELD, CheckKind.STDOUT_CONTAINS, CheckKind.ORDER}:
        values["source"] = _source(raw, captures, services, problems, path)
        values["within"] = float(raw.get("within", 0.0))
        if values["source"] is None:
            return None
    values |= _kind_values(kind, raw, services, problems, path)
    check = Check(name="", **values)
    name = raw.get("name") or _default_name(check)
    return Check(name=name, **values)


def _build_congestion(
    raw: Any, services: Collection[str] | None, problems: _Problems
) -> Congestion:
    if raw is None:
        return Congestion()
    path: tuple[str | int, ...] = ("congestion",)
    entries = {"": raw} if isinstance(raw, str) else dict(raw)
    chosen: dict[str, str] = {}
    for service, name in entries.items():
        where = path if not service else (*path, service)
        if service:
            _check_service(service, services, problems, where)
        try:
            chosen[service] = parse_congestion(str(name), option="congestion")
        except SpecError as exc:
            problems.add(where, str(exc).removeprefix("congestion: "))
    default = chosen.pop("", None)
    return Congestion(default=default, services=tuple(sorted(chosen.items())))


def build_scenario(
    document: Document,
    *,
    services: Collection[str] | None = None,
    variables: Mapping[str, str] | None = None,
    seed: int | None = None,
) -> Scenario:
    """Validate ``document`` and turn it into a plan; ScenarioError lists every problem.

    ``services``: the lab's service names, to refuse unknown ones up front
    (None: not checked). ``variables``: values for ``${NAME}`` in strings.
    ``seed`` replaces the file's ``seed:`` (``lab run --seed N``).
    """
    validate(document)
    problems = _Problems(document)
    data = substitute(document.data, variables or {}, problems)
    steps = _build_steps(data["steps"], services, problems)
    if seed is not None and not 0 <= seed <= MAX_SEED:
        problems.add((), f"seed {seed} is outside 0..{MAX_SEED}")
        seed = None
    seed = data.get("seed") if seed is None else seed
    links = _build_links(data.get("links", []), services, problems, seed=seed)
    faults = _build_faults(data.get("faults", []), steps, services, problems, seed=seed)
    congestion = _build_congestion(data.get("congestion"), services, problems)
    implicit = [
        Check(
            kind=CheckKind.EXIT_CODE,
            name=f"step {step.name} exits {step.expect_exit}",
            line=step.line,
            implicit=True,
            step=step.name,
            equals=step.expect_exit,
        )
        for step in steps
        if step.expect_exit is not None
    ]
    written = [
        _build_check(raw, steps, services, problems, ("checks", index))
        for index, raw in enumerate(data["checks"])
    ]
    problems.raise_if_any()
    return Scenario(
        name=data["name"],
        description=data["description"],
        file=document.file,
        links=links,
        steps=steps,
        faults=faults,
        checks=(*implicit, *(check for check in written if check is not None)),
        seed=seed,
        congestion=congestion,
    )


def load_scenario(
    path: Path,
    *,
    label: str | None = None,
    services: Collection[str] | None = None,
    variables: Mapping[str, str] | None = None,
    seed: int | None = None,
) -> Scenario:
    """Read, validate and build one scenario file (``seed``: instead of the file's)."""
    return build_scenario(
        load_file(path, label=label), services=services, variables=variables, seed=seed
    )
