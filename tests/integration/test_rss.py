"""RSS across containers: the server publishes, the rss-poller container prints each entry once.

The compose poller polls ``http://server:8080/feeds/news.rss`` every 2 s and keeps
its state on the ``rss-state`` volume. Hostile feeds are polled by a second,
short-lived poller with its own state directory, so the compose poller's output
stays clean for the exactly-once checks. The fault feeds need the lab's admin
token, which only the server, client and udp-listener hold (never the
rss-poller), so that poller runs in the server container (its /tmp is a tmpfs:
its files are read with ``cat``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from lab.api import Lab
from lab.errors import LabError
from lab.waiting import wait_for

pytestmark = pytest.mark.integration


NEWS = "http://server:8080/feeds/news.rss"
POLLER_DIR = "/var/lib/socketlab/rss"
SENTINEL = "SOCKETLAB-INTEGRATION-SENTINEL-93be"


def publish(lab: Lab, title: str, *, feed: str = "news") -> dict[str, Any]:
    result = lab.exec(
        "server",
        [
            "socketlab",
            "feed",
            "publish",
            "--feed",
            feed,
            "--title",
            title,
            "--summary",
            f"About {title}",
        ],
        timeout=30,
    ).check(f"publishing {title!r}")
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def _read(lab: Lab, service: str, path: str) -> bytes:
    if service == "rss-poller":
        return lab.read_file(service, path)
    result = lab.exec(service, ["cat", path], timeout=30)  # a tmpfs: docker cp cannot see it
    if not result.ok:
        raise LabError(f"{service}:{path}: {result.stderr.strip()}")
    return result.stdout.encode()


def records(
    lab: Lab, directory: str = POLLER_DIR, *, service: str = "rss-poller"
) -> list[dict[str, Any]]:
    try:
        raw = _read(lab, service, f"{directory}/entries.jsonl")
    except LabError:
        return []
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def status(lab: Lab, directory: str, *, service: str = "rss-poller") -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads(_read(lab, service, f"{directory}/status.json"))
    except (LabError, ValueError):
        return None
    return document


def news_counters(lab: Lab) -> dict[str, int]:
    result = lab.exec("server", ["socketlab", "feed", "stats"], timeout=30).check("feed stats")
    counters: dict[str, int] = json.loads(result.stdout)["paths"].get("/feeds/news.rss", {})
    return counters


def wait_for_more_304s(lab: Lab, count: int) -> dict[str, int]:
    start = news_counters(lab).get("not_modified", 0)

    def enough() -> dict[str, int] | None:
        counters = news_counters(lab)
        return counters if counters.get("not_modified", 0) >= start + count else None

    return wait_for(enough, timeout=60, what=f"{count} more conditional polls answered 304")


def printed(lab: Lab, title: str) -> int:
    """How many times the compose poller printed an entry with this title (all restarts)."""
    return lab.logs("rss-poller").count(f"{title} | ")


def test_published_entries_are_printed_exactly_once_across_a_restart(lab: Lab) -> None:
    tag = uuid.uuid4().hex[:8]
    wait_for(
        lambda: any(r["feed"] == NEWS for r in records(lab)),
        timeout=60,
        what="the poller's first entries from news.rss",
    )
    before = records(lab)

    published = [publish(lab, f"rss-it {tag} story {n}") for n in (1, 2, 3)]
    keys = ["guid:" + p["guid"] for p in published]
    wait_for(
        lambda: set(keys) <= {r["key"] for r in records(lab)},
        timeout=30,
        what="the poller to record the three published entries",
    )
    wait_for_more_304s(lab, 2)  # more polls happened: nothing else may appear
    first = records(lab)
    assert [r["key"] for r in first[len(before) :]] == keys
    assert [printed(lab, p["title"]) for p in published] == [1, 1, 1]

    lab.restart("rss-poller")
    # The restarted poller kept its ETag: its first polls are already 304s.
    wait_for_more_304s(lab, 2)
    assert records(lab) == first, "the restart recorded nothing again"
    assert [printed(lab, p["title"]) for p in published] == [1, 1, 1]

    extra = publish(lab, f"rss-it {tag} story 4")
    wait_for(
        lambda: "guid:" + extra["guid"] in {r["key"] for r in records(lab)},
        timeout=30,
        what="the poller to record the fourth entry",
    )
    wait_for_more_304s(lab, 2)
    final = records(lab)
    assert [r["key"] for r in final[len(first) :]] == ["guid:" + extra["guid"]]
    assert printed(lab, extra["title"]) == 1
    news_keys = [r["key"] for r in final if r["feed"] == NEWS]
    assert len(news_keys) == len(set(news_keys)), "no entry recorded twice"


def test_unchanged_feed_is_answered_with_304s(lab: Lab) -> None:
    before = news_counters(lab)
    after = wait_for_more_304s(lab, 3)
    if after["ok"] == before.get("ok", 0):
        assert after["bytes_sent"] == before.get("bytes_sent", 0), "304s carry no body"
    assert after["requests"] > before.get("requests", 0)


def test_hostile_and_stalled_feeds_do_not_stop_the_others(lab: Lab) -> None:
    tag = uuid.uuid4().hex[:8]
    directory = f"/tmp/rss-faults-{tag}"
    secret = f"/tmp/secret-{tag}.txt"
    lab.exec(
        "server", ["python3", "-c", f"open({secret!r}, 'w').write({SENTINEL!r})"], timeout=30
    ).check("writing the sentinel file")
    feed = f"it-{tag}"
    publish(lab, f"rss-it {tag} before", feed=feed)
    healthy = f"http://server:8080/feeds/{feed}.rss"
    hostile = {
        "slow": "http://server:8080/faults/slow.rss?seconds=90",
        "malformed": "http://server:8080/faults/malformed.rss",
        "laughs": "http://server:8080/faults/billion-laughs.rss",
        "xxe": f"http://server:8080/faults/xxe.rss?path={secret}",
        "error": "http://server:8080/faults/error.rss",
        "huge": "http://server:8080/faults/huge.rss",
    }
    argv = [
        "socketlab", "rss-poller", "--dir", directory, "--interval", "0.5",
        "--timeout", "60", "--max-bytes", str(2 * 1024 * 1024), "--backoff-max", "2",
        "--run-for", "25", healthy, *hostile.values(),
    ]  # fmt: skip
    # Detached: it runs next to the compose poller and stops by itself (--run-for).
    lab.container("server").exec_run(argv, detach=True)

    wait_for(
        lambda: (
            (s := status(lab, directory, service="server")) and s["feeds"][healthy]["polls"] >= 4
        ),
        timeout=30,
        what="the second poller to poll the healthy feed",
    )
    late = publish(lab, f"rss-it {tag} during the stall", feed=feed)
    wait_for(
        lambda: (
            "guid:" + late["guid"] in {r["key"] for r in records(lab, directory, service="server")}
        ),
        timeout=20,
        what="an entry published while the slow feed stalls",
    )

    def finished() -> dict[str, Any] | None:
        document = status(lab, directory, service="server")
        return document if document is not None and not document["running"] else None

    final = wait_for(finished, timeout=60, what="the second poller to finish")
    feeds = final["feeds"]
    assert feeds[healthy]["state"] == "ok"
    assert feeds[healthy]["polls"] >= 20, "polled on schedule throughout the stall"
    assert feeds[hostile["slow"]]["polls"] == 1, "its one fetch was still waiting"
    assert feeds[hostile["slow"]]["last_success_at"] is None
    for name in ("malformed", "laughs", "xxe"):
        assert feeds[hostile[name]]["state"] == "degraded", name
    assert "DOCTYPE" in feeds[hostile["xxe"]]["removed"]
    assert feeds[hostile["error"]]["last_status"] == 500
    assert feeds[hostile["error"]]["polls"] >= 3, "backs off but keeps polling"
    assert "FeedTooLarge" in (feeds[hostile["huge"]]["last_error"] or "")

    output = _read(lab, "server", f"{directory}/entries.jsonl").decode()
    everything = output + json.dumps(final)
    assert SENTINEL not in everything
    assert "lollollol" not in everything
    titles = [r["title"] for r in records(lab, directory, service="server")]
    assert titles.count(f"rss-it {tag} during the stall") == 1
