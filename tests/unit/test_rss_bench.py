"""RSS benchmarks (``make bench``): reported, never asserted.

What a poll costs: parsing a lab-sized feed, neutralising a capped-size document,
and one conditional poll over loopback answered 304 versus 200. Read the numbers
as ratios within one run (304 vs 200), not as absolutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from socketlab.rss.entries import parse_feed
from socketlab.rss.feed_server import FeedServer, ServerOptions
from socketlab.rss.feeds import FeedRegistry
from socketlab.rss.fetch import Validators, fetch
from socketlab.rss.safety import neutralise

pytestmark = pytest.mark.benchmark


def lab_feed(entries: int) -> bytes:
    registry = FeedRegistry(
        base_url="http://server:8080", window=entries, seed_entries=0, max_entries=entries
    )
    for number in range(entries):
        registry.publish("bench", title=f"Entry {number}", summary="lorem ipsum " * 20)
    rendered = registry.render("bench", "rss")
    assert rendered is not None
    return rendered.body


@pytest.fixture(scope="module")
def server() -> Iterator[FeedServer]:
    feed_server = FeedServer(ServerOptions(host="127.0.0.1", port=0, window=50))
    for number in range(50):
        feed_server.registry.publish("bench", title=f"Entry {number}", summary="x" * 200)
    feed_server.start()
    yield feed_server
    feed_server.close()


def test_bench_parse_a_50_entry_feed(benchmark: Any) -> None:
    body = lab_feed(50)
    parsed = benchmark(parse_feed, body, url="http://server:8080/feeds/bench.rss")
    assert len(parsed.items) == 50


def test_bench_neutralise_a_5_mib_document(benchmark: Any) -> None:
    big = lab_feed(10_000)  # one well-formed document, so the DTD check parses all of it
    result = benchmark(neutralise, big)
    benchmark.extra_info["mib"] = round(len(big) / 2**20, 2)
    assert result.removed == ()


@pytest.mark.parametrize(
    "conditional", [pytest.param(False, id="full-200"), pytest.param(True, id="conditional-304")]
)
def test_bench_one_poll_over_loopback(
    benchmark: Any, server: FeedServer, conditional: bool
) -> None:
    url = f"http://127.0.0.1:{server.port}/feeds/bench.rss"
    first = fetch(url, validators=Validators(), timeout=5, max_bytes=1 << 22)
    validators = first.validators if conditional else Validators()
    result = benchmark(fetch, url, validators=validators, timeout=5, max_bytes=1 << 22)
    benchmark.extra_info["body_bytes"] = len(result.body)
    assert result.status == (304 if conditional else 200)
