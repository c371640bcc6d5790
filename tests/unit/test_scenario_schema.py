"""Scenario files: YAML with line numbers, schema errors that name file, line and problem."""

from __future__ import annotations

import textwrap

import pytest

from lab.scenario.errors import ScenarioError
from lab.scenario.loader import format_path, parse_text
from lab.scenario.schema import validate

FILE = "scenarios/x.yaml"

VALID = """\
name: x
description: a valid scenario
steps:
  - service: client
    run: [socketlab, client, hello]
    timeout: 30
    capture: out
checks:
  - kind: stdout_contains
    capture: out
    text: Hello
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        validate(parse_text(textwrap.dedent(text), file=FILE))
    return caught.value.problems


def test_a_valid_file_passes() -> None:
    validate(parse_text(VALID, file=FILE))


def test_lines_are_recorded_for_keys_and_list_items() -> None:
    document = parse_text(VALID, file=FILE)
    assert document.line(("steps", 0)) == 4
    assert document.line(("steps", 0, "timeout")) == 6
    assert document.line(("checks", 0, "text")) == 11
    # unknown paths fall back to the nearest ancestor
    assert document.line(("steps", 0, "nope", 3)) == 4
    assert document.where(("steps", 0, "run")) == f"{FILE}:5: steps[0].run"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        pytest.param(("steps", 2, "timeout"), "steps[2].timeout", id="index-then-key"),
        pytest.param(("name",), "name", id="top-level"),
        pytest.param(("checks", 0, "lines", 1), "checks[0].lines[1]", id="nested-index"),
        pytest.param((), "", id="root"),
    ],
)
def test_format_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_path(path) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            VALID.replace("timeout: 30", "timeout: '10 seconds'"),
            f"{FILE}:6: steps[0].timeout: '10 seconds' is not a number",
            id="wrong-type",
        ),
        pytest.param(
            VALID.replace("timeout: 30", "timeout: 30\n    timout: 3"),
            f"{FILE}:7: steps[0].timout: unknown key (known: background, capture, "
            "daemon, env, expect_exit, grace, name, parallel, run, service, timeout)",
            id="unknown-key-points-at-the-key",
        ),
        pytest.param(
            VALID.replace("    timeout: 30\n", ""),
            f"{FILE}:4: steps[0]: missing required key 'timeout'",
            id="missing-key",
        ),
        pytest.param(
            VALID.replace("kind: stdout_contains", "kind: explode"),
            f"{FILE}:9: checks[0].kind: 'explode' is not one of: exit_code, same_file, "
            "json_field, duration, stdout_contains, stdout_matches, order, pcap",
            id="unknown-check-kind",
        ),
        pytest.param(
            VALID.replace("timeout: 30", "timeout: 0"),
            f"{FILE}:6: steps[0].timeout: 0 must be more than 0",
            id="zero-timeout",
        ),
        pytest.param(
            VALID.replace("run: [socketlab, client, hello]", "run: socketlab client hello"),
            f"{FILE}:5: steps[0].run: 'socketlab client hello' is not a list",
            id="run-must-be-argv",
        ),
        pytest.param(
            VALID.replace("    text: Hello\n", "    text: Hello\n    count: many\n"),
            f"{FILE}:12: checks[0].count: 'many' is not an integer",
            id="kind-specific-field-type",
        ),
        pytest.param(
            VALID + "faults:\n  - at: 1\n    heal: sometimes\n",
            f"{FILE}:14: faults[0].heal: 'sometimes' is not a pair of services [a, b] or 'all'",
            id="heal-pair-or-all",
        ),
        pytest.param(
            VALID + "  - kind: duration\n    step: step-1\n",
            f"{FILE}:12: checks[1]: needs 'min' or 'max'",
            id="duration-needs-a-bound",
        ),
        pytest.param(
            VALID.replace("checks:\n", "checks: []\nx:\n"),
            f"{FILE}:8: checks: needs at least 1 item(s)",
            id="at-least-one-check",
        ),
    ],
)
def test_schema_problem_is_named_with_file_and_line(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_every_problem_is_reported_in_line_order() -> None:
    text = VALID.replace("timeout: 30", "timeout: x").replace("text: Hello", "text: 5")
    found = problems(text)
    assert [p.split(":")[1] for p in found] == ["6", "11"]


def test_bad_yaml_names_the_line() -> None:
    found = problems("name: x\nsteps:\n  - run: [a\n  - b\n")
    assert len(found) == 1
    assert found[0].startswith(f"{FILE}:")
    assert "not valid YAML" in found[0]


def test_duplicate_keys_are_refused_with_their_line() -> None:
    found = problems(VALID.replace("    capture: out\n", "    capture: out\n    timeout: 5\n"))
    assert found == [f"{FILE}:8: steps[0].timeout: key given twice"]


def test_empty_file() -> None:
    assert problems("") == [f"{FILE}:1: the file is empty"]


def test_top_level_must_be_a_mapping() -> None:
    assert problems("- a\n- b\n") == [f"{FILE}:1: ['a', 'b'] is not a mapping"]
