"""``lab watch``'s model: snapshots of the lab -> rich renderables, or one plain line.

Pure: the poller (phase B of the feature, beside ``lab.api``) collects a
:class:`WatchSnapshot` every second from what exists today and hands it here:

* services and health: ``Lab.status()`` rows -> :class:`ServiceState`;
* shaped links: ``lab.shaping.link_status`` rows (link, shaping, engine, state)
  -> :class:`ShapedLink`, with counters (:func:`link_counters`) from
  ``tc -s class show`` / ``tc -s qdisc show`` in the source's namespace
  (:func:`parse_tc_stats`: htb class and netem qdisc), ``iptables -t raw -S -v``
  in the destination's (:func:`parse_iptables_counters`: packets and bytes sent
  to the NFQUEUE engine), and the verdict loop's ``event=shaper_stats`` log lines
  (:func:`parse_shaper_stats`: drops, duplicates, reorders);
* UDP listener: ``GET /stats`` JSON -> :func:`udp_counters`;
* chat: the hub's participants (a ``who`` request) -> :class:`ChatState`.

Text from the lab is shown with rich ``Text`` objects, never as markup, so a
chat name like ``[bold]x`` stays literal; the plain line strips control characters.

The poller (:mod:`lab.watch`) gets the namespace figures from one long-lived
helper per service running :func:`sampler_script` (a netkit container started
once costs far less than a throwaway one every second); :func:`last_sample`
reads that helper's newest complete block. Chat participants come from the
server's own log lines (:class:`ChatRoster`): the hub's ``who`` answers only
participants who joined, and joining would announce the watcher to the room.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from rich.console import Group
from rich.table import Table
from rich.text import Text

from lab.shaping.builders import CHAIN, IPTABLES, STATUS_SCRIPT, RulesInForce, parse_status

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KEY_VALUE = re.compile(r"(\w+)=(\S+)")
_TC_HEAD = re.compile(r"^(qdisc|class) (\S+) (\S+)")
_TC_SENT = re.compile(
    r"Sent (\d+) bytes (\d+) pkts? \(dropped (\d+), overlimits (\d+)(?: requeues (\d+))?\)"
)
_IPT_NFQ = re.compile(
    r"^-A \S+ -s (\S+?)(?:/(?:32|128))? .*?-c (\d+) (\d+) .*-j NFQUEUE --queue-num (\d+)"
)
NAMES_SHOWN: Final = 12  # chat participants listed by name
SAMPLE_BEGIN: Final = "@@sample"
SAMPLE_END: Final = "@@end"
_CHAT_JOINED = re.compile(r"event=chat_joined conn=(\d+) name=(.*) participants=\d+\s*$")
_CHAT_GONE = re.compile(r"event=chat_(?:disconnect|closing|peer_timeout) conn=(\d+)\b")
_CHAT_RESTART = "event=chat_listening"


def clean(text: str, limit: int = 80) -> str:
    """One line of ``text``: control characters as spaces, at most ``limit`` characters."""
    flat = _CONTROL.sub(" ", text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True, kw_only=True)
class ServiceState:
    service: str
    state: str  # docker state: running, exited, paused
    health: str  # healthy, unhealthy, starting, none
    ip: str = "-"

    @property
    def ok(self) -> bool:
        return self.state == "running" and self.health in {"healthy", "none"}


@dataclass(frozen=True, kw_only=True)
class LinkCounters:
    """Cumulative counters of one shaped link; None where the engine does not count it."""

    packets: int | None = None
    bytes: int | None = None
    dropped: int | None = None
    duplicated: int | None = None
    reordered: int | None = None
    held: int | None = None  # packets the verdict loop holds right now (delay)
    sources: tuple[str, ...] = ()  # where the numbers came from, for the reader
    sampled_at: float | None = None  # Unix time the namespace counters were read


@dataclass(frozen=True, kw_only=True)
class ShapedLink:
    link: str  # "client -> server"
    shaping: str  # "delay=40ms loss=2%"
    engine: str
    state: str  # "active" or what is wrong
    healthy: bool = True
    counters: LinkCounters = field(default_factory=LinkCounters)


@dataclass(frozen=True, kw_only=True)
class UdpCounters:
    datagrams: int = 0
    valid: int = 0
    lost: int = 0
    reordered: int = 0
    duplicates: int = 0
    kernel_drops: int = 0
    sessions: int = 0


@dataclass(frozen=True, kw_only=True)
class ChatState:
    participants: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class WatchSnapshot:
    """Everything one refresh shows. ``problems``: what could not be read, in words."""

    at: float  # Unix time it was taken
    services: tuple[ServiceState, ...] = ()
    links: tuple[ShapedLink, ...] = ()
    udp: UdpCounters | None = None
    chat: ChatState | None = None
    problems: tuple[str, ...] = ()


# --------------------------------------------------------------------------- parsers


@dataclass(frozen=True, kw_only=True)
class TcCounters:
    bytes: int
    packets: int
    dropped: int
    overlimits: int


def parse_tc_stats(text: str) -> dict[str, TcCounters]:
    """``tc -s qdisc show`` / ``tc -s class show`` -> ``{"class 1:3": ..., "qdisc 4:": ...}``."""
    found: dict[str, TcCounters] = {}
    current: str | None = None
    for line in text.splitlines():
        head = _TC_HEAD.match(line)
        if head is not None:
            current = f"{head[1]} {head[3]}"
            continue
        sent = _TC_SENT.search(line)
        if sent is not None and current is not None:
            found[current] = TcCounters(
                bytes=int(sent[1]),
                packets=int(sent[2]),
                dropped=int(sent[3]),
                overlimits=int(sent[4]),
            )
            current = None
    return found


@dataclass(frozen=True, kw_only=True)
class RuleCounters:
    packets: int
    bytes: int
    queue: int


def parse_iptables_counters(text: str) -> dict[str, RuleCounters]:
    """``iptables -t raw -S SOCKETLAB -v`` -> NFQUEUE rule counters by source address."""
    found: dict[str, RuleCounters] = {}
    for line in text.splitlines():
        match = _IPT_NFQ.match(line.strip())
        if match is not None:
            found[match[1]] = RuleCounters(
                packets=int(match[2]), bytes=int(match[3]), queue=int(match[4])
            )
    return found


def parse_shaper_stats(log_text: str) -> dict[int, dict[str, int]]:
    """The verdict loop's last ``event=shaper_stats`` (or ``shaper_stopped``) per queue."""
    found: dict[int, dict[str, int]] = {}
    for line in log_text.splitlines():
        if "event=shaper_stats" not in line and "event=shaper_stopped" not in line:
            continue
        fields: dict[str, int] = {}
        for key, value in _KEY_VALUE.findall(line):
            if value.isdigit():
                fields[key] = int(value)
        if "queue" in fields:
            found[fields.pop("queue")] = fields
    return found


def link_counters(
    *,
    tc_class: TcCounters | None = None,
    netem: TcCounters | None = None,
    rule: RuleCounters | None = None,
    loop: Mapping[str, int] | None = None,
    sampled_at: float | None = None,
) -> LinkCounters:
    """One link's counters from whatever its engine keeps (see the module docstring).

    Packets and bytes: the NFQUEUE rule's (what reached the verdict loop), else the
    htb class's (what left the source). Drops: the loop's, the netem qdisc's and the
    htb class's, added up."""
    sources: list[str] = []
    packets = byte_count = None
    if rule is not None:
        packets, byte_count = rule.packets, rule.bytes
        sources.append(f"iptables NFQUEUE {rule.queue}")
    elif tc_class is not None:
        packets, byte_count = tc_class.packets, tc_class.bytes
        sources.append("tc htb class")
    drops = [
        value
        for value in (
            loop.get("dropped") if loop is not None else None,
            netem.dropped if netem is not None else None,
            tc_class.dropped if tc_class is not None else None,
        )
        if value is not None
    ]
    if loop is not None:
        sources.append("verdict loop")
    if netem is not None:
        sources.append("netem qdisc")
    return LinkCounters(
        packets=packets,
        bytes=byte_count,
        dropped=sum(drops) if drops else None,
        duplicated=loop.get("duplicated") if loop is not None else None,
        reordered=loop.get("reordered") if loop is not None else None,
        held=loop.get("held") if loop is not None else None,
        sources=tuple(sources),
        sampled_at=sampled_at,
    )


# --------------------------------------------------------------------------- namespace samples


def sampler_script(*, interval: float) -> str:
    """The counter helper's ``sh -c`` loop: every ``interval`` seconds one block
    ``@@sample <unix time>``; the rules in force as ``lab.shaping``'s status script
    prints them, except that ``%%raw`` is ``iptables -t raw -S SOCKETLAB -v`` (the
    NFQUEUE rules with their counters; the status parser reads it all the same);
    ``%%tcstats`` (``tc -s qdisc/class show`` per device); then ``@@end``.

    The poller reads twice as often as it draws (:mod:`lab.watch` passes half its
    refresh), so each refresh finds a sample newer than the last one."""
    raw = " ".join((*IPTABLES, "-t", "raw", "-S", CHAIN))
    status = STATUS_SCRIPT.replace(f"{raw} 2>", f"{raw} -v 2>")
    if status == STATUS_SCRIPT:  # pragma: no cover - lab.shaping changed its status script
        raise AssertionError("the status script no longer reads the raw table as expected")
    return (
        "while :; do\n"
        f'echo "{SAMPLE_BEGIN} $(date +%s.%N)"\n'
        f"{status}"
        "echo '%%tcstats'\n"
        "for dev in $(ls /sys/class/net); do\n"
        '  [ "$dev" = lo ] || { tc -s qdisc show dev "$dev"; tc -s class show dev "$dev"; }\n'
        "done 2>/dev/null\n"
        f"echo '{SAMPLE_END}'\n"
        # The sampling period of a loop that runs until the helper is removed, not a
        # wait for some condition.
        f"sleep {interval:g}\n"
        "done\n"
    )


@dataclass(frozen=True, kw_only=True)
class NamespaceSample:
    """One block of a counter helper: when, the rules in force, their counters."""

    at: float
    rules: RulesInForce
    nfqueue: Mapping[str, RuleCounters]  # by source address
    tc: Mapping[str, TcCounters]  # "class 1:3", "qdisc 4:"


def _sections(lines: list[str]) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith("%%"):
            current = found.setdefault(line[2:].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(body) for name, body in found.items()}


def last_sample(log_text: str) -> NamespaceSample | None:
    """The newest complete block in a counter helper's output, or None before the first."""
    lines = log_text.splitlines()
    end = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].strip() == SAMPLE_END), None)
    if end is None:
        return None
    begin = next(
        (i for i in range(end - 1, -1, -1) if lines[i].startswith(SAMPLE_BEGIN + " ")), None
    )
    if begin is None:
        return None
    try:
        at = float(lines[begin].split()[1])
    except (IndexError, ValueError):
        return None
    block = lines[begin + 1 : end]
    sections = _sections(block)
    return NamespaceSample(
        at=at,
        rules=parse_status("\n".join(block)),
        nfqueue=parse_iptables_counters(sections.get("raw", "")),
        tc=parse_tc_stats(sections.get("tcstats", "")),
    )


# --------------------------------------------------------------------------- chat


@dataclass
class ChatRoster:
    """The hub's participants, rebuilt from the server's log lines (fed in order).

    Feeding the same lines again, or a suffix of what was fed, changes nothing: the
    last line about a connection decides, and a hub restart (``chat_listening``) is
    followed by every join after it."""

    names: dict[int, str] = field(default_factory=dict)  # connection id -> name

    def feed(self, log_text: str) -> None:
        for line in log_text.splitlines():
            if _CHAT_RESTART in line:
                self.names.clear()
            elif (joined := _CHAT_JOINED.search(line)) is not None:
                self.names[int(joined[1])] = joined[2]
            elif (gone := _CHAT_GONE.search(line)) is not None:
                self.names.pop(int(gone[1]), None)

    @property
    def participants(self) -> tuple[str, ...]:
        return tuple(sorted(self.names.values()))


def _count(stats: Mapping[str, Any], key: str) -> int:
    value = stats.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def udp_counters(stats: Mapping[str, Any]) -> UdpCounters:
    """The UDP listener's ``GET /stats`` document -> counters (missing fields read 0)."""
    return UdpCounters(
        datagrams=_count(stats, "datagrams"),
        valid=_count(stats, "valid"),
        lost=_count(stats, "lost"),
        reordered=_count(stats, "reordered"),
        duplicates=_count(stats, "duplicates"),
        kernel_drops=_count(stats, "kernel_drops"),
        sessions=_count(stats, "session_count"),
    )


# --------------------------------------------------------------------------- rates


@dataclass(frozen=True, kw_only=True)
class LinkRate:
    packets_per_second: float | None
    bits_per_second: float | None
    drops_per_second: float | None


def _rate(now: int | None, then: int | None, seconds: float) -> float | None:
    if now is None or then is None or seconds <= 0 or now < then:
        return None  # counters reset (helper restarted): no rate this time
    return (now - then) / seconds


def link_rates(current: WatchSnapshot, previous: WatchSnapshot | None) -> dict[str, LinkRate]:
    """Per link, how fast its counters grew since the previous snapshot."""
    if previous is None:
        return {}
    before = {link.link: link.counters for link in previous.links}
    rates: dict[str, LinkRate] = {}
    for link in current.links:
        old = before.get(link.link)
        if old is None:
            continue
        new = link.counters
        # The counters' own read times when known: a helper's sample is not the poll's.
        if new.sampled_at is not None and old.sampled_at is not None:
            seconds = new.sampled_at - old.sampled_at
        else:
            seconds = current.at - previous.at
        bits = _rate(new.bytes, old.bytes, seconds)
        rates[link.link] = LinkRate(
            packets_per_second=_rate(new.packets, old.packets, seconds),
            bits_per_second=None if bits is None else bits * 8,
            drops_per_second=_rate(new.dropped, old.dropped, seconds),
        )
    return rates


# --------------------------------------------------------------------------- views


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def _per_second(value: float | None, unit: str = "/s") -> str:
    return "" if value is None else f"{value:,.0f}{unit}"


def _bits(value: float | None) -> str:
    if value is None:
        return ""
    for unit, size in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} bit/s"


def _cell(value: str, style: str = "") -> Text:
    return Text(clean(value), style=style)


def render(current: WatchSnapshot, previous: WatchSnapshot | None = None) -> Group:
    """The live view: services, shaped links with counters and rates, UDP, chat, problems."""
    stamp = time.strftime("%H:%M:%S", time.localtime(current.at))
    parts: list[Any] = [Text(f"socketlab watch  {stamp}  (Ctrl-C to quit)", style="bold")]
    services = Table(title="services", title_justify="left", expand=False)
    for column in ("service", "state", "health", "ip"):
        services.add_column(column)
    for row in current.services:
        style = "green" if row.ok else "red"
        services.add_row(
            _cell(row.service), _cell(row.state, style), _cell(row.health, style), _cell(row.ip)
        )
    parts.append(services)

    rates = link_rates(current, previous)
    links = Table(title="shaped links", title_justify="left")
    for column in ("link", "shaping", "engine", "state", "packets", "bytes", "dropped", "rate"):
        links.add_column(
            column, justify="right" if column in {"packets", "bytes", "dropped", "rate"} else "left"
        )
    for link in current.links:
        counters = link.counters
        rate = rates.get(link.link)
        speed = ""
        if rate is not None:
            speed = " ".join(
                piece
                for piece in (
                    _per_second(rate.packets_per_second, " pkt/s"),
                    _bits(rate.bits_per_second),
                    _per_second(rate.drops_per_second, " drop/s") if rate.drops_per_second else "",
                )
                if piece
            )
        links.add_row(
            _cell(link.link),
            _cell(link.shaping),
            _cell(link.engine),
            _cell(link.state, "green" if link.healthy else "red"),
            _cell(_number(counters.packets)),
            _cell(_bytes(counters.bytes)),
            _cell(_number(counters.dropped)),
            _cell(speed),
        )
    parts.append(links if current.links else Text("no shaped links", style="dim"))

    if current.udp is not None:
        udp = current.udp
        table = Table(title="udp-listener", title_justify="left")
        names = (
            "datagrams",
            "valid",
            "lost",
            "reordered",
            "duplicates",
            "kernel drops",
            "sessions",
        )
        for column in names:
            table.add_column(column, justify="right")
        table.add_row(
            *(
                _cell(_number(value))
                for value in (
                    udp.datagrams,
                    udp.valid,
                    udp.lost,
                    udp.reordered,
                    udp.duplicates,
                    udp.kernel_drops,
                    udp.sessions,
                )
            )
        )
        parts.append(table)
    if current.chat is not None:
        people = current.chat.participants
        shown = ", ".join(clean(name, 40) for name in people[:NAMES_SHOWN])
        more = f" and {len(people) - NAMES_SHOWN} more" if len(people) > NAMES_SHOWN else ""
        parts.append(
            Text(f"chat: {len(people)} participant(s)" + (f": {shown}{more}" if people else ""))
        )
    for problem in current.problems:
        parts.append(Text(f"! {clean(problem, 200)}", style="yellow"))
    return Group(*parts)


def plain_line(current: WatchSnapshot, previous: WatchSnapshot | None = None) -> str:
    """One line per refresh, for a terminal that is not a TTY (logs, CI)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(current.at))
    healthy = sum(1 for row in current.services if row.ok)
    pieces = [stamp, f"services {healthy}/{len(current.services)} ok"]
    down = [row.service for row in current.services if not row.ok]
    if down:
        pieces[-1] += " (not ok: " + ", ".join(clean(name, 30) for name in down) + ")"
    rates = link_rates(current, previous)
    for link in current.links:
        counters = link.counters
        text = f"{clean(link.link, 40)} [{clean(link.engine, 12)}] pkts={_number(counters.packets)}"
        text += f" bytes={_number(counters.bytes)} dropped={_number(counters.dropped)}"
        rate = rates.get(link.link)
        if rate is not None and rate.packets_per_second is not None:
            text += f" ({rate.packets_per_second:,.0f} pkt/s)"
        if not link.healthy:
            text += f" {clean(link.state, 60)}"
        pieces.append(text)
    if current.udp is not None:
        udp = current.udp
        pieces.append(
            f"udp valid={udp.valid:,} lost={udp.lost:,} reordered={udp.reordered:,} "
            f"dup={udp.duplicates:,} kernel_drops={udp.kernel_drops:,}"
        )
    if current.chat is not None:
        pieces.append(f"chat {len(current.chat.participants)}")
    pieces += [f"! {clean(problem, 80)}" for problem in current.problems]
    return " | ".join(pieces)
