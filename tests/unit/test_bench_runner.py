"""The pure helpers of lab.bench.runner: tool output parsing and readiness checks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lab.api import ServiceStatus
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


class FakeLab:
    project = "fake"

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        self.rows = rows

    def status(self) -> list[ServiceStatus]:
        return [
            ServiceStatus(service=s, state=state, health=health, ip="-", container="c", image="i")
            for s, state, health in self.rows
        ]


def test_require_services_ok() -> None:
    lab: Any = FakeLab([("server", "running", "healthy"), ("client", "running", "healthy")])
    require_services(lab, ("server", "client"))


def test_require_services_names_what_is_missing() -> None:
    lab: Any = FakeLab([("server", "running", "starting")])
    with pytest.raises(BenchError, match=r"server, client not running and healthy.*lab -p fake up"):
        require_services(lab, ("server", "client"))


def test_bench_options_presets() -> None:
    quick, full = BenchOptions.short(), BenchOptions.full()
    assert quick.quick is True
    assert [c.describe() for c in quick.conditions] == ["none"]
    assert [c.describe() for c in full.conditions] == ["none", "delay=20ms loss=1%"]
    assert quick.file_bytes < full.file_bytes
