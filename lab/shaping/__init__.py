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
(TCP congestion control steps, pure), ``links`` (what a pair of names means on
the topology, pure); the I/O: ``helpers`` (shaper helpers and namespace
commands), ``shape`` (shape, unshape), ``cuts`` (partition, isolate, heal),
``status`` (helpers against the rules in force), ``selfcheck`` (measurements);
``cli`` (subcommands).
"""

from lab.shaping.builders import Engine
from lab.shaping.cuts import heal, isolate, partition
from lab.shaping.errors import SelfCheckFailed, ShapingError, SpecError
from lab.shaping.measure import CheckRow
from lab.shaping.selfcheck import measure_loss, measure_rate, measure_rtt
from lab.shaping.shape import ShapeResult, shape, unshape
from lab.shaping.spec import LinkSpec, load_profiles, resolve_spec
from lab.shaping.status import LinkState, link_rows, link_status, status_tables

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
