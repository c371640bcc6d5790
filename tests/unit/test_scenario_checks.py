"""Check verdicts: pure functions over observations, and the reasons they give."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.scenario.checks import (
    FaultRecord,
    FileFacts,
    Observations,
    StepRecord,
    TextFacts,
    capture_sources,
    compare,
    diff_summary,
    evaluate,
    evaluate_fault,
    extract,
    parse_json_output,
)
from lab.scenario.plan import Check, CheckKind, Fault, FileRef, Source

CAPTURE = Source(kind="capture", name="out")


def step(name: str = "s", **fields: Any) -> StepRecord:
    values: dict[str, Any] = {
        "service": "client",
        "argv": ("x",),
        "timeout": 10.0,
        "exit_code": 0,
        "duration": 1.0,
    }
    return StepRecord(name=name, **(values | fields))


def text_check(kind: CheckKind, **fields: Any) -> Check:
    return Check(kind=kind, name=str(kind), source=CAPTURE, **fields)


def with_text(text: str | None, error: str | None = None) -> Observations:
    return Observations(texts={CAPTURE.key: TextFacts(text=text, error=error)})


def facts(ref: str, content: bytes) -> FileFacts:
    return FileFacts(
        ref=ref, sha256=hashlib.sha256(content).hexdigest(), size=len(content), content=content
    )


# --------------------------------------------------------------------------- exit code, duration


EXIT = Check(kind=CheckKind.EXIT_CODE, name="exit", step="s", equals=0)


def test_exit_code_holds() -> None:
    result = evaluate(EXIT, Observations(steps={"s": step()}))
    assert (result.passed, result.detail) == (True, "exit 0")


def test_exit_code_fails_with_stderr_tail() -> None:
    record = step(exit_code=1, stderr="noise\nclient hello: connection refused\n")
    result = evaluate(EXIT, Observations(steps={"s": record}))
    assert not result.passed
    assert result.detail == "exit 1, expected 0: noise | client hello: connection refused"


def test_exit_code_says_timed_out() -> None:
    result = evaluate(EXIT, Observations(steps={"s": step(exit_code=124)}))
    assert not result.passed
    assert result.detail == "exit 124, expected 0 (timed out after 10 s)"


@pytest.mark.parametrize(
    ("steps", "detail"),
    [
        pytest.param({}, "step s did not run", id="missing"),
        pytest.param(
            {"s": step(exit_code=None, error="container is paused")},
            "step s: container is paused",
            id="exec-error",
        ),
    ],
)
def test_exit_code_without_a_result_fails(steps: dict[str, StepRecord], detail: str) -> None:
    result = evaluate(EXIT, Observations(steps=steps))
    assert (result.passed, result.detail) == (False, detail)


@pytest.mark.parametrize(
    ("duration", "low", "high", "passed", "detail"),
    [
        pytest.param(10.3, 8.0, 12.0, True, "took 10.30 s", id="inside"),
        pytest.param(3.0, 8.0, 12.0, False, "took 3.00 s, expected 8..12 s", id="too-fast"),
        pytest.param(30.0, None, 12.0, False, "took 30.00 s, expected 0..12 s", id="too-slow"),
        pytest.param(1.0, 2.0, None, False, "took 1.00 s, expected at least 2 s", id="min-only"),
    ],
)
def test_duration_bounds(
    duration: float, low: float | None, high: float | None, passed: bool, detail: str
) -> None:
    check = Check(kind=CheckKind.DURATION, name="d", step="s", minimum=low, maximum=high)
    result = evaluate(check, Observations(steps={"s": step(duration=duration)}))
    assert (result.passed, result.detail) == (passed, detail)


# --------------------------------------------------------------------------- same file

SAME = Check(
    kind=CheckKind.SAME_FILE,
    name="same",
    files=(FileRef(service="server", path="/a"), FileRef(service="client", path="/b")),
)


def test_same_file_holds_by_sha256() -> None:
    content = b"x" * 1000
    files = {"server:/a": facts("server:/a", content), "client:/b": facts("client:/b", content)}
    result = evaluate(SAME, Observations(files=files))
    assert result.passed
    assert result.detail == f"sha256 {hashlib.sha256(content).hexdigest()} (1000 bytes)"


def test_same_file_failure_summarises_the_difference() -> None:
    a = b"line one\nline two\nline three\n"
    b = b"line one\nline 2\nline three\n"
    files = {"server:/a": facts("server:/a", a), "client:/b": facts("client:/b", b)}
    result = evaluate(SAME, Observations(files=files))
    assert not result.passed
    assert result.detail.startswith("files differ: sha256 ")
    assert f"sizes {len(a)} vs {len(b)} bytes" in result.detail
    assert "first difference at byte 14" in result.detail
    assert "line 2; 2 changed lines" in result.detail
    assert "\n-line two\n+line 2" in result.detail


def test_diff_summary_of_binary_or_big_files_gives_sizes_and_offset() -> None:
    a, b = bytes([0, 1, 2, 255]), bytes([0, 1, 3])
    summary = diff_summary(facts("x:/a", a), facts("y:/b", b))
    assert "sizes 4 vs 3 bytes; first difference at byte 2" in summary
    assert "line" not in summary
    big = diff_summary(
        FileFacts(ref="x:/a", sha256="a" * 64, size=10),
        FileFacts(ref="y:/b", sha256="b" * 64, size=9),
    )
    assert big == "sha256 aaaaaaaaaaaa vs bbbbbbbbbbbb; sizes 10 vs 9 bytes"


def test_a_truncated_copy_differs_at_its_end() -> None:
    a = b"abcdef"
    summary = diff_summary(facts("x:/a", a), facts("y:/b", a[:4]))
    assert "first difference at byte 4" in summary


@pytest.mark.parametrize(
    ("files", "detail"),
    [
        pytest.param({}, "server:/a and client:/b not read", id="none-read"),
        pytest.param(
            {
                "server:/a": facts("server:/a", b"x"),
                "client:/b": FileFacts(ref="client:/b", error="client:/b does not exist"),
            },
            "client:/b: client:/b does not exist",
            id="missing-file",
        ),
    ],
)
def test_same_file_without_both_digests_fails(files: dict[str, FileFacts], detail: str) -> None:
    result = evaluate(SAME, Observations(files=files))
    assert (result.passed, result.detail) == (False, detail)


# --------------------------------------------------------------------------- json_field

STATS = {"valid": 500, "lost": 0, "loss_ratio": 0.04, "ok": True, "sessions": [{"first_seq": 1}]}


@pytest.mark.parametrize(
    ("path", "op", "value", "passed", "detail"),
    [
        pytest.param("valid", "==", 500, True, "valid = 500", id="eq"),
        pytest.param("valid", "==", 499, False, "valid = 500, expected == 499", id="eq-fails"),
        pytest.param("lost", "<=", 0, True, "lost = 0", id="le"),
        pytest.param(
            "sessions[0].first_seq", ">=", 1, True, "sessions[0].first_seq = 1", id="index"
        ),
        pytest.param(
            "sessions.0.first_seq", "==", 1, True, "sessions.0.first_seq = 1", id="dotted"
        ),
        pytest.param(
            "loss_ratio", "between", [0.03, 0.07], True, "loss_ratio = 0.04", id="between"
        ),
        pytest.param(
            "loss_ratio",
            "between",
            [0.05, 0.07],
            False,
            "loss_ratio = 0.04, expected between 0.05 and 0.07",
            id="between-fails",
        ),
        pytest.param("ok", "==", True, True, "ok = True", id="bool"),
        pytest.param(
            "ok", ">=", 1, False, "ok = True, expected >= 1 (not a number)", id="bool-is-not-number"
        ),
        pytest.param("valid", "!=", 0, True, "valid = 500", id="ne"),
    ],
)
def test_json_field(path: str, op: str, value: Any, passed: bool, detail: str) -> None:
    check = text_check(CheckKind.JSON_FIELD, path=path, op=op, value=value)
    result = evaluate(check, with_text("progress line\n" + json.dumps(STATS) + "\n"))
    assert (result.passed, result.detail) == (passed, detail)


@pytest.mark.parametrize(
    ("text", "path", "detail"),
    [
        pytest.param(json.dumps(STATS), "nope", "no field 'nope' in the document", id="no-field"),
        pytest.param(json.dumps(STATS), "sessions[3]", "sessions has 1 items, no [3]", id="index"),
        pytest.param(json.dumps(STATS), "valid.x", "valid is not an object", id="not-object"),
        pytest.param("not json at all", "valid", "no JSON document in the output", id="no-json"),
    ],
)
def test_json_field_failure_reasons(text: str, path: str, detail: str) -> None:
    check = text_check(CheckKind.JSON_FIELD, path=path, op="==", value=1)
    result = evaluate(check, with_text(text))
    assert not result.passed
    assert result.detail.startswith(detail)


def test_a_source_that_could_not_be_read_fails_with_its_error() -> None:
    check = text_check(CheckKind.JSON_FIELD, path="a", op="==", value=1)
    result = evaluate(check, with_text(None, error="GET failed (exit 1): connection refused"))
    assert (result.passed, result.detail) == (
        False,
        "capture:out: GET failed (exit 1): connection refused",
    )
    assert not evaluate(check, Observations()).passed


def test_parse_json_output_prefers_the_whole_text_then_the_last_json_line() -> None:
    assert parse_json_output('{"a": [1,\n 2]}') == {"a": [1, 2]}
    assert parse_json_output('{"first": 1}\nfetched x\n{"last": 2}\n') == {"last": 2}


# max_leaves: nesting is what the property is about, not size (the default grows
# documents of hundreds of leaves, 0.8 s of generation for nothing more).
@given(
    st.recursive(
        st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=12,
    )
)
def test_extract_empty_path_is_the_document(document: Any) -> None:
    assert extract(document, "") == document


@given(st.floats(allow_nan=False), st.floats(allow_nan=False), st.floats(allow_nan=False))
def test_between_agrees_with_both_bounds(x: float, a: float, b: float) -> None:
    low, high = min(a, b), max(a, b)
    assert compare("between", x, [low, high]) == (compare(">=", x, low) and compare("<=", x, high))


# --------------------------------------------------------------------------- text checks


@pytest.mark.parametrize(
    ("text", "count", "passed", "detail"),
    [
        pytest.param("Hello, client\n", None, True, "'Hello' found 1 time(s)", id="present"),
        pytest.param(
            "Hello\nHello\n", 1, False, "'Hello' found 2 time(s), expected exactly 1", id="twice"
        ),
        pytest.param("Goodbye\n", 0, True, "'Hello' found 0 time(s)", id="absent-wanted"),
        pytest.param(
            "Goodbye\n", None, False, "'Hello' found 0 time(s), expected at least once", id="absent"
        ),
    ],
)
def test_stdout_contains(text: str, count: int | None, passed: bool, detail: str) -> None:
    check = text_check(CheckKind.STDOUT_CONTAINS, text="Hello", count=count)
    result = evaluate(check, with_text(text))
    assert result.passed == passed
    assert result.detail.startswith(detail)


@pytest.mark.parametrize(
    ("text", "passed", "detail"),
    [
        pytest.param("x\nalice joined\nbob joined\nbye\n", True, "lines 2, 3, 4", id="in-order"),
        pytest.param(
            "bob joined\nalice joined\nbye\n",
            False,
            "'bob' (line 1) comes before 'alice' (line 2)",
            id="swapped",
        ),
        pytest.param("alice joined\nbye\n", False, "'bob' never appears", id="missing"),
    ],
)
def test_order(text: str, passed: bool, detail: str) -> None:
    check = text_check(CheckKind.ORDER, lines=("alice", "bob", "bye"))
    result = evaluate(check, with_text(text))
    assert (result.passed, result.detail) == (passed, detail)


def test_capture_sources_follow_the_step_records() -> None:
    records = {"a": step("a", stdout="out a"), "b": step("b", exit_code=None, error="boom")}
    texts = capture_sources(records, {"ca": "a", "cb": "b", "cc": "c"})
    assert texts["capture:ca"] == TextFacts(text="out a")
    assert texts["capture:cb"] == TextFacts(text=None, error="step b: boom")
    assert texts["capture:cc"] == TextFacts(text=None, error="step c did not run")


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("record", "passed", "detail"),
    [
        pytest.param({"applied_at": 2.04}, True, "applied at 2.04 s", id="applied"),
        pytest.param(
            {"applied_at": 2.0, "error": "cannot kill server: gone"},
            False,
            "cannot kill server: gone",
            id="error",
        ),
        pytest.param({}, False, "not applied", id="never"),
    ],
)
def test_a_fault_that_did_not_happen_fails(
    record: dict[str, Any], passed: bool, detail: str
) -> None:
    fault = Fault(at=2.0, action="kill", services=("server",), line=7)
    result = evaluate_fault(FaultRecord(fault=fault, **record))
    assert (result.name, result.passed, result.detail, result.line) == (
        "fault at 2 s: kill server",
        passed,
        detail,
        7,
    )
