"""The pure helpers of lab.bench.runner: tool output parsing and readiness checks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lab.bench.errors import BenchError
from lab.bench.runner import (
    BenchOptions,
    last_json,
    parse_iperf3_json,
    require_services,
)

IPERF_OK = {
    "start": {"version": "iperf 3.12"},
    "end": {"sum_received": {"bytes": 1000, "seconds": 1.0, "bits_per_second": 8000.0}},
}


def test_parse_iperf3_json_ok() -> None:
    report = parse_iperf3_json(json.dumps(IPERF_OK))
    assert report["end"]["sum_received"]["bits_per_second"] == 8000.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("iperf3: error", "iperf3 printed no JSON", id="not-json"),
        pytest.param("[1]", "not an object", id="array"),
        pytest.param(
            json.dumps({"error": "unable to connect to server: Connection refused"}),
            "iperf3: unable to connect to server",
            id="iperf3-error",
        ),
        pytest.param(json.dumps({"end": {}}), "no end.sum_received", id="no-summary"),
    ],
)
def test_parse_iperf3_json_errors(text: str, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        parse_iperf3_json(text)


def test_last_json_takes_the_final_object() -> None:
    text = 'progress\n{"a": 1}\nnot json {\n{"command": "fetch", "ok": true}\n'
    assert last_json(text, what="fetch") == {"command": "fetch", "ok": True}


def test_last_json_skips_broken_lines() -> None:
    assert last_json('{"a": 1}\n{broken\n', what="x") == {"a": 1}


def test_last_json_without_any() -> None:
    with pytest.raises(BenchError, match="fetch printed no JSON result"):
        last_json("Traceback ...\n", what="fetch")


def test_require_services_ok(fake_lab: Any) -> None:
    require_services(fake_lab, ("server", "client"))


def test_require_services_names_what_is_missing(fake_lab: Any) -> None:
    fake_lab.health["server"] = "starting"
    fake_lab.states["client"] = "exited"
    with pytest.raises(
        BenchError, match=r"\(server, client, nobody not running and healthy\).*lab -p fake up"
    ):
        require_services(fake_lab, ("server", "client", "udp-listener", "nobody"))


def test_bench_options_presets() -> None:
    quick, full = BenchOptions.short(), BenchOptions.full()
    assert quick.quick is True
    assert [c.describe() for c in quick.conditions] == ["none"]
    assert [c.describe() for c in full.conditions] == ["none", "delay=20ms loss=1%"]
    assert quick.file_bytes < full.file_bytes
