"""Feed server core: growing feeds, rendering, and the HTTP caching rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab.rss.entries import parse_feed
from socketlab.rss.feeds import (
    FeedRegistry,
    http_date,
    is_not_modified,
    make_etag,
    valid_feed_name,
)

MOMENT = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
ETAG = '"abc123"'


@pytest.mark.parametrize(
    ("if_none_match", "if_modified_since", "expected"),
    [
        pytest.param(None, None, False, id="unconditional"),
        pytest.param(ETAG, None, True, id="etag-matches"),
        pytest.param('"other"', None, False, id="etag-differs"),
        pytest.param('W/"abc123"', None, True, id="weak-comparison"),
        pytest.param('"x", "abc123"', None, True, id="etag-in-list"),
        pytest.param("*", None, True, id="star"),
        pytest.param('"other"', http_date(MOMENT), False, id="inm-wins-over-ims"),
        pytest.param(None, http_date(MOMENT), True, id="ims-equal"),
        pytest.param(None, http_date(MOMENT + timedelta(hours=1)), True, id="ims-later"),
        pytest.param(None, http_date(MOMENT - timedelta(seconds=1)), False, id="ims-earlier"),
        pytest.param(None, "yesterday-ish", False, id="ims-garbage-ignored"),
        pytest.param("", http_date(MOMENT), True, id="empty-inm-ignored"),
    ],
)
def test_conditional_request_rules(
    if_none_match: str | None, if_modified_since: str | None, expected: bool
) -> None:
    assert (
        is_not_modified(
            etag=ETAG,
            last_modified=MOMENT,
            if_none_match=if_none_match,
            if_modified_since=if_modified_since,
        )
        is expected
    )


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_etag_validates_exactly_its_own_body(first: bytes, second: bytes) -> None:
    tag = make_etag(first)
    assert is_not_modified(
        etag=tag, last_modified=MOMENT, if_none_match=tag, if_modified_since=None
    )
    assert is_not_modified(
        etag=make_etag(second), last_modified=MOMENT, if_none_match=tag, if_modified_since=None
    ) is (first == second)


def test_news_is_seeded_so_the_default_poller_has_entries() -> None:
    registry = FeedRegistry(base_url="http://server:8080", window=50)
    rendered = registry.render("news", "rss")
    assert rendered is not None
    parsed = parse_feed(rendered.body, url="http://server:8080/feeds/news.rss")
    assert [item.title for item in parsed.items] == [f"Lab bulletin {n}" for n in (1, 2, 3)]
    assert not parsed.bozo


@pytest.mark.parametrize("fmt", [pytest.param("rss", id="rss"), pytest.param("atom", id="atom")])
def test_published_entries_appear_in_both_formats_with_the_same_guid(fmt: str) -> None:
    registry = FeedRegistry(base_url="http://server:8080", window=50, seed_entries=0)
    entry = registry.publish("lab", title="Tom & Jerry <3", summary="a < b & c")
    rendered = registry.render("lab", fmt)  # type: ignore[arg-type]
    assert rendered is not None
    parsed = parse_feed(rendered.body, url=f"http://server:8080/feeds/lab.{fmt}")
    assert not parsed.bozo, parsed.bozo_reason
    (item,) = parsed.items
    assert item.key == "guid:" + entry.guid
    assert item.title == "Tom & Jerry <3"
    assert item.link.endswith(f"/feeds/lab/entries/{entry.slug}")


def test_publishing_changes_etag_and_strictly_advances_last_modified() -> None:
    registry = FeedRegistry(base_url="http://server:8080", window=50)
    before = registry.render("news", "rss")
    registry.publish("news", title="one", summary="", now=MOMENT)
    middle = registry.render("news", "rss")
    registry.publish("news", title="two", summary="", now=MOMENT)  # same second
    after = registry.render("news", "rss")
    assert before is not None
    assert middle is not None
    assert after is not None
    assert len({before.etag, middle.etag, after.etag}) == 3
    # A client holding `middle` and sending only If-Modified-Since must still get `after`.
    assert after.last_modified > middle.last_modified
    assert not is_not_modified(
        etag=after.etag,
        last_modified=after.last_modified,
        if_none_match=None,
        if_modified_since=http_date(middle.last_modified),
    )


def test_guids_never_repeat_across_server_restarts() -> None:
    first = FeedRegistry(base_url="http://s", window=50).publish("news", title="t", summary="s")
    second = FeedRegistry(base_url="http://s", window=50).publish("news", title="t", summary="s")
    assert first.guid != second.guid


def test_window_limits_the_document_to_the_newest_entries() -> None:
    registry = FeedRegistry(base_url="http://s", window=2, seed_entries=0)
    for number in range(5):
        registry.publish("w", title=f"n{number}", summary="")
    rendered = registry.render("w", "rss")
    assert rendered is not None
    titles = [item.title for item in parse_feed(rendered.body, url="http://s/").items]
    assert titles == ["n3", "n4"]
    assert registry.entry_count("w") == 5


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        pytest.param("news", True, id="plain"),
        pytest.param("a-b_c9", True, id="punctuation"),
        pytest.param("../etc", False, id="traversal"),
        pytest.param("News", False, id="uppercase"),
        pytest.param("", False, id="empty"),
        pytest.param("x" * 65, False, id="too-long"),
    ],
)
def test_feed_names(name: str, valid: bool) -> None:
    assert valid_feed_name(name) is valid


def test_publish_refuses_bad_names_and_oversized_entries() -> None:
    registry = FeedRegistry(base_url="http://s", window=5)
    with pytest.raises(ValueError, match="invalid feed name"):
        registry.publish("../x", title="t", summary="s")
    with pytest.raises(ValueError, match="too long"):
        registry.publish("news", title="t" * 1000, summary="s")
    assert registry.render("nope", "rss") is None
