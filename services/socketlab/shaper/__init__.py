"""The userspace impairment engine that runs inside a netkit helper container.

``core`` decides each packet's fate (drop, delay, duplicate, corrupt, reorder)
without any I/O; ``loop`` binds it to an NFQUEUE queue and a raw socket.
The controller side (rules, helpers, status) lives in ``lab.shaping``.
"""

from socketlab.shaper.core import (
    INJECT_MARK,
    Accept,
    Counters,
    Impairment,
    ImpairmentScheduler,
    Inject,
    corrupt_payload,
)

__all__ = [
    "INJECT_MARK",
    "Accept",
    "Counters",
    "Impairment",
    "ImpairmentScheduler",
    "Inject",
    "corrupt_payload",
]
