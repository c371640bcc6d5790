"""Network impairment between lab services: shaping, partitions, status, self-check.

Python API (scenarios use it; ``lab shape``/``partition``/... call it)::

    from lab.shaping import shape, unshape, partition, isolate, heal, link_status, resolve_spec
    result = shape(lab, "client", "server", resolve_spec(options={"delay": "40ms"}), check=True)
    result.engine, result.checks       # which engine shaped it, measured vs requested
    result.spec.seed                   # the seed it drew with (picked when none was given)
    partition(lab, "client,rss-poller", "server")   # groups; isolate(lab, "server")

Modules: ``spec`` (units, LinkSpec, profiles), ``builders`` (tc/iptables
argument lists and status parsing, pure), ``expected`` and ``measure``
(self-check arithmetic, pure), ``partitions`` (groups, pure), ``congestion``
(TCP congestion control steps, pure), ``runner`` (helpers and namespaces: the
I/O), ``cli`` (subcommands).
"""

from lab.shaping.builders import Engine
from lab.shaping.errors import SelfCheckFailed, ShapingError, SpecError
from lab.shaping.measure import CheckRow
from lab.shaping.runner import (
    LinkState,
    ShapeResult,
    heal,
    isolate,
    link_rows,
    link_status,
    measure_loss,
    measure_rate,
    measure_rtt,
    partition,
    shape,
    status_tables,
    unshape,
)
from lab.shaping.spec import LinkSpec, load_profiles, resolve_spec

__all__ = [
    "CheckRow",
    "Engine",
    "LinkSpec",
    "LinkState",
    "SelfCheckFailed",
    "ShapeResult",
    "ShapingError",
    "SpecError",
    "heal",
    "isolate",
    "link_rows",
    "link_status",
    "load_profiles",
    "measure_loss",
    "measure_rate",
    "measure_rtt",
    "partition",
    "resolve_spec",
    "shape",
    "status_tables",
    "unshape",
]
