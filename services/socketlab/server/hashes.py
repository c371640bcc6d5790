"""SHA-256 of the served files, computed once per file version."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

READ_SIZE = 1024 * 1024


class HashCache:
    """SHA-256 of files keyed by identity and version, so a 1 GiB file is hashed once.

    Called from worker threads; a per-file lock makes a second caller wait for
    the first one's result instead of hashing the same gigabyte again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, int, int, int], str] = {}
        self._busy: dict[tuple[int, int, int, int], threading.Lock] = {}

    def sha256(self, path: Path, *, limit: int | None = None) -> str:
        """The digest of ``path``, or of its first ``limit`` bytes (not cached)."""
        st = path.stat()
        if limit is not None and limit < st.st_size:
            return hash_prefix(path, limit)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            file_lock = self._busy.setdefault(key, threading.Lock())
        with file_lock:
            with self._lock:
                cached = self._cache.get(key)
            if cached is None:
                cached = hash_prefix(path, st.st_size)
                with self._lock:
                    self._cache[key] = cached
            return cached


def hash_prefix(path: Path, limit: int) -> str:
    """SHA-256 of the first ``limit`` bytes of ``path``."""
    hasher = hashlib.sha256()
    remaining = limit
    with path.open("rb") as handle:
        while remaining > 0:
            chunk = handle.read(min(READ_SIZE, remaining))
            if not chunk:
                break
            hasher.update(chunk)
            remaining -= len(chunk)
    return hasher.hexdigest()
