"""The verified transfer's ceiling, its ratios, and the issue's targets.

Pure: rates in bit/s by measurement name in, figures out. A verified download
to disk cannot beat the slowest of the three things it must do to every byte:

* receive it (``iperf3-tcp``, the network between the same two containers);
* hash it (``sha256``, hashlib on one core of the client, by that core's CPU time);
* write and fsync it (the file's size at ``--dest``, in the client), measured
  twice: plainly (``write-fsync``: write it all, then fsync) and with the
  kernel asked to write each chunk out at once (``write-fsync-behind``, as our
  fetch's writer does); the disk's figure is the faster of the two, so a
  smarter writer cannot "beat" a ceiling set by a naive one.

The **ceiling** is the smallest of those three. Beside it stands the **peer**
(``peer``): what a user would pick instead of our ``fetch``, ``socat`` into
``tee FILE`` into ``openssl dgst -sha256``, then ``sync FILE``, in netkit helpers
joined to the same namespaces and writing to the same destination.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from lab.bench.throughput import ratio

NETWORK: Final = "iperf3-tcp"
HASH: Final = "sha256"
WRITE: Final = "write-fsync"
WRITE_BEHIND: Final = "write-fsync-behind"
PEER: Final = "peer"
OURS: Final = "fetch"
NAIVE: Final = "naive"
UDP: Final = "udp"
UDP_NETWORK: Final = "iperf3-udp"
DISK_PARTS: Final = (WRITE, WRITE_BEHIND)

# Denominators that are not measurements but derived from them.
CEILING: Final = "ceiling"
NETWORK_OR_HASH: Final = "network-or-hash"  # min(iperf3, sha256): the tmpfs target's base

DESTS: Final = ("disk", "tmpfs")


@dataclass(frozen=True, kw_only=True)
class Ceiling:
    """The smallest of ``parts`` and which measurement set it."""

    bits_per_second: float
    bound_by: str


def lowest(rates: Mapping[str, float], parts: tuple[str, ...]) -> Ceiling | None:
    """The smallest rate among ``parts``; None unless every part was measured above 0."""
    found = [(rates[name], name) for name in parts if rates.get(name, 0.0) > 0]
    if len(found) != len(parts):
        return None
    value, name = min(found)
    return Ceiling(bits_per_second=value, bound_by=name)


def disk(rates: Mapping[str, float]) -> Ceiling | None:
    """The disk's figure: the faster of the write+fsync measurements made (None: none)."""
    found = [(rates[name], name) for name in DISK_PARTS if rates.get(name, 0.0) > 0]
    if not found:
        return None
    value, name = max(found)
    return Ceiling(bits_per_second=value, bound_by=name)


def ceiling(rates: Mapping[str, float]) -> Ceiling | None:
    """The ceiling of a verified download: min(iperf3, SHA-256, the disk's best write+fsync)."""
    best_disk = disk(rates)
    if best_disk is None:
        return None
    return lowest(rates, (NETWORK, HASH, best_disk.bound_by))


def denominator(rates: Mapping[str, float], name: str) -> float | None:
    """The rate a ratio divides by: a measurement, the ceiling, or min(iperf3, sha256)."""
    if name == CEILING:
        found = ceiling(rates)
        return found.bits_per_second if found else None
    if name == NETWORK_OR_HASH:
        found = lowest(rates, (NETWORK, HASH))
        return found.bits_per_second if found else None
    value = rates.get(name)
    return value if value is not None and value > 0 else None


@dataclass(frozen=True, kw_only=True)
class RatioSpec:
    """One ratio the bench reports: ``numerator / denominator``."""

    name: str
    numerator: str
    denominator: str
    label: str


RATIOS: Final = (
    RatioSpec(name="fetch/ceiling", numerator=OURS, denominator=CEILING, label="fetch / ceiling"),
    RatioSpec(name="fetch/peer", numerator=OURS, denominator=PEER, label="fetch / peer"),
    RatioSpec(
        name="fetch/network-or-hash",
        numerator=OURS,
        denominator=NETWORK_OR_HASH,
        label="fetch / min(iperf3, SHA-256)",
    ),
    RatioSpec(name="fetch/iperf3", numerator=OURS, denominator=NETWORK, label="fetch / iperf3"),
    RatioSpec(name="peer/ceiling", numerator=PEER, denominator=CEILING, label="peer / ceiling"),
    RatioSpec(name="naive/iperf3", numerator=NAIVE, denominator=NETWORK, label="naive / iperf3"),
    RatioSpec(name="udp/iperf3-udp", numerator=UDP, denominator=UDP_NETWORK, label="udp / iperf3"),
)


@dataclass(frozen=True, kw_only=True)
class Target:
    """A ratio the issue asks for (reported, never asserted).

    ``dest`` and ``condition`` (a LinkSpec description) narrow where it applies;
    None means everywhere.
    """

    ratio: str
    minimum: float
    dest: str | None = None
    condition: str | None = None

    def applies(self, *, dest: str, condition: str) -> bool:
        return self.dest in {None, dest} and self.condition in {None, condition}

    def met(self, value: float | None) -> bool | None:
        """True/False against ``minimum``; None when there is no value to judge."""
        return None if value is None else value >= self.minimum


# Issue 18 §1: on disk, >= 0.9x the ceiling (any link: shaped, the network is the
# ceiling) and >= 1.5x the peer (unshaped: on a shaped link both wait for the
# network); on tmpfs, where the disk is out of the way, >= 0.6x min(iperf3, SHA-256).
TARGETS: Final = (
    Target(ratio="fetch/ceiling", minimum=0.9, dest="disk"),
    Target(ratio="fetch/peer", minimum=1.5, dest="disk", condition="none"),
    Target(ratio="fetch/network-or-hash", minimum=0.6, dest="tmpfs"),
)


def target_for(name: str, *, dest: str, condition: str) -> Target | None:
    """The target of ratio ``name`` for this destination and link, if the issue sets one."""
    return next(
        (t for t in TARGETS if t.ratio == name and t.applies(dest=dest, condition=condition)),
        None,
    )


@dataclass(frozen=True, kw_only=True)
class Ratio:
    """A computed ratio with its target and verdict."""

    name: str
    label: str
    value: float | None
    target: float | None
    met: bool | None


def ratios(rates: Mapping[str, float], *, dest: str, condition: str) -> list[Ratio]:
    """Every ratio whose numerator was measured, in :data:`RATIOS` order.

    A ratio whose denominator is missing (or measured 0) has the value None,
    and so does its verdict.
    """
    found = []
    for spec in RATIOS:
        if spec.numerator not in rates:
            continue
        base = denominator(rates, spec.denominator)
        value = None if base is None else ratio(rates[spec.numerator], base)
        target = target_for(spec.name, dest=dest, condition=condition)
        found.append(
            Ratio(
                name=spec.name,
                label=spec.label,
                value=value,
                target=target.minimum if target else None,
                met=target.met(value) if target else None,
            )
        )
    return found
