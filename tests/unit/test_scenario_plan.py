"""Plan building: YAML -> frozen dataclasses, variables, cross-reference errors with lines."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import yaml

from lab.scenario.errors import ScenarioError
from lab.scenario.loader import parse_text
from lab.scenario.plan import (
    CheckKind,
    Congestion,
    FileRef,
    Scenario,
    build_scenario,
    derive_seed,
    load_scenario,
    phases,
)
from lab.scenario.session import placeholder_variables, scenario_files
from lab.shaping.spec import LinkSpec

FILE = "scenarios/p.yaml"
SERVICES = ("server", "client", "udp-listener", "rss-poller")
REPO = Path(__file__).resolve().parents[2]

FULL = """\
name: full
description: every part of the format
links:
  - {from: client, to: server, delay: 40ms, loss: 2%}
steps:
  - name: reset
    service: client
    run: [socketlab, udp-stats, --reset]
    timeout: 10
  - name: a
    service: client
    run: [echo, "${RUN_ID}"]
    timeout: 5
    parallel: pair
    capture: out-a
  - name: b
    service: server
    run: [echo, b]
    timeout: 5
    parallel: pair
    expect_exit: null
  - name: watch
    service: client
    run: [sleep, "3"]
    timeout: 10
    background: true
    env: {X: "1"}
faults:
  - {at: 2.5, partition: [client, server]}
  - {at: 1, kill: udp-listener}
  - {at: 3, heal: all}
  - {at: 4, shape: {from: server, to: client, loss: 5%}}
checks:
  - {kind: exit_code, step: b, equals: 0}
  - {kind: same_file, a: "server:/srv/a", b: "client:/tmp/${RUN_ID}/a"}
  - {kind: json_field, capture: out-a, path: "sessions[0].lost", op: between, value: [0, 3]}
  - {kind: json_field, url: "http://udp-listener:37021/stats", path: valid, op: ">=", value: 1, within: 5}
  - {kind: duration, step: a, min: 0, max: 2}
  - {kind: stdout_contains, logs: rss-poller, stream: both, text: Hello, count: 1, name: hi once}
  - {kind: order, capture: out-a, lines: [one, two]}
"""


def build(text: str, **variables: str) -> Scenario:
    document = parse_text(textwrap.dedent(text), file=FILE)
    return build_scenario(document, services=SERVICES, variables={"RUN_ID": "r1", **variables})


def problems(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        build(text)
    return caught.value.problems


def test_full_scenario_builds_into_frozen_values() -> None:
    scenario = build(FULL)
    assert scenario.name == "full"
    assert scenario.file == FILE
    (link,) = scenario.links
    assert (link.source, link.dest) == ("client", "server")
    assert link.spec == LinkSpec(delay=0.04, loss=0.02)
    a = scenario.step("a")
    assert a.run == ("echo", "r1")  # ${RUN_ID} substituted
    assert (a.parallel, a.capture, a.expect_exit, a.line) == ("pair", "out-a", 0, 10)
    assert scenario.step("b").expect_exit is None
    assert scenario.step("watch").background
    assert scenario.step("watch").env == (("X", "1"),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.timeout = 1  # type: ignore[misc]


def test_faults_are_sorted_by_time_and_described() -> None:
    faults = build(FULL).faults
    assert [f.at for f in faults] == [1.0, 2.5, 3.0, 4.0]
    assert [f.describe() for f in faults] == [
        "kill udp-listener",
        "partition client server",
        "heal all",
        "shape server -> client: loss=5%",
    ]
    assert faults[3].spec == LinkSpec(loss=0.05)


def test_checks_get_typed_fields_and_default_names() -> None:
    checks = build(FULL).checks
    implicit = [c for c in checks if c.implicit]
    # every step that expects an exit code gets an implicit check; b said expect_exit: null
    assert [c.step for c in implicit] == ["reset", "a", "watch"]
    assert all(c.kind is CheckKind.EXIT_CODE and c.equals == 0 for c in implicit)
    written = [c for c in checks if not c.implicit]
    assert [c.kind for c in written] == [
        CheckKind.EXIT_CODE,
        CheckKind.SAME_FILE,
        CheckKind.JSON_FIELD,
        CheckKind.JSON_FIELD,
        CheckKind.DURATION,
        CheckKind.STDOUT_CONTAINS,
        CheckKind.ORDER,
    ]
    same = written[1]
    assert same.files == (
        FileRef(service="server", path="/srv/a"),
        FileRef(service="client", path="/tmp/r1/a"),
    )
    assert same.name == "same file server:/srv/a = client:/tmp/r1/a"
    url = written[3]
    assert url.source is not None
    assert (url.source.kind, url.source.via, url.within) == ("url", "client", 5.0)
    assert url.source.dynamic
    assert written[5].name == "hi once"
    assert written[5].source is not None
    assert written[5].source.key == "logs:rss-poller/both"
    assert written[2].name == "capture:out-a sessions[0].lost between [0, 3]"


def test_phases_group_consecutive_parallel_steps() -> None:
    scenario = build(FULL)
    assert [[s.name for s in phase] for phase in phases(scenario.steps)] == [
        ["reset"],
        ["a", "b"],
        ["watch"],
    ]


def test_services_lists_everything_touched() -> None:
    assert build(FULL).services == ("client", "server", "udp-listener")


MINIMAL = """\
name: m
description: d
steps:
  - name: s
    service: client
    run: ["true"]
    timeout: 5
    capture: out
checks:
  - {kind: stdout_contains, capture: out, text: x}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            MINIMAL.replace("service: client", "service: clinet"),
            f"{FILE}:5: steps[0].service: no service 'clinet' in the lab",
            id="unknown-service",
        ),
        pytest.param(
            MINIMAL.replace("capture: out, text", "capture: nope, text"),
            f"{FILE}:10: checks[0].capture: no step captures 'nope' (captures: out)",
            id="unknown-capture",
        ),
        pytest.param(
            MINIMAL + "  - {kind: duration, step: t, max: 1}\n",
            f"{FILE}:11: checks[1].step: no step named 't' (steps: s)",
            id="unknown-step",
        ),
        pytest.param(
            MINIMAL + "  - {kind: json_field, capture: out, path: a, op: between, value: 3}\n",
            f"{FILE}:11: checks[1].value: 'between' needs [low, high] (two numbers)",
            id="between-needs-a-pair",
        ),
        pytest.param(
            MINIMAL + "  - {kind: json_field, capture: out, path: a, op: '<=', value: lots}\n",
            f"{FILE}:11: checks[1].value: '<=' needs a number, not 'lots'",
            id="ordering-needs-a-number",
        ),
        pytest.param(
            MINIMAL + "  - {kind: duration, step: s, min: 5, max: 1}\n",
            f"{FILE}:11: checks[1]: min 5 is above max 1",
            id="duration-bounds",
        ),
        pytest.param(
            MINIMAL + "  - {kind: order, capture: out, url: 'http://x/', lines: [a, b]}\n",
            f"{FILE}:11: checks[1]: needs exactly one source: capture, url or logs",
            id="two-sources",
        ),
        pytest.param(
            MINIMAL + "  - {kind: order, capture: out, within: 3, lines: [a, b]}\n",
            f"{FILE}:11: checks[1].within: a capture does not change: 'within' needs url or logs",
            id="within-on-capture",
        ),
        pytest.param(
            MINIMAL + "links:\n  - {from: client, to: server, loss: 2}\n",
            f"{FILE}:12: links[0]: loss: '2' is not a percentage (use e.g. 2%, 0.5%)",
            id="shaping-value",
        ),
        pytest.param(
            MINIMAL + "links:\n  - {from: client, to: client, loss: 2%}\n",
            f"{FILE}:12: links[0]: a link needs two different services (got 'client' twice)",
            id="link-to-itself",
        ),
        pytest.param(
            MINIMAL + "links:\n  - {from: client, to: server, profile: moon}\n",
            f"{FILE}:12: links[0]: profile: no profile 'moon'",
            id="unknown-profile",
        ),
        pytest.param(
            MINIMAL + "faults:\n  - {at: 1, kill: server, pause: client}\n",
            f"{FILE}:12: faults[0]: a fault does exactly one of:",
            id="two-fault-actions",
        ),
        pytest.param(
            MINIMAL + "faults:\n  - {at: 1}\n",
            f"{FILE}:12: faults[0]: a fault does exactly one of:",
            id="no-fault-action",
        ),
        pytest.param(
            MINIMAL + "faults:\n  - {at: 1, partition: [server, server]}\n",
            f"{FILE}:12: faults[0].partition: cannot partition 'server' from itself",
            id="partition-itself",
        ),
        pytest.param(
            MINIMAL.replace('run: ["true"]', "run: [echo, '${NOPE}']"),
            f"{FILE}:6: steps[0].run[1]: unknown variable ${{NOPE}} (known: ${{RUN_ID}})",
            id="unknown-variable",
        ),
        pytest.param(
            MINIMAL.replace(
                "    capture: out\n", "    capture: out\n    parallel: g\n    background: true\n"
            ),
            f"{FILE}:9: steps[0].parallel: a step is either in a parallel group or background",
            id="parallel-and-background",
        ),
    ],
)
def test_plan_problem_names_file_line_and_what(text: str, expected: str) -> None:
    found = problems(text)
    assert any(problem.startswith(expected) for problem in found), found


def test_faults_after_a_step_are_ordered_by_that_step() -> None:
    text = """\
    name: m
    description: d
    steps:
      - {name: a, service: client, run: ["true"], timeout: 5}
      - {name: b, service: client, run: ["true"], timeout: 5}
    faults:
      - {at: 0.5, after: b, start: server}
      - {at: 0.2, after: b, kill: server}
      - {at: 3, pause: client}
    checks:
      - {kind: duration, step: a, max: 1}
    """
    faults = build(text).faults
    assert [(f.when, f.action) for f in faults] == [
        ("at 3 s", "pause"),
        ("at 0.2 s after b", "kill"),
        ("at 0.5 s after b", "start"),
    ]
    assert not any(f.upfront for f in faults)


def test_fault_after_an_unknown_step() -> None:
    text = MINIMAL + "faults:\n  - {at: 1, after: nope, kill: server}\n"
    assert problems(text) == [f"{FILE}:12: faults[0].after: no step named 'nope' (steps: s)"]


def test_parallel_group_must_be_consecutive() -> None:
    text = """\
    name: m
    description: d
    steps:
      - {name: a, service: client, run: ["true"], timeout: 5, parallel: g}
      - {name: b, service: client, run: ["true"], timeout: 5}
      - {name: c, service: client, run: ["true"], timeout: 5, parallel: g}
    checks:
      - {kind: duration, step: a, max: 1}
    """
    assert problems(text) == [
        f"{FILE}:6: steps[2].parallel: parallel group 'g' must be consecutive steps"
    ]


def test_duplicate_step_names() -> None:
    text = MINIMAL.replace(
        "checks:", "  - {name: s, service: client, run: ['true'], timeout: 5}\nchecks:"
    )
    assert problems(text) == [f"{FILE}:9: steps[1].name: step name 's' used twice"]


def test_services_are_not_checked_when_unknown() -> None:
    document = parse_text(MINIMAL.replace("service: client", "service: anything"), file=FILE)
    assert build_scenario(document).steps[0].service == "anything"


def test_shipped_scenarios_are_valid_and_unique() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = list(compose["services"])
    files = scenario_files(REPO / "scenarios")
    names = set()
    for path in files:
        scenario = load_scenario(path, services=services, variables=placeholder_variables(services))
        assert scenario.name == path.stem, f"{path.name}: name should match the file name"
        assert any(not check.implicit for check in scenario.checks), path
        names.add(scenario.name)
    assert {"hello", "udp-basic", "rss-basic"} <= names


# --------------------------------------------------------------------------- impairments


def with_faults(faults: str, head: str = "") -> str:
    return MINIMAL.replace("steps:\n", head + "steps:\n") + "faults:\n" + faults


def test_flap_expands_into_timed_partitions_and_heals() -> None:
    scenario = build(
        with_faults("  - {at: 2, flap: {between: [client, server], down: 1, up: 3, times: 3}}\n")
    )
    assert [(f.at, f.action, f.services) for f in scenario.faults] == [
        (2.0, "partition", ("client", "server")),
        (3.0, "heal", ("client", "server")),
        (6.0, "partition", ("client", "server")),
        (7.0, "heal", ("client", "server")),
        (10.0, "partition", ("client", "server")),
        (11.0, "heal", ("client", "server")),
    ]
    assert scenario.faults[2].describe() == "partition client server (flap 2/3)"
    assert {f.line for f in scenario.faults} == {12}


def test_flap_interleaves_with_other_faults_and_follows_a_step() -> None:
    scenario = build(
        with_faults(
            "  - {at: 0.5, after: s, flap: {between: [client, server], down: 0.5, up: 0.5, times: 2}}\n"
            "  - {at: 1.2, after: s, kill: udp-listener}\n"
        )
    )
    assert [(f.at, f.action) for f in scenario.faults] == [
        (0.5, "partition"),
        (1.0, "heal"),
        (1.2, "kill"),
        (1.5, "partition"),
        (2.0, "heal"),
    ]
    assert {f.after for f in scenario.faults} == {"s"}


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param(
            "  - {at: 1, flap: {between: [client, client], down: 1, up: 1, times: 2}}\n",
            f"{FILE}:12: faults[0].flap.between: cannot flap 'client' with itself",
            id="flap-itself",
        ),
        pytest.param(
            "  - {at: 1, flap: {between: [client, server], down: 0, up: 1, times: 2}}\n",
            f"{FILE}:12: faults[0].flap.down: 0 must be more than 0",
            id="flap-zero-down",
        ),
        pytest.param(
            "  - {at: 1, flap: {between: [client, server], down: 1, up: 1, times: 0}}\n",
            f"{FILE}:12: faults[0].flap.times: 0 must be at least 1",
            id="flap-no-times",
        ),
        pytest.param(
            "  - {at: 1, flap: {between: [client, server], down: 1, up: 1}}\n",
            f"{FILE}:12: faults[0].flap: missing required key 'times'",
            id="flap-incomplete",
        ),
        pytest.param(
            "  - {at: 1, flap: {between: [client, nobody], down: 1, up: 1, times: 1}}\n",
            f"{FILE}:12: faults[0].flap: no service 'nobody' in the lab",
            id="flap-unknown-service",
        ),
        pytest.param(
            "  - {at: 1, shape: {from: client, to: server, loss_burst: 3}}\n",
            f"{FILE}:12: faults[0].shape: loss_burst: needs loss",
            id="yaml-keys-in-shaping-errors",
        ),
        pytest.param(
            "  - {at: 1, shape: {from: client, to: server, delay: 5ms, delay_distribution: normal}}\n",
            f"{FILE}:12: faults[0].shape: delay_distribution: needs jitter",
            id="distribution-without-jitter",
        ),
    ],
)
def test_impairment_problems_in_yaml_words(fault: str, expected: str) -> None:
    found = problems(with_faults(fault))
    assert any(p.startswith(expected) for p in found), found


LINKS = """\
seed: 42
links:
  - {from: client, to: server, loss: 5%, loss_burst: 3, delay: 20ms, jitter: 5ms, delay_distribution: normal}
  - {from: server, to: client, delay: 20ms, seed: 7}
  - {from: client, to: rss-poller, rate: 10mbit, queue_limit: 64kb}
"""


def test_newer_shaping_keys_and_seeds_per_link() -> None:
    scenario = build(MINIMAL.replace("steps:\n", LINKS + "steps:\n"))
    bursty, back, queued = scenario.links
    assert bursty.spec.loss_burst == 3.0
    assert bursty.spec.gilbert_elliott is not None
    assert queued.spec.queue_limit is not None
    assert scenario.seed == 42
    # the scenario's seed gives each link its own, stable seed; a link's own seed wins
    assert back.spec.seed == 7
    assert bursty.spec.seed == derive_seed(42, "link client->server")
    assert queued.spec.seed not in {None, bursty.spec.seed}
    assert build(MINIMAL.replace("steps:\n", LINKS + "steps:\n")).links == scenario.links


def test_without_a_seed_links_have_none() -> None:
    scenario = build(
        MINIMAL.replace("steps:\n", "links:\n  - {from: client, to: server, loss: 1%}\nsteps:\n")
    )
    assert scenario.seed is None
    assert scenario.links[0].spec.seed is None


def test_shape_faults_get_derived_seeds_of_their_own() -> None:
    scenario = build(
        with_faults(
            "  - {at: 1, shape: {from: client, to: server, loss: 1%}}\n"
            "  - {at: 2, shape: {from: client, to: server, loss: 2%}}\n",
            head="seed: 5\n",
        )
    )
    first, second = (f.spec.seed for f in scenario.faults if f.spec is not None)
    assert None not in (first, second)
    assert first != second


def test_a_run_seed_replaces_the_files_seed() -> None:
    text = MINIMAL.replace("steps:\n", LINKS + "steps:\n")
    scenario = build_scenario(parse_text(text, file=FILE), services=SERVICES, seed=9)
    assert scenario.seed == 9
    assert scenario.links[0].spec.seed == derive_seed(9, "link client->server")
    assert scenario.links[1].spec.seed == 7  # a link's own seed still wins
    with pytest.raises(ScenarioError, match=r"seed -1 is outside 0\.\."):
        build_scenario(parse_text(text, file=FILE), services=SERVICES, seed=-1)


def test_derive_seed_is_stable_and_64_bit() -> None:
    assert derive_seed(1, "link a->b") == derive_seed(1, "link a->b")
    assert derive_seed(1, "link a->b") != derive_seed(2, "link a->b")
    assert 0 <= derive_seed(2**64 - 1, "x") < 2**64


def test_congestion_for_all_or_per_service() -> None:
    everyone = build(MINIMAL.replace("steps:\n", "congestion: cubic\nsteps:\n")).congestion
    assert everyone == Congestion(default="cubic")
    assert everyone.for_service("server") == "cubic"
    per = build(
        MINIMAL.replace("steps:\n", "congestion: {client: cubic, server: bbr}\nsteps:\n")
    ).congestion
    assert (
        per.for_service("client"),
        per.for_service("server"),
        per.for_service("rss-poller"),
    ) == ("cubic", "bbr", None)
    assert per.asked
    assert not build(MINIMAL).congestion.asked


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(
            "congestion: cubicc\n",
            f"{FILE}:3: congestion: 'cubicc' is not a TCP congestion control (one of: reno, cubic,",
            id="unknown-algorithm",
        ),
        pytest.param(
            "congestion: {clinet: cubic}\n",
            f"{FILE}:3: congestion.clinet: no service 'clinet' in the lab",
            id="unknown-service",
        ),
        pytest.param(
            "congestion: {}\n",
            f"{FILE}:3: congestion: {{}} is not an algorithm (cubic) or a mapping",
            id="empty-mapping",
        ),
        pytest.param("seed: -1\n", f"{FILE}:3: seed: -1 must be at least 0", id="negative-seed"),
        pytest.param("seed: lucky\n", f"{FILE}:3: seed: 'lucky' is not an integer", id="word-seed"),
    ],
)
def test_scenario_seed_and_congestion_problems(head: str, expected: str) -> None:
    found = problems(MINIMAL.replace("steps:\n", head + "steps:\n"))
    assert any(p.startswith(expected) for p in found), found
