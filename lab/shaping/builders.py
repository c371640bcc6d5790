"""Pure builders: shaping specs -> ``tc`` / ``iptables`` argument lists, and back.

Everything a helper runs in a service's network namespace is built here as
data (:class:`Step`), rendered to one ``sh`` script, and unit-tested without
Docker. The matching parsers read what is in force (``iptables -S``,
``tc filter show``) so ``lab status`` can compare it with the helpers.

Layout, for a link SOURCE -> DEST:

* iptables chains named ``SOCKETLAB``, so one flush per table undoes
  everything. In the ``filter`` table (from INPUT and OUTPUT): partitions,
  ``-s PEER -j DROP``, on INPUT in both namespaces (a DROP on OUTPUT would
  fail the sender at once with EPERM, while a real partition makes it wait
  for its timeout). In the ``raw`` table (from PREROUTING) of DEST's
  namespace: a RETURN for copies the verdict loop injects itself
  (``INJECT_MARK``), then the nfqueue engine's ``-s SOURCE -j NFQUEUE
  --queue-num N --queue-bypass`` (bypass: a dead verdict loop fails open,
  never blackholes). Why there: packets held on the sender's egress stay
  charged to their socket, and TCP small queues then throttle a 20 ms link
  to a few Mbit/s (netem avoids that by orphaning them, which userspace
  cannot); and held *before* conntrack, packets of a new flow do not race
  each other to confirm one conntrack entry (the losers would be dropped).
* ``tc`` on SOURCE's egress: an htb root (``1:``, unclassified traffic passes
  unshaped) with one class ``1:N`` per destination, picked by a u32 filter
  on DEST's IP; it carries the rate, and with the netem engine (which does
  everything on egress) a netem qdisc ``N+1:`` below it.
* IPv6: every rule has its ``ip6tables`` twin and every u32 filter an
  ``ip6 dst`` twin (``protocol ipv6``, prio ``V6_PRIO_OFFSET + N``; a prio holds
  one protocol), and the NFQUEUE rules of both families feed the same queue:
  one verdict loop per link, whatever the family. A link on a dual-stack
  network shapes both families unless one is asked for.
* Routers: a link whose far end is a router also carries what that router
  forwards, so its rules match the subnets reached through it as well
  (``dest_nets`` on the egress filters, ``source_nets`` on the ingress queue
  rules and on partitions), and the filter chain is entered from FORWARD too,
  so a partition of a router cuts what it forwards.
* ``--queue-limit`` (the bottleneck's buffer, with ``--rate``): a ``bfifo``
  (bytes) or ``pfifo`` (packets) leaf ``N+1:`` under the htb class, so
  packets waiting for the rate queue there and the rest are dropped. With
  the netem engine and a per-packet impairment the leaf is netem, whose own
  queue would hold the delay line and the waiting packets together; there
  the class runs unlimited and netem hands its packets to a ``tbf`` child
  ``3000+N:`` that carries the rate and the byte limit (and a ``pfifo``
  ``5800+N:`` below the tbf for a packet limit), netem's usual pairing with tbf.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import math
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from lab.shaping.errors import ShapingError
from lab.shaping.spec import LinkSpec, QueueLimit, format_duration, format_percent
from socketlab.shaper.core import INJECT_MARK
from socketlab.shaper.invocation import ShaperInvocation
from socketlab.shaper.models import Distribution, FourState, GilbertElliott
from socketlab.shaper.nfnetlink import QueueStats, parse_queue_stats

CHAIN = "SOCKETLAB"
# The kernel's counters of every NFQUEUE in a namespace (queue full, socket full).
NFQUEUE_STATS_FILE = "/proc/net/netfilter/nfnetlink_queue"
IPTABLES = ("iptables", "-w", "5")
IP6TABLES = ("ip6tables", "-w", "5")
# u32 filters of IPv6 peers sit at this prio plus the queue number (a prio has one protocol).
V6_PRIO_OFFSET = 0x2000
# An htb class needs a rate; this one stands for "no limit" under the netem engine.
UNLIMITED_RATE = 10 * 10**9
# Queue numbers double as htb minors (1:N) and name each link's qdisc majors: the
# leaf N+1:, a tbf under netem 3000+N:, a pfifo under that tbf 5800+N:. Majors
# stay clear of the htb root (1:), of each other, and of 8000: and up, where the
# kernel picks handles for qdiscs added without one.
MAX_QUEUE = 0x2000
TBF_MAJOR_BASE = 0x3000
TBF_FIFO_MAJOR_BASE = 0x5800
# A full Ethernet frame as qdiscs count it (1500-byte MTU plus the 14-byte header).
FRAME_BYTES = 1514
# The smallest frame, for sizing netem's delay line conservatively.
MIN_FRAME_BYTES = 64
NETEM_DEFAULT_LIMIT = 1000
MAX_NETEM_LIMIT = 1_000_000
# tbf's bucket: this much time at the rate, and at least two full frames.
TBF_BURST_SECONDS = 0.002

# Labels on helper containers, so status and unshape can find each link.
LABEL_KIND = "io.socketlab.shaping.kind"
LABEL_SOURCE = "io.socketlab.shaping.source"
LABEL_DEST = "io.socketlab.shaping.dest"
LABEL_SOURCE_IP = "io.socketlab.shaping.source-ip"
LABEL_DEST_IP = "io.socketlab.shaping.dest-ip"
LABEL_NETNS = "io.socketlab.shaping.netns"
LABEL_SPEC = "io.socketlab.shaping.spec"
LABEL_ENGINE = "io.socketlab.shaping.engine"
LABEL_QUEUE = "io.socketlab.shaping.queue"
LABEL_DEV = "io.socketlab.shaping.dev"
LABEL_NETWORK = "io.socketlab.shaping.network"
LABEL_SOURCE_REPLICA = "io.socketlab.shaping.source-replica"
LABEL_DEST_REPLICA = "io.socketlab.shaping.dest-replica"
LABEL_SOURCE_IP6 = "io.socketlab.shaping.source-ip6"
LABEL_DEST_IP6 = "io.socketlab.shaping.dest-ip6"
LABEL_SOURCE_NETS = "io.socketlab.shaping.source-nets"
LABEL_DEST_NETS = "io.socketlab.shaping.dest-nets"


class Engine(StrEnum):
    """Which mechanism impairs packets (rate and partitions are htb/iptables in both)."""

    NETEM = "netem"
    NFQUEUE = "nfqueue"


@dataclass(frozen=True)
class Step:
    """One command for the helper's shell; ``unless`` skips it when that check succeeds."""

    argv: tuple[str, ...]
    unless: tuple[str, ...] | None = None
    may_fail: bool = False


def render_script(steps: Iterable[Step]) -> str:
    """One ``sh`` script running the steps in order; stops at the first real failure."""
    lines = ["set -e"]
    for step in steps:
        command = shlex.join(step.argv)
        if step.unless is not None:
            command = f"{shlex.join(step.unless)} 2>/dev/null || {command}"
        if step.may_fail:
            command = f"{command} 2>/dev/null || true"
        lines.append(command)
    return "\n".join(lines) + "\n"


def _host(ip: str) -> str:
    """``10.0.0.2`` -> ``10.0.0.2/32``, ``fd00::2`` -> ``fd00::2/128``; a subnet
    (``10.1.0.0/24``, reached through a router) stays a subnet."""
    try:
        if "/" in ip:
            return str(ipaddress.ip_network(ip, strict=False))
        address = ipaddress.ip_address(ip)
    except ValueError as exc:
        raise ShapingError(f"{ip!r} is not an IPv4 address (nor an IPv6 one)") from exc
    return f"{address}/{address.max_prefixlen}"


def family_of(ip: str) -> int:
    """4 or 6 (an address or a subnet)."""
    return ipaddress.ip_network(_host(ip), strict=False).version


def _iptables(family: int) -> tuple[str, ...]:
    return IP6TABLES if family == 6 else IPTABLES


def _check_queue(queue: int) -> None:
    if not 1 <= queue <= MAX_QUEUE:
        raise ShapingError(f"queue/class number {queue} is outside 1..{MAX_QUEUE}")


# --------------------------------------------------------------------------- iptables


def nfqueue_rule(source_ip: str, queue: int) -> tuple[str, ...]:
    """The DEST-side rule sending packets from ``source_ip`` to NFQUEUE ``queue`` (fails open)."""
    _check_queue(queue)
    return ("-s", _host(source_ip), "-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass")


def partition_rule(peer_ip: str) -> tuple[str, ...]:
    """The SOCKETLAB rule dropping everything that arrives from ``peer_ip``."""
    return ("-s", _host(peer_ip), "-j", "DROP")


INJECTED_RULE = ("-m", "mark", "--mark", f"{INJECT_MARK:#x}", "-j", "RETURN")


def _table(table: str, family: int = 4) -> tuple[str, ...]:
    return (*_iptables(family), "-t", table)


FILTER_HOOKS = ("INPUT", "OUTPUT", "FORWARD")


def chain_steps(table: str = "filter", family: int = 4) -> list[Step]:
    """Create SOCKETLAB in ``table`` and the jumps to it, once per namespace (idempotent).

    ``filter`` (partitions) is entered from INPUT, OUTPUT and FORWARD (a router
    drops what it would forward); ``raw`` (the nfqueue engine) from PREROUTING,
    with a RETURN for our own injected copies. ``family`` 6: the ip6tables twin.
    """
    cmd = _table(table, family)
    hooks = ("PREROUTING",) if table == "raw" else FILTER_HOOKS
    steps = [Step((*cmd, "-N", CHAIN), may_fail=True)]
    steps += [
        Step((*cmd, "-I", hook, "1", "-j", CHAIN), unless=(*cmd, "-C", hook, "-j", CHAIN))
        for hook in hooks
    ]
    if table == "raw":
        steps.append(
            Step(
                (*cmd, "-I", CHAIN, "1", *INJECTED_RULE),
                unless=(*cmd, "-C", CHAIN, *INJECTED_RULE),
            )
        )
    return steps


def _rule_family(rule: Sequence[str]) -> int:
    """The family of a rule, from its ``-s`` address (IPv4 when it has none)."""
    for flag, value in itertools.pairwise(rule):
        if flag == "-s":
            return family_of(value)
    return 4


def ensure_rule(rule: Sequence[str], *, table: str = "filter") -> Step:
    cmd = _table(table, _rule_family(rule))
    return Step((*cmd, "-A", CHAIN, *rule), unless=(*cmd, "-C", CHAIN, *rule))


def delete_rule(rule: Sequence[str], *, table: str = "filter") -> Step:
    return Step((*_table(table, _rule_family(rule)), "-D", CHAIN, *rule), may_fail=True)


def partition_steps(peer_ip: str, *peers: str) -> list[Step]:
    """Run in one side's namespace: drop everything arriving from ``peer_ip`` (and from
    ``peers``: the peer's other addresses, subnets reached through it)."""
    sources = (peer_ip, *peers)
    families = sorted({family_of(ip) for ip in sources})
    chains = [step for family in families for step in chain_steps(family=family)]
    return [*chains, *(ensure_rule(partition_rule(ip)) for ip in sources)]


def heal_steps(peer_ip: str, *peers: str) -> list[Step]:
    return [delete_rule(partition_rule(ip)) for ip in (peer_ip, *peers)]


def clear_shaping_steps(rules_queues: Mapping[str, int]) -> list[Step]:
    # rules_queues: source IP -> queue, as parse_status reads them
    """Remove every NFQUEUE rule and every tc root in a namespace; partitions stay."""
    steps = [
        delete_rule(nfqueue_rule(ip, queue), table="raw")
        for ip, queue in sorted(rules_queues.items())
    ]
    steps.append(
        Step(
            (
                "sh",
                "-c",
                'for dev in $(ls /sys/class/net); do [ "$dev" = lo ] || '
                'tc qdisc del dev "$dev" root 2>/dev/null || true; done',
            )
        )
    )
    return steps


def teardown_steps(devices: Iterable[str]) -> list[Step]:
    """Remove everything socketlab put in a namespace (one flush, one qdisc delete)."""
    steps = []
    for family in (4, 6):
        for table, hooks in (("filter", FILTER_HOOKS), ("raw", ("PREROUTING",))):
            cmd = _table(table, family)
            steps.append(Step((*cmd, "-F", CHAIN), may_fail=True))
            steps += [Step((*cmd, "-D", hook, "-j", CHAIN), may_fail=True) for hook in hooks]
            steps.append(Step((*cmd, "-X", CHAIN), may_fail=True))
    steps += [Step(("tc", "qdisc", "del", "dev", dev, "root"), may_fail=True) for dev in devices]
    return steps


# --------------------------------------------------------------------------- tc


def classid(queue: int) -> str:
    """htb class of a link: ``1:`` plus the queue number in hex, as tc reads it."""
    _check_queue(queue)
    return f"1:{queue:x}"


def _share(value: float) -> str:
    # netem reads PERCENT with strtod; ten digits keep derived model values exact enough
    return format_percent(value, digits=10)


def netem_args(spec: LinkSpec, *, limit: int | None = None) -> list[str]:
    """``netem`` options for the per-packet part of ``spec`` (empty when none).

    The syntax of ``tc-netem(8)``: ``limit N``, ``delay D [J [C]]
    [distribution X]``, ``loss random P [C]`` | ``loss gemodel p r 1-h 1-k``
    | ``loss state p13 p31 p32 p23 p14``, ``duplicate P``, ``reorder P
    [gap N]``, ``corrupt P``, ``seed N``. ``uniform`` is netem's default and
    has no table file (iproute2 ships normal, pareto, paretonormal), so it is
    never written out. ``seed`` needs a netem that has it: see
    :func:`engine_gaps`.
    """
    args: list[str] = []
    if limit is not None:
        args += ["limit", str(limit)]
    args += _netem_delay(spec)
    args += _netem_loss(spec)
    if spec.duplicate:
        args += ["duplicate", format_percent(spec.duplicate)]
    if spec.reorder:
        args += ["reorder", format_percent(spec.reorder)]
        if spec.reorder_gap and spec.reorder_gap > 1:
            args += ["gap", str(spec.reorder_gap)]
    if spec.corrupt:
        args += ["corrupt", format_percent(spec.corrupt)]
    if spec.seed is not None and args:
        args += ["seed", str(spec.seed)]
    return args


def _netem_delay(spec: LinkSpec) -> list[str]:
    if not (spec.delay or spec.jitter):
        return []
    args = ["delay", format_duration(spec.delay)]
    if spec.jitter:
        args.append(format_duration(spec.jitter))
        if spec.delay_correlation:
            args.append(_share(spec.delay_correlation))
        if spec.delay_distribution not in {None, Distribution.UNIFORM}:
            args += ["distribution", str(spec.delay_distribution)]
    return args


def _netem_loss(spec: LinkSpec) -> list[str]:
    model = spec.effective_loss_model
    if isinstance(model, GilbertElliott):
        values: tuple[float, ...] = (model.p, model.r, model.bad_loss, model.good_loss)
        return ["loss", "gemodel", *map(_share, values)]
    if isinstance(model, FourState):
        values = (model.p13, model.p31, model.p32, model.p23, model.p14)
        return ["loss", "state", *map(_share, values)]
    if not spec.loss:
        return []
    args = ["loss", "random", format_percent(spec.loss)]
    if spec.loss_correlation:
        args.append(_share(spec.loss_correlation))
    return args


def netem_delay_line_limit(spec: LinkSpec) -> int:
    """netem's ``limit`` (packets) when a tbf after it holds the queue: room for the delay line.

    netem counts every packet it holds, delayed or not; here it holds only
    the ones in flight, at most the rate times the longest delay, counted in
    the smallest frames (64 bytes). Never below netem's default of 1000.
    """
    longest = spec.delay + 4.0 * spec.jitter  # the tables reach 4 sigma
    rate = spec.rate or UNLIMITED_RATE
    in_flight = math.ceil(rate * longest / (8 * MIN_FRAME_BYTES))
    return max(NETEM_DEFAULT_LIMIT, min(MAX_NETEM_LIMIT, in_flight))


def _fifo(limit: QueueLimit) -> tuple[str, ...]:
    return (
        ("pfifo", "limit", str(limit.size))
        if limit.packets
        else ("bfifo", "limit", str(limit.size))
    )


def queue_leaf_steps(*, dev: str, queue: int, limit: QueueLimit) -> list[Step]:
    """The bottleneck buffer as the htb class's leaf: ``bfifo`` (bytes) or ``pfifo`` (packets)."""
    parent = classid(queue)
    return [_tc(f"qdisc replace dev {dev} parent {parent} handle {queue + 1:x}:", *_fifo(limit))]


def tbf_burst(rate: int) -> int:
    """tbf's bucket in bytes: two milliseconds at ``rate``, at least two full frames."""
    return max(2 * FRAME_BYTES, math.ceil(rate / 8 * TBF_BURST_SECONDS))


def netem_queue_steps(*, dev: str, queue: int, rate: int, limit: QueueLimit) -> list[Step]:
    """Under netem ``N+1:``: a tbf ``3000+N:`` at ``rate`` whose queue is the limit.

    tbf's own limit is in bytes; a packet limit gets a pfifo ``5800+N:`` below
    the tbf (tbf's class ``3000+N:1``), the tbf limit then only sizing its default.
    """
    _check_queue(queue)
    tbf = TBF_MAJOR_BASE + queue
    byte_limit = limit.size * FRAME_BYTES if limit.packets else limit.size
    steps = [
        _tc(
            f"qdisc add dev {dev} parent {queue + 1:x}:1 handle {tbf:x}: tbf rate {rate}bit"
            f" burst {tbf_burst(rate)} limit {byte_limit}"
        )
    ]
    if limit.packets:
        fifo = TBF_FIFO_MAJOR_BASE + queue
        steps.append(_tc(f"qdisc add dev {dev} parent {tbf:x}:1 handle {fifo:x}:", *_fifo(limit)))
    return steps


def _tc(command: str, *extra: str, may_fail: bool = False) -> Step:
    # device names and tc tokens never contain spaces: one string reads like the tc manual
    return Step(("tc", *command.split(), *extra), may_fail=may_fail)


def filter_prio(queue: int, family: int) -> int:
    """The u32 filter prio of a link's peer of ``family`` (IPv6 above the IPv4 range)."""
    _check_queue(queue)
    return queue + (V6_PRIO_OFFSET if family == 6 else 0)


def u32_filter_steps(*, dev: str, queue: int, peers: Sequence[str]) -> list[Step]:
    """The filters sending packets to ``peers`` (addresses or routed subnets, either
    family) to class 1:N: ``match ip dst`` at prio N, ``match ip6 dst`` at prio 0x2000+N."""
    klass = classid(queue)
    steps = [
        _tc(f"filter del dev {dev} parent 1: protocol {proto} prio {filter_prio(queue, fam)}",
            may_fail=True)
        for fam, proto in ((4, "ip"), (6, "ipv6"))
    ]  # fmt: skip
    for peer in peers:
        family = family_of(peer)
        proto, match = ("ipv6", "ip6") if family == 6 else ("ip", "ip")
        steps.append(
            _tc(
                f"filter add dev {dev} parent 1: protocol {proto} prio {filter_prio(queue, family)}"
                f" u32 match {match} dst {_host(peer)} flowid {klass}"
            )
        )
    return steps


def htb_steps(
    *,
    dev: str,
    peer_ip: str,
    queue: int,
    rate: int,
    netem: Sequence[str] = (),
    below: Sequence[Step] = (),
    peer_ip6: str | None = None,
    peer_nets: Sequence[str] = (),
) -> list[Step]:
    """htb root (if absent), class 1:N at ``rate``, optional netem leaf, u32 filters on the
    peer (``peer_ip``, ``peer_ip6``, and ``peer_nets`` reached through it).

    ``below``: more qdiscs under the class (a queue leaf, or a tbf under
    netem), set up before the filter sends any packet there. An empty
    ``peer_ip`` means the link shapes IPv6 only.
    """
    klass = classid(queue)
    steps = [
        # default 0: unclassified traffic bypasses htb, so other links stay untouched
        Step(
            ("tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "0"),
            unless=("sh", "-c", f"tc qdisc show dev {shlex.quote(dev)} root | grep -q 'htb 1:'"),
        ),
        _tc(f"class replace dev {dev} parent 1: classid {klass} htb rate {rate}bit ceil {rate}bit"),
    ]
    if netem:
        steps.append(
            _tc(f"qdisc replace dev {dev} parent {klass} handle {queue + 1:x}: netem", *netem)
        )
    steps += below
    peers = [ip for ip in (peer_ip, peer_ip6) if ip] + list(peer_nets)
    steps += u32_filter_steps(dev=dev, queue=queue, peers=peers)
    return steps


def remove_htb_steps(*, dev: str, queue: int) -> list[Step]:
    return [
        _tc(f"filter del dev {dev} parent 1: protocol ip prio {queue}", may_fail=True),
        _tc(
            f"filter del dev {dev} parent 1: protocol ipv6 prio {filter_prio(queue, 6)}",
            may_fail=True,
        ),
        _tc(f"class del dev {dev} classid {classid(queue)}", may_fail=True),
    ]


# --------------------------------------------------------------------------- links


def needs_verdict_loop(spec: LinkSpec, engine: Engine) -> bool:
    """Only the nfqueue engine with a per-packet impairment needs a live helper."""
    return engine is Engine.NFQUEUE and not spec.impairment.is_noop


def uses_htb(spec: LinkSpec, engine: Engine) -> bool:
    return spec.rate is not None or (engine is Engine.NETEM and not spec.impairment.is_noop)


def needs_wire_size_packets(spec: LinkSpec) -> bool:
    """Whether the link impairs or queues packets one by one (loss, jitter, a queue limit, ...).

    With segmentation offload a veth hands its peer TCP "super-packets" of up
    to 64 KB; a verdict (or netem) applied to one of them hits ~45 segments
    at once, so loss would come in bursts and jitter, duplication and
    reordering would act on bursts, not packets; and a 64 KB queue would
    hold one of them. Such links turn the sender's offload off.

    A fixed delay is the exception: every segment gets the same delay and
    they stay in order, so delaying the super-packet is delaying each of its
    segments, and the offload (which is what lets the NFQUEUE engine carry
    Gbit/s) stays on.
    """
    fixed_delay_only = dataclasses.replace(spec.impairment, delay=0.0).is_noop
    return not fixed_delay_only or spec.queue_limit is not None


def segmentation_offload_steps(*, dev: str, enabled: bool) -> list[Step]:
    """In SOURCE's namespace: TCP/generic segmentation offload on or off for ``dev``."""
    state = "on" if enabled else "off"
    return [Step(("ethtool", "-K", dev, "tso", state, "gso", state))]


def egress_steps(
    *,
    engine: Engine,
    dev: str,
    dest_ip: str,
    queue: int,
    spec: LinkSpec,
    dest_ip6: str | None = None,
    dest_nets: Sequence[str] = (),
) -> list[Step]:
    """In SOURCE's namespace: rate and queue (htb) and, with netem, everything else.

    The filters match ``dest_ip`` (empty: IPv6 only), ``dest_ip6`` and the
    ``dest_nets`` that SOURCE reaches through DEST when DEST is a router.
    """
    steps = remove_htb_steps(dev=dev, queue=queue)
    if not uses_htb(spec, engine):
        return steps
    with_netem = engine is Engine.NETEM and not spec.impairment.is_noop
    limit = spec.queue_limit
    if with_netem and limit is not None and spec.rate is not None:
        netem = netem_args(spec, limit=netem_delay_line_limit(spec))
        below = netem_queue_steps(dev=dev, queue=queue, rate=spec.rate, limit=limit)
        return steps + htb_steps(
            dev=dev,
            queue=queue,
            rate=UNLIMITED_RATE,
            netem=netem,
            below=below,
            peer_ip=dest_ip,
            peer_ip6=dest_ip6,
            peer_nets=dest_nets,
        )
    netem = netem_args(spec) if with_netem else []
    leaf = queue_leaf_steps(dev=dev, queue=queue, limit=limit) if limit is not None else []
    return steps + htb_steps(
        dev=dev,
        queue=queue,
        rate=spec.rate or UNLIMITED_RATE,
        netem=netem,
        below=leaf,
        peer_ip=dest_ip,
        peer_ip6=dest_ip6,
        peer_nets=dest_nets,
    )


def _sources(source_ip: str, source_ip6: str | None, source_nets: Sequence[str]) -> list[str]:
    return [ip for ip in (source_ip, source_ip6) if ip] + list(source_nets)


def ingress_steps(
    *,
    engine: Engine,
    source_ip: str,
    queue: int,
    spec: LinkSpec,
    source_ip6: str | None = None,
    source_nets: Sequence[str] = (),
) -> list[Step]:
    """In DEST's namespace: the NFQUEUE rules feeding the verdict loop (nfqueue engine),
    one per source address or subnet forwarded by SOURCE, each in its family's table."""
    sources = _sources(source_ip, source_ip6, source_nets)
    steps = unshape_ingress_steps(
        source_ip=source_ip, queue=queue, source_ip6=source_ip6, source_nets=source_nets
    )
    if needs_verdict_loop(spec, engine):
        families = sorted({family_of(ip) for ip in sources})
        steps += [step for family in families for step in chain_steps("raw", family)]
        steps += [ensure_rule(nfqueue_rule(ip, queue), table="raw") for ip in sources]
    return steps


def unshape_egress_steps(*, dev: str, queue: int) -> list[Step]:
    return remove_htb_steps(dev=dev, queue=queue)


def unshape_ingress_steps(
    *, source_ip: str, queue: int, source_ip6: str | None = None, source_nets: Sequence[str] = ()
) -> list[Step]:
    sources = _sources(source_ip, source_ip6, source_nets)
    return [delete_rule(nfqueue_rule(ip, queue), table="raw") for ip in sources]


def shaper_command(
    *, queue: int, spec: LinkSpec, seed: int | None = None, stats_interval: float | None = None
) -> list[str]:
    """The helper's main process for the nfqueue engine: ``socketlab shaper ...``.

    The seed is ``seed`` if given, else the spec's. The flags are
    :meth:`ShaperInvocation.argv`; ``socketlab.shaper.invocation.parse_invocation``
    reads them back (a link with only the older options gives the older flags).
    With ``stats_interval``, the loop logs its counters that often (``lab watch``
    reads them), set through ``env`` since the loop reads it from its environment.
    """
    chosen = seed if seed is not None else spec.seed
    invocation = ShaperInvocation(queue=queue, impairment=spec.impairment, seed=chosen)
    command = ["socketlab", "shaper", *invocation.argv()]
    if stats_interval is None:
        return command
    return ["env", f"SOCKETLAB_SHAPER_STATS_INTERVAL={stats_interval:g}", *command]


def free_queue(used: Iterable[int]) -> int:
    """Smallest queue/class number not used by another link of the same source."""
    taken = set(used)
    for queue in range(1, MAX_QUEUE + 1):
        if queue not in taken:
            return queue
    raise ShapingError("no free NFQUEUE number left")  # 65535 links from one host


# --------------------------------------------------------------------------- probes


def probe_script(peer_ip: str) -> str:
    """Find the device towards ``peer_ip``, whether this kernel has netem, and netem's seed.

    A seed counts only if the kernel reports it back: tc before iproute2 6.6
    refuses the word, and a kernel without the attribute ignores it.
    """
    peer = shlex.quote(str(ipaddress.ip_address(peer_ip)))
    return (
        f'echo "route=$(ip -o route get {peer} | head -n 1)"\n'
        "if tc qdisc add dev lo root handle 5ec: netem delay 0ms seed 7 2>/dev/null; then\n"
        "  if tc qdisc show dev lo root | grep -q ' seed 7'; then seed=ok; else seed=no; fi\n"
        "  tc qdisc del dev lo root handle 5ec: 2>/dev/null || true\n"
        "  echo netem=ok\n"
        '  echo "netem-seed=$seed"\n'
        "elif out=$(tc qdisc add dev lo root handle 5ec: netem delay 0ms 2>&1); then\n"
        "  tc qdisc del dev lo root handle 5ec: 2>/dev/null || true\n"
        "  echo netem=ok\n"
        "  echo netem-seed=no\n"
        "else\n"
        '  echo "netem=$out" | head -n 1\n'
        "fi\n"
    )


@dataclass(frozen=True)
class Probe:
    dev: str
    netem: bool
    netem_error: str
    netem_seed: bool = False  # netem takes `seed N` and reports it back


_ROUTE_DEV = re.compile(r"\bdev\s+(\S+)")


def parse_probe(text: str) -> Probe:
    """Read :func:`probe_script`'s output."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in {"route", "netem", "netem-seed"} and key not in values:
            values[key] = value.strip()
    match = _ROUTE_DEV.search(values.get("route", ""))
    if not match or "netem" not in values:
        raise ShapingError(f"could not read the namespace probe: {text.strip()[:200]!r}")
    netem = values["netem"] == "ok"
    return Probe(
        dev=match.group(1),
        netem=netem,
        netem_error="" if netem else values["netem"],
        netem_seed=netem and values.get("netem-seed") == "ok",
    )


def choose_engine(requested: Engine | None, probe: Probe, spec: LinkSpec | None = None) -> Engine:
    """``requested`` if possible, else netem when present (and able to do ``spec``), else nfqueue."""
    if requested is Engine.NETEM and not probe.netem:
        raise ShapingError(
            f"--engine netem: this kernel has no sch_netem ({probe.netem_error}); "
            "use --engine nfqueue or leave --engine out"
        )
    if requested is not None:
        return requested
    if not probe.netem:
        return Engine.NFQUEUE
    if spec is not None and any(
        gap.fatal for gap in engine_gaps(spec, Engine.NETEM, netem_seed=probe.netem_seed)
    ):
        return Engine.NFQUEUE
    return Engine.NETEM


@dataclass(frozen=True)
class EngineGap:
    """Something ``spec`` asks that an engine cannot do (``fatal``) or does only in part."""

    option: str
    reason: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.option}: {self.reason}"


def engine_gaps(spec: LinkSpec, engine: Engine, *, netem_seed: bool) -> list[EngineGap]:
    """What ``engine`` lacks for ``spec``; the NFQUEUE engine implements every option.

    netem takes the correlated value of ``delay D J C`` modulo the jitter
    range or the table size (``tabledist`` in ``sch_netem.c``), which leaves
    successive delays uncorrelated: refused rather than silently ignored.
    netem's ``seed`` exists only where the probe saw it; it seeds loss,
    duplication, reordering and delay, but not the position of a corrupted
    bit nor where a correlation starts.
    """
    if engine is not Engine.NETEM:
        return []
    gaps = []
    if spec.delay_correlation:
        gaps.append(
            EngineGap(
                "--delay-correlation",
                "netem applies it modulo the jitter range, so delays stay uncorrelated; "
                "use --engine nfqueue",
            )
        )
    if spec.seed is not None:
        if not netem_seed:
            gaps.append(
                EngineGap(
                    "--seed",
                    "this kernel's netem has no seed (it needs Linux and iproute2 6.6 or "
                    "later); use --engine nfqueue",
                )
            )
        elif spec.corrupt or spec.loss_correlation:
            gaps.append(
                EngineGap(
                    "--seed",
                    "netem does not seed which bit it corrupts or where a correlation starts; "
                    "use --engine nfqueue for an exact replay",
                    fatal=False,
                )
            )
    return gaps


def require_engine(spec: LinkSpec, engine: Engine, *, netem_seed: bool) -> list[str]:
    """Raise ShapingError (one line) for what ``engine`` cannot do; return the warnings."""
    gaps = engine_gaps(spec, engine, netem_seed=netem_seed)
    fatal = [str(gap) for gap in gaps if gap.fatal]
    if fatal:
        raise ShapingError(f"engine {engine}: " + "; ".join(fatal))
    return [str(gap) for gap in gaps]


# --------------------------------------------------------------------------- status


STATUS_SCRIPT = (
    f"echo '%%iptables'\n{shlex.join(IPTABLES)} -S {CHAIN} 2>/dev/null || true\n"
    f"echo '%%raw'\n{shlex.join(_table('raw'))} -S {CHAIN} 2>/dev/null || true\n"
    f"echo '%%ip6tables'\n{shlex.join(IP6TABLES)} -S {CHAIN} 2>/dev/null || true\n"
    f"echo '%%raw6'\n{shlex.join(_table('raw', 6))} -S {CHAIN} 2>/dev/null || true\n"
    "echo '%%tc'\n"
    "for dev in $(ls /sys/class/net); do\n"
    '  [ "$dev" = lo ] || tc filter show dev "$dev" 2>/dev/null || true\n'
    "done\n"
    "echo '%%nfqueue'\n"
    f"cat {NFQUEUE_STATS_FILE} 2>/dev/null || true\n"
)


@dataclass(frozen=True)
class RulesInForce:
    """What one namespace has: source IP -> queue (ingress), DROP sources, dest IP -> class.

    ``queue_stats``: the kernel's counters of each NFQUEUE bound in the
    namespace, by queue number (packets dropped because the queue or the
    verdict loop's socket buffer was full).
    """

    queues: Mapping[str, int] = field(default_factory=dict)
    drops: frozenset[str] = frozenset()
    classes: Mapping[str, int] = field(default_factory=dict)
    injected_return: bool = False
    queue_stats: Mapping[int, QueueStats] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.queues or self.drops or self.classes)


_NFQ = re.compile(r"^-A SOCKETLAB -s (\S+?)(?:/32|/128)? .*-j NFQUEUE --queue-num (\d+)")
_DROP = re.compile(r"^-A SOCKETLAB -s (\S+?)(?:/32|/128)? -j DROP")
_FLOWID = re.compile(r"\bflowid 1:([0-9a-f]+)")
_MATCH_DST = re.compile(r"^\s*match ([0-9a-f]{8})/ffffffff at 16")
# an ip6 dst host match is four 32-bit words at offsets 24, 28, 32, 36
_MATCH_DST6 = re.compile(r"^\s*match ([0-9a-f]{8})/ffffffff at (24|28|32|36)")


def _sections(text: str) -> dict[str, list[str]]:
    """The ``%%name`` sections of a status script's output, lines by section."""
    sections: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("%%"):
            section = line[2:].strip()
        else:
            sections.setdefault(section, []).append(line)
    return sections


def _tc_classes(lines: Iterable[str]) -> dict[str, int]:
    """Destination address -> htb class, from ``tc filter show`` (u32 v4 and v6 matches)."""
    classes: dict[str, int] = {}
    flow: int | None = None
    words6: dict[int, str] = {}
    for line in lines:
        if m := _FLOWID.search(line):
            flow = int(m.group(1), 16)
            words6 = {}
        elif (m := _MATCH_DST.match(line)) and flow is not None:
            classes[str(ipaddress.IPv4Address(int(m.group(1), 16)))] = flow
            flow = None
        elif (m := _MATCH_DST6.match(line)) and flow is not None:
            words6[int(m.group(2))] = m.group(1)
            if len(words6) == 4:
                packed = "".join(words6[offset] for offset in (24, 28, 32, 36))
                classes[str(ipaddress.IPv6Address(int(packed, 16)))] = flow
                flow, words6 = None, {}
    return classes


def parse_status(text: str) -> RulesInForce:
    """Read :data:`STATUS_SCRIPT` output (``iptables -S`` and ``tc filter show``)."""
    sections = _sections(text)
    drops = {
        m.group(1)
        for name in ("iptables", "ip6tables")
        for line in sections.get(name, [])
        if (m := _DROP.match(line))
    }
    queues: dict[str, int] = {}
    injected = False
    for line in [*sections.get("raw", []), *sections.get("raw6", [])]:
        if m := _NFQ.match(line):
            queues[m.group(1)] = int(m.group(2))
        elif "-j RETURN" in line and "--mark" in line:
            injected = True
    return RulesInForce(
        queues=queues,
        drops=frozenset(drops),
        classes=_tc_classes(sections.get("tc", [])),
        injected_return=injected,
        queue_stats=parse_queue_stats("\n".join(sections.get("nfqueue", []))),
    )
