"""What the bench's tools print, parsed: the JSON line our commands end with, a checked
number in it, and iperf3's ``-J`` document.

Pure: text in, dicts and numbers out, or a BenchError naming the tool.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

from lab.bench.errors import BenchError


def figure(report: dict[str, Any], key: str, *, what: str) -> float:
    """A finite, non-negative number from a tool's JSON; BenchError naming it otherwise."""
    value = report.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BenchError(f"{what} reported no number {key!r}: {value!r}")
    if not math.isfinite(value) or value < 0:
        raise BenchError(f"{what} reported {key} = {value!r}")
    return float(value)


def last_json(text: str, *, what: str) -> dict[str, Any]:
    """The last line of ``text`` that is a JSON object (our commands end with one)."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    return parsed
    raise BenchError(f"{what} printed no JSON result: {text.strip()[-300:]!r}")


def parse_iperf3_json(text: str) -> dict[str, Any]:
    """The ``iperf3 -J`` document; BenchError with iperf3's own message on failure."""
    try:
        report = json.loads(text)
    except ValueError as exc:
        raise BenchError(f"iperf3 printed no JSON: {text.strip()[:300]!r}") from exc
    if not isinstance(report, dict):
        raise BenchError("iperf3 JSON is not an object")
    if report.get("error"):
        raise BenchError(f"iperf3: {report['error']}")
    received = report.get("end", {}).get("sum_received")
    if not isinstance(received, dict) or "bits_per_second" not in received:
        raise BenchError("iperf3 JSON has no end.sum_received (iperf3 older than 3.x?)")
    return report
