"""The userspace impairment engine that runs inside a netkit helper container.

``core`` decides each packet's fate (drop, delay, duplicate, corrupt, reorder)
without any I/O, drawing from the netem-equivalent models in ``models``;
``invocation`` is the helper's command line as data; ``loop`` binds the core
to an NFQUEUE queue and a raw socket. The controller side (rules, helpers,
status) lives in ``lab.shaping``.
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
from socketlab.shaper.invocation import ShaperInvocation, ShaperUsageError, parse_invocation
from socketlab.shaper.models import Distribution, FourState, GilbertElliott

__all__ = [
    "INJECT_MARK",
    "Accept",
    "Counters",
    "Distribution",
    "FourState",
    "GilbertElliott",
    "Impairment",
    "ImpairmentScheduler",
    "Inject",
    "ShaperInvocation",
    "ShaperUsageError",
    "corrupt_payload",
    "parse_invocation",
]
