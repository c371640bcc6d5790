"""What the demos print: human lines, the final ``--json`` line, progress on stderr."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class Output:
    """Human lines on stdout, the final JSON line with ``--json``, progress on stderr."""

    as_json: bool
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    printed: bool = False

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def result(self, command: str, ok: bool, **fields: Any) -> None:
        self.printed = True
        if self.as_json:
            line = json.dumps({"command": command, "ok": ok, **fields}, default=str)
            print(line, file=self.stream, flush=True)


class Progress:
    """A progress bar (tty) or periodic progress lines (logs) on stderr."""

    def __init__(
        self, name: str, total: int, initial: int, *, stream: TextIO | None = None
    ) -> None:
        self.name, self.total, self.initial = name, total, initial
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last = 0.0
        self._interval = 0.2 if self.tty else 2.0

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < self._interval:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = (done - self.initial) / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        pct = 100.0 * done / self.total if self.total else 100.0
        eta_text = f"{eta:5.1f}s" if eta != float("inf") else "   ?s"
        if self.tty:
            filled = int(pct / 100 * 30)
            bar = "#" * filled + "-" * (30 - filled)
            self.stream.write(
                f"\r{self.name} [{bar}] {pct:5.1f}% {_human(done)}/{_human(self.total)} "
                f"{_human(rate)}/s ETA {eta_text}"
            )
            if final:
                self.stream.write("\n")
        else:
            self.stream.write(
                f"event=progress name={self.name} bytes={done} total={self.total} "
                f"pct={pct:.1f} rate_mb_s={rate / 1e6:.1f} eta_s={eta:.1f}\n"
            )
        self.stream.flush()


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.1f}{unit}"
        size /= 1000
    return f"{size:.1f}TB"
