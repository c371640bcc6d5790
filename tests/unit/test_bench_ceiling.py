"""The verified transfer's ceiling, its ratios and the issue's targets (lab.bench.ceiling)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.bench.ceiling import (
    DISK_PARTS,
    TARGETS,
    Ceiling,
    Ratio,
    Target,
    ceiling,
    denominator,
    ratios,
    target_for,
)

# The issue's figures, in bit/s: iperf3, hashlib, the disk, the peer, our fetch today.
ISSUE = {
    "iperf3-tcp": 27.8e9,
    "sha256": 13e9,
    "write-fsync": 3.33e9,
    "write-fsync-behind": 3.1e9,
    "peer": 2.0e9,
    "fetch": 2.95e9,
}
PARTS = ("iperf3-tcp", "sha256", "write-fsync")


def by_name(found: list[Ratio]) -> dict[str, Ratio]:
    return {r.name: r for r in found}


def test_the_ceiling_is_the_slowest_of_network_hash_and_disk() -> None:
    assert ceiling(ISSUE) == Ceiling(bits_per_second=3.33e9, bound_by="write-fsync")
    fast_disk = ISSUE | {"write-fsync": 20e9}
    assert ceiling(fast_disk) == Ceiling(bits_per_second=13e9, bound_by="sha256")
    shaped = ISSUE | {"iperf3-tcp": 0.6e9}
    assert ceiling(shaped) == Ceiling(bits_per_second=0.6e9, bound_by="iperf3-tcp")


def test_the_peer_and_fetch_never_set_the_ceiling() -> None:
    assert ceiling(ISSUE | {"peer": 0.1e9, "fetch": 0.1e9}) == ceiling(ISSUE)


@pytest.mark.parametrize("missing", ["iperf3-tcp", "sha256", DISK_PARTS])
def test_no_ceiling_without_network_hash_and_disk(missing: str | tuple[str, ...]) -> None:
    gone = {missing} if isinstance(missing, str) else set(missing)
    rates = {k: v for k, v in ISSUE.items() if k not in gone}
    assert ceiling(rates) is None
    assert ceiling(rates | dict.fromkeys(gone, 0.0)) is None


def test_the_disk_counts_with_its_faster_write() -> None:
    behind_faster = ISSUE | {"write-fsync": 1.6e9, "write-fsync-behind": 4.4e9}
    assert ceiling(behind_faster) == Ceiling(bits_per_second=4.4e9, bound_by="write-fsync-behind")
    only_plain = {k: v for k, v in ISSUE.items() if k != "write-fsync-behind"}
    assert ceiling(only_plain) == Ceiling(bits_per_second=3.33e9, bound_by="write-fsync")


@given(st.lists(st.floats(min_value=1.0, max_value=1e12), min_size=4, max_size=4))
def test_the_ceiling_is_the_lowest_of_network_hash_and_the_best_disk(values: list[float]) -> None:
    rates = dict(zip((*PARTS, "write-fsync-behind"), values, strict=True))
    found = ceiling(rates)
    assert found is not None
    network, hashing, plain, behind = values
    assert found.bits_per_second == min(network, hashing, max(plain, behind))
    assert rates[found.bound_by] == found.bits_per_second


def test_denominators() -> None:
    assert denominator(ISSUE, "ceiling") == 3.33e9
    assert denominator(ISSUE, "network-or-hash") == 13e9
    assert denominator(ISSUE, "peer") == 2.0e9
    assert denominator(ISSUE, "nothing") is None
    assert denominator(ISSUE | {"peer": 0.0}, "peer") is None


def test_the_issues_figures_give_its_ratios_on_disk() -> None:
    found = by_name(ratios(ISSUE, dest="disk", condition="none"))
    assert found["fetch/ceiling"].value == pytest.approx(0.886, abs=1e-3)
    assert found["fetch/ceiling"].target == 0.9
    assert found["fetch/ceiling"].met is False
    assert found["fetch/peer"].value == pytest.approx(1.475)
    assert found["fetch/peer"].met is False
    assert found["fetch/iperf3"].value == pytest.approx(0.106, abs=1e-3)
    assert found["fetch/iperf3"].target is None
    assert found["peer/ceiling"].value == pytest.approx(2.0 / 3.33)
    # the tmpfs target does not judge a disk run
    assert found["fetch/network-or-hash"].target is None


def test_the_tmpfs_target_is_against_network_or_hash() -> None:
    rates = ISSUE | {"write-fsync": 30e9, "fetch": 8e9}
    found = by_name(ratios(rates, dest="tmpfs", condition="none"))
    assert found["fetch/network-or-hash"].value == pytest.approx(8 / 13)
    assert found["fetch/network-or-hash"].met is True
    assert found["fetch/ceiling"].target is None
    assert found["fetch/peer"].target is None


def test_on_a_shaped_link_the_ceiling_target_holds_and_the_peer_target_does_not() -> None:
    rates = ISSUE | {"iperf3-tcp": 0.6e9, "peer": 0.55e9, "fetch": 0.58e9}
    found = by_name(ratios(rates, dest="disk", condition="delay=20ms loss=1%"))
    assert found["fetch/ceiling"].met is True
    assert found["fetch/peer"].target is None
    assert found["fetch/peer"].met is None


def test_ratios_skip_what_was_not_measured_and_leave_missing_bases_empty() -> None:
    found = by_name(ratios({"fetch": 1e9, "iperf3-tcp": 2e9}, dest="disk", condition="none"))
    assert "peer/ceiling" not in found
    assert "naive/iperf3" not in found
    assert found["fetch/iperf3"].value == pytest.approx(0.5)
    assert found["fetch/ceiling"].value is None
    assert found["fetch/ceiling"].met is None


def test_the_targets_are_the_issues() -> None:
    assert {(t.ratio, t.minimum, t.dest, t.condition) for t in TARGETS} == {
        ("fetch/ceiling", 0.9, "disk", None),
        ("fetch/peer", 1.5, "disk", "none"),
        ("fetch/network-or-hash", 0.6, "tmpfs", None),
    }
    assert target_for("fetch/peer", dest="disk", condition="none") is not None
    assert target_for("fetch/peer", dest="tmpfs", condition="none") is None
    assert target_for("naive/iperf3", dest="disk", condition="none") is None


@pytest.mark.parametrize(
    ("value", "met"),
    [
        pytest.param(0.89, False, id="below"),
        pytest.param(0.9, True, id="exact"),
        pytest.param(None, None, id="no-value"),
    ],
)
def test_target_met(value: float | None, met: bool | None) -> None:
    assert Target(ratio="fetch/ceiling", minimum=0.9).met(value) is met
