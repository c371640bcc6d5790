"""Who gets a connection slot on 4571 (pure: the loop supplies the counts and candidates).

Two limits keep one host from locking everyone else out:

* ``max_per_peer`` connections from one address: the next one from that address
  is refused (``too many connections from your address``);
* ``max_connections`` in all: when they are all taken, the connection idle the
  longest (between messages, nothing owed either way) is evicted to make room;
  only when none is idle is the new peer refused as busy.

An idle connection costs the server nothing but its slot, so giving that slot to
someone who wants to talk now is the fair choice; a connection in the middle of a
request or a transfer is never evicted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Admit:
    """Serve the new connection."""


@dataclass(frozen=True)
class Evict:
    """Serve it after closing connection ``key``, the one idle the longest."""

    key: int


@dataclass(frozen=True)
class Refuse:
    """Do not serve it; tell the peer ``reason``."""

    reason: str
    busy: bool  # the server is full (rather than this address over its share)


Decision = Admit | Evict | Refuse


@dataclass(frozen=True, kw_only=True)
class Idle:
    """An evictable connection: its key and when it last did anything (monotonic s)."""

    key: int
    last_active: float


def admit(
    *,
    from_peer: int,
    total: int,
    idle: Iterable[Idle],
    max_per_peer: int,
    max_connections: int,
) -> Decision:
    """What to do with a new connection whose address already holds ``from_peer`` of ``total``.

    ``idle`` is only looked at when the server is full.
    """
    if from_peer >= max_per_peer:
        return Refuse(f"too many connections from your address (limit {max_per_peer})", False)
    if total < max_connections:
        return Admit()
    oldest = min(idle, key=lambda candidate: candidate.last_active, default=None)
    if oldest is None:
        return Refuse("server busy: too many connections", True)
    return Evict(oldest.key)
