"""Idle CPU arithmetic and counter parsing (lab.bench.idle), without Docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.bench.errors import BenchError
from lab.bench.idle import (
    CpuSample,
    cgroup_counter_paths,
    idle_cpu,
    parse_counter,
    read_cgroup_usage,
    sample,
)


def test_percent_of_one_core_per_service_and_in_total() -> None:
    before = CpuSample(at=100.0, usage_ns={"server": 1_000_000_000, "client": 5})
    after = CpuSample(at=130.0, usage_ns={"server": 1_150_000_000, "client": 5 + 300_000_000})
    idle = idle_cpu(before, after)
    assert idle.seconds == 30.0
    assert idle.per_service == {"server": pytest.approx(0.5), "client": pytest.approx(1.0)}
    assert idle.total == pytest.approx(1.5)
    assert idle.within_target
    assert idle.as_json()["total_percent_of_one_core"] == 1.5
    assert idle.rows()[-1] == {"service": "lab (total)", "idle CPU": "1.50 %"}


def test_the_old_lab_missed_the_target() -> None:
    # What issue 18 measured: 20 % of one core for four idle services.
    before = CpuSample(at=0.0, usage_ns={s: 0 for s in ("a", "b", "c", "d")})
    after = CpuSample(at=30.0, usage_ns={s: 1_500_000_000 for s in ("a", "b", "c", "d")})
    assert idle_cpu(before, after).total == pytest.approx(20.0)
    assert not idle_cpu(before, after).within_target


@pytest.mark.parametrize(
    ("after", "message"),
    [
        pytest.param(CpuSample(at=10.0, usage_ns={"s": 5}), "went back", id="restarted"),
        pytest.param(CpuSample(at=10.0, usage_ns={}), "disappeared", id="gone"),
        pytest.param(CpuSample(at=0.0, usage_ns={"s": 50}), "not later", id="same-time"),
    ],
)
def test_samples_that_do_not_make_a_measurement(after: CpuSample, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        idle_cpu(CpuSample(at=0.0, usage_ns={"s": 10}), after)


def test_counters_v1_and_v2(tmp_path: Path) -> None:
    v1, _, v2, _ = cgroup_counter_paths("abc", root=tmp_path)
    assert parse_counter(v1, "123456789\n") == 123456789
    assert parse_counter(v2, "usage_usec 2500\nuser_usec 2000\n") == 2_500_000
    with pytest.raises(ValueError, match="usage_usec"):
        parse_counter(v2, "user_usec 1\n")
    assert read_cgroup_usage("abc", root=tmp_path) is None
    v2.parent.mkdir(parents=True)
    v2.write_text("usage_usec 7\n")
    assert read_cgroup_usage("abc", root=tmp_path) == 7000
    v1.parent.mkdir(parents=True)
    v1.write_text("42\n")
    assert read_cgroup_usage("abc", root=tmp_path) == 42, "v1 first"


def test_sample_falls_back_to_the_next_reader() -> None:
    readings = {"id-a": None, "id-b": 9}
    got = sample(
        {"a": "id-a", "b": "id-b"},
        readers=[lambda cid: readings[cid], lambda cid: 1],
        clock=lambda: 5.0,
    )
    assert got == CpuSample(at=5.0, usage_ns={"a": 1, "b": 9})
    with pytest.raises(BenchError, match="no CPU counter readable for a"):
        sample({"a": "id-a"}, readers=[lambda cid: None])
