"""Before and after one scenario's steps: its TCP congestion control put in force and
its links shaped, then everything it did to the lab undone (links unshaped,
partitions healed, services its faults took away brought back, routes and
congestion control restored).
"""

from __future__ import annotations

from lab import congestion as tcp_congestion
from lab import routing, shaping
from lab.interface import Lab
from lab.progress import Progress
from lab.scenario.faults import RECOVER_ACTIONS, Journal, congestion_overrides
from lab.scenario.plan import Scenario


def set_congestion(lab: Lab, scenario: Scenario, say: Progress) -> dict[str, str]:
    """Put the scenario's ``congestion`` in force; what each of its services uses now."""
    if scenario.congestion.asked:
        overrides = congestion_overrides(scenario, lab.services)
        applied = tcp_congestion.ensure_congestion(lab, overrides=overrides)
        say("TCP congestion control: " + ", ".join(f"{n} {a}" for n, a in applied.items()))
    return tcp_congestion.congestion_in_use(lab, scenario.services)


def shape_links(
    lab: Lab, scenario: Scenario, say: Progress, journal: Journal | None = None
) -> list[str]:
    """Shape the scenario's links; each text names the spec in force, seed included
    (the one the link names, one derived from the scenario's, or one picked now)."""
    shaped = []
    for link in scenario.links:
        if journal is not None:
            journal({"did": f"shaping {link.describe()}"})
        result = shaping.shape(lab, link.source, link.dest, link.spec)
        text = f"{link.source} -> {link.dest}: {result.spec.describe()} (engine {result.engine})"
        say(f"shaped {text}")
        shaped.append(text)
    return shaped


def clean_up(lab: Lab, scenario: Scenario, say: Progress, *, recover_timeout: float) -> None:
    """Undo links, shaping and partitions; bring back services the faults took away."""
    shaped = {(link.source, link.dest) for link in scenario.links}
    shaped |= {(f.services[0], f.services[1]) for f in scenario.faults if f.action == "shape"}
    for source, dest in sorted(shaped):
        shaping.unshape(lab, source, dest)
    partitioned = [f.services for f in scenario.faults if f.action == "partition"]
    for pair in partitioned:
        shaping.heal(lab, *pair)
    touched = {f.services[0] for f in scenario.faults if f.action in RECOVER_ACTIONS}
    for service in sorted(touched):
        _revive(lab, service, say)
    if touched or partitioned:
        lab.wait_healthy(timeout=recover_timeout)
    if touched:
        # A restarted container has a fresh namespace: the routers' routes are gone there.
        for route in routing.ensure_routes(lab):
            say(f"route in {route.instance} again: {route.destination} via {route.via}")
    if touched or scenario.congestion.asked:
        # ... and so is its TCP congestion control; the scenario's own is undone.
        names = sorted(touched) if not scenario.congestion.asked else None
        reset = tcp_congestion.ensure_congestion(lab, names=names, reset=True)
        if scenario.congestion.asked:
            say("TCP congestion control back: " + ", ".join(f"{n} {a}" for n, a in reset.items()))


def _revive(lab: Lab, service: str, say: Progress) -> None:
    state = lab.state(service)
    if state == "paused":
        lab.unpause(service)
        say(f"unpaused {service}")
    elif state in {"exited", "created", "dead"}:
        lab.start(service)
        say(f"started {service} again")
