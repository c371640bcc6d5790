"""The poller's persistent state in SQLite: seen entries and validators per feed.

Exactly-once printing across crashes uses a two-step record: an entry is first
*claimed* (row inserted as ``pending`` with its JSON line), then printed and
appended to the output file, then marked ``done``. A poller that died between
the two steps finds the pending rows at start-up and re-emits only those whose
line is not already in the output file (see :mod:`socketlab.rss.poller`).

Validators (ETag, Last-Modified) are saved only after every new entry of that
response has been recorded: saving them first and dying would make the next
poll a 304 and lose those entries.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from socketlab.rss.errors import StateError
from socketlab.rss.fetch import Validators

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS feeds (
    url TEXT PRIMARY KEY,
    etag TEXT,
    last_modified TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (
    feed TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    record TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    PRIMARY KEY (feed, key)
);
"""


@dataclass(frozen=True)
class Pending:
    """An entry claimed but not confirmed as written before the last shutdown."""

    feed: str
    key: str
    record: str  # the JSON line that was (maybe) written


def _now() -> str:
    return datetime.now(UTC).isoformat()


class StateStore:
    """Thread-safe wrapper around one SQLite connection (feed threads share it)."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in {0, SCHEMA_VERSION}:
                raise StateError(f"{path}: schema version {version}, expected {SCHEMA_VERSION}")
            self._db.executescript(SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open state database {path}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def validators(self, feed: str) -> Validators:
        """Validators saved for ``feed`` (empty when it was never fetched)."""
        with self._lock:
            row = self._db.execute(
                "SELECT etag, last_modified FROM feeds WHERE url = ?", (feed,)
            ).fetchone()
        return Validators(*row) if row else Validators()

    def save_validators(self, feed: str, validators: Validators) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO feeds (url, etag, last_modified, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(url) DO UPDATE SET etag = excluded.etag,"
                " last_modified = excluded.last_modified, updated_at = excluded.updated_at",
                (feed, validators.etag, validators.last_modified, _now()),
            )

    def claim(self, feed: str, key: str, record: str) -> bool:
        """Record ``key`` as pending; False if it was seen before (never print it again)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO seen (feed, key, state, record, first_seen)"
                " VALUES (?, ?, 'pending', ?, ?)",
                (feed, key, record, _now()),
            )
            return cursor.rowcount == 1

    def unclaim(self, feed: str, key: str) -> None:
        """Forget a pending claim whose output could not be written, so it is retried."""
        with self._lock:
            self._db.execute(
                "DELETE FROM seen WHERE feed = ? AND key = ? AND state = 'pending'", (feed, key)
            )

    def mark_done(self, feed: str, key: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE seen SET state = 'done' WHERE feed = ? AND key = ?", (feed, key)
            )

    def pending(self) -> list[Pending]:
        with self._lock:
            rows = self._db.execute(
                "SELECT feed, key, record FROM seen WHERE state = 'pending' ORDER BY rowid"
            ).fetchall()
        return [Pending(*row) for row in rows]

    def seen_count(self, feed: str | None = None) -> int:
        with self._lock:
            if feed is None:
                row = self._db.execute("SELECT COUNT(*) FROM seen").fetchone()
            else:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM seen WHERE feed = ?", (feed,)
                ).fetchone()
        return int(row[0])
