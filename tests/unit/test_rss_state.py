"""Poller state: persistence across restarts, exactly-once output, headers, backoff."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab.errors import ConfigError
from socketlab.rss.entries import Item
from socketlab.rss.errors import StateError
from socketlab.rss.fetch import Validators, conditional_headers
from socketlab.rss.poller import PollerConfig, Sink, backoff_delay, feed_list
from socketlab.rss.state import StateStore

FEED = "http://server:8080/feeds/news.rss"


@pytest.fixture
def sinks() -> Iterator[Callable[[Sink], Sink]]:
    """Close every sink a test opened (and the store under it), even when it fails."""
    opened: list[Sink] = []

    def keep(sink: Sink) -> Sink:
        opened.append(sink)
        return sink

    yield keep
    for sink in opened:
        sink.close()
        sink._store.close()


def item(number: int) -> Item:
    return Item(
        key=f"guid:g{number}",
        title=f"Title {number}",
        link=f"http://server/{number}",
        summary=f"Summary {number}",
        published=None,
    )


def lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_validators_and_seen_entries_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = StateStore(path)
    assert store.validators(FEED) == Validators()
    store.save_validators(
        FEED, Validators(etag='"e1"', last_modified="Sat, 01 Jan 2026 00:00:00 GMT")
    )
    assert store.claim(FEED, "guid:a", "{}")
    store.mark_done(FEED, "guid:a")
    store.close()

    reopened = StateStore(path)
    assert reopened.validators(FEED) == Validators('"e1"', "Sat, 01 Jan 2026 00:00:00 GMT")
    assert not reopened.claim(FEED, "guid:a", "{}")
    assert reopened.claim("http://other/feed", "guid:a", "{}"), "dedupe is per feed"
    assert reopened.seen_count(FEED) == 1


def test_an_unusable_state_path_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateError):
        StateStore(blocker / "state.sqlite3")


def test_a_database_from_a_future_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(StateError, match="schema version 99"):
        StateStore(path)


def test_sink_prints_and_records_each_entry_once_across_restarts(
    tmp_path: Path, sinks: Callable[[Sink], Sink]
) -> None:
    output = tmp_path / "entries.jsonl"
    out = io.StringIO()
    store = StateStore(tmp_path / "s.db")
    sink = sinks(Sink(output, store, stdout=out))
    assert sink.emit(FEED, [item(1), item(2), item(3)]) == 3
    assert sink.emit(FEED, [item(2), item(3), item(4)]) == 1
    sink.close()
    store.close()

    store = StateStore(tmp_path / "s.db")
    sink = sinks(Sink(output, store, stdout=out))  # a restarted poller
    assert sink.recover() == 0
    assert sink.emit(FEED, [item(1), item(2), item(3), item(4)]) == 0
    assert [record["title"] for record in lines(output)] == [f"Title {n}" for n in (1, 2, 3, 4)]
    printed = out.getvalue().splitlines()
    assert printed == [f"Title {n} | http://server/{n} | Summary {n}" for n in (1, 2, 3, 4)]


def test_crash_after_claim_before_write_is_finished_at_restart(
    tmp_path: Path, sinks: Callable[[Sink], Sink]
) -> None:
    output = tmp_path / "entries.jsonl"
    store = StateStore(tmp_path / "s.db")
    record = {
        "feed": FEED,
        "key": "guid:g9",
        "title": "T9",
        "link": "",
        "summary": "",
        "published": None,
    }
    store.claim(FEED, "guid:g9", json.dumps(record))  # then the process died
    store.close()

    out = io.StringIO()
    store = StateStore(tmp_path / "s.db")
    sink = sinks(Sink(output, store, stdout=out))
    assert sink.recover() == 1
    assert [r["key"] for r in lines(output)] == ["guid:g9"]
    assert "T9" in out.getvalue()
    assert store.pending() == []


def test_crash_after_write_before_confirm_is_not_repeated(
    tmp_path: Path, sinks: Callable[[Sink], Sink]
) -> None:
    output = tmp_path / "entries.jsonl"
    line = json.dumps({"feed": FEED, "key": "guid:g5", "title": "T5"})
    output.write_text(line + "\n" + '{"feed": "http://x", "key": "half-writ')  # torn last line
    store = StateStore(tmp_path / "s.db")
    store.claim(FEED, "guid:g5", line)
    out = io.StringIO()
    sink = sinks(Sink(output, store, stdout=out))
    assert sink.recover() == 0
    assert out.getvalue() == ""
    assert store.pending() == []
    sink.emit(FEED, [item(6)])
    records = output.read_text().splitlines()
    assert json.loads(records[-1])["key"] == "guid:g6", "never glued to the torn line"


@pytest.mark.parametrize(
    ("validators", "expected"),
    [
        pytest.param(Validators(), {}, id="first-fetch"),
        pytest.param(Validators(etag='"e"'), {"If-None-Match": '"e"'}, id="etag-only"),
        pytest.param(
            Validators(last_modified="Sat, 01 Jan 2026 00:00:00 GMT"),
            {"If-Modified-Since": "Sat, 01 Jan 2026 00:00:00 GMT"},
            id="last-modified-only",
        ),
        pytest.param(
            Validators(etag='W/"e"', last_modified="Sat, 01 Jan 2026 00:00:00 GMT"),
            {"If-None-Match": 'W/"e"', "If-Modified-Since": "Sat, 01 Jan 2026 00:00:00 GMT"},
            id="both",
        ),
    ],
)
def test_conditional_headers(validators: Validators, expected: dict[str, str]) -> None:
    assert conditional_headers(validators) == expected


@pytest.mark.parametrize(
    ("failures", "expected"),
    [
        pytest.param(0, 30.0, id="healthy"),
        pytest.param(1, 60.0, id="one-failure"),
        pytest.param(3, 240.0, id="three-failures"),
        pytest.param(4, 300.0, id="capped"),
        pytest.param(1000, 300.0, id="many-failures-no-overflow"),
    ],
)
def test_backoff_examples(failures: int, expected: float) -> None:
    assert backoff_delay(failures, interval=30.0, cap=300.0) == expected


@given(
    st.integers(min_value=0, max_value=10_000),
    st.floats(min_value=0.01, max_value=3600),
    st.floats(min_value=0.0, max_value=86_400),
)
def test_backoff_is_monotonic_and_bounded(failures: int, interval: float, cap: float) -> None:
    delay = backoff_delay(failures, interval=interval, cap=cap)
    assert interval <= delay <= max(cap, interval)
    assert backoff_delay(failures + 1, interval=interval, cap=cap) >= delay


def test_feed_list_from_arguments_or_environment() -> None:
    config = PollerConfig.from_env({"SOCKETLAB_FEED_URLS": " http://a/1.rss, ,http://b/2.atom "})
    assert feed_list([], config) == ["http://a/1.rss", "http://b/2.atom"]
    assert feed_list(["http://c/"], config) == ["http://c/"]
    assert feed_list([], PollerConfig.from_env({})) == ["http://server:8080/feeds/news.rss"]
    one = PollerConfig.from_env({"SOCKETLAB_FEED_URL": "http://d/x.rss"})
    assert feed_list([], one) == ["http://d/x.rss"]


def test_a_bad_poll_interval_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match="SOCKETLAB_POLL_INTERVAL='abc' is not a number"):
        PollerConfig.from_env({"SOCKETLAB_POLL_INTERVAL": "abc"})


class _FullDisk(io.BytesIO):
    def write(self, data: Any) -> int:
        raise OSError(28, "No space left on device")


def test_an_entry_that_could_not_be_written_is_retried(
    tmp_path: Path, sinks: Callable[[Sink], Sink]
) -> None:
    store = StateStore(tmp_path / "s.db")
    out = io.StringIO()
    sink = sinks(Sink(tmp_path / "entries.jsonl", store, stdout=out))
    real_file = sink._file
    sink._file = _FullDisk()  # type: ignore[assignment]
    with pytest.raises(StateError, match="No space left"):
        sink.emit(FEED, [item(1)])
    assert store.pending() == [], "the claim was withdrawn"
    sink._file = real_file
    assert sink.emit(FEED, [item(1)]) == 1
    assert [r["key"] for r in lines(tmp_path / "entries.jsonl")] == ["guid:g1"]


class _ClosedStdout(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stdout_neither_loses_nor_repeats_entries(
    tmp_path: Path, sinks: Callable[[Sink], Sink]
) -> None:
    store = StateStore(tmp_path / "s.db")
    sink = sinks(Sink(tmp_path / "entries.jsonl", store, stdout=_ClosedStdout()))
    assert sink.emit(FEED, [item(1)]) == 1
    assert sink.emit(FEED, [item(1)]) == 0
    assert [r["key"] for r in lines(tmp_path / "entries.jsonl")] == ["guid:g1"]
