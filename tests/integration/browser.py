"""Headless Chromium driven over the DevTools protocol, to check pages the lab writes.

:func:`open_page` starts Debian's ``chromium`` headless with a throwaway profile and
remote debugging on loopback only, loads one ``file://`` page and returns what the
page said: console messages, uncaught exceptions and the browser's own log entries
(failed loads and the like), plus the answers to JavaScript probes and a full-page
screenshot. Every wait has a deadline; the browser is always ended.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
)
LISTENING = re.compile(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)")


class BrowserError(Exception):
    """Chromium did not start, answer or load the page in time."""


@dataclass
class PageReport:
    """What loading one page produced."""

    errors: list[str] = field(default_factory=list)  # console errors, exceptions, log errors
    messages: list[str] = field(default_factory=list)  # every console message and log entry
    probes: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""


class _Session:
    def __init__(self, url: str, timeout: float) -> None:
        self.socket = websocket.create_connection(url, timeout=timeout)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float) -> Any:
        self.next_id += 1
        wanted = self.next_id
        self.socket.send(json.dumps({"id": wanted, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            if message.get("id") == wanted:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)
        raise BrowserError(f"{method}: no answer within {timeout:g} s")

    def wait_event(self, method: str, *, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while time.monotonic() < deadline:
            event = json.loads(self.socket.recv())
            self.events.append(event)
            if event.get("method") == method:
                return event
        raise BrowserError(f"no {method} within {timeout:g} s")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.socket.close()


def _describe(event: dict[str, Any]) -> tuple[str, bool] | None:
    """(text, is_error) of a console/log/exception event, else None."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled":
        args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
        return f"console.{params['type']}: {args}", params["type"] in {"error", "assert"}
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        text = details.get("exception", {}).get("description") or details.get("text", "")
        return f"exception: {text}", True
    if method == "Log.entryAdded":
        entry = params["entry"]
        return f"log.{entry['level']}: {entry.get('text', '')} {entry.get('url', '')}", entry[
            "level"
        ] == "error"
    return None


def _devtools_port(process: subprocess.Popen[str], timeout: float) -> int:
    found: list[int] = []
    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            seen.append(line)
            match = LISTENING.search(line)
            if match and not found:
                found.append(int(match[2]))
                done.set()
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(timeout) or not found:
        raise BrowserError("chromium did not start: " + "".join(seen[-5:]).strip())
    return found[0]


def open_page(
    page: Path,
    *,
    probes: dict[str, str],
    timeout: float = 60.0,
    settle: float = 1.0,
    binary: str = "chromium",
) -> PageReport:
    """Load ``page``; run each JavaScript probe (an expression returning JSON); screenshot.

    ``settle``: seconds to keep collecting messages after the load event (a script
    error may come late)."""
    if shutil.which(binary) is None:
        raise BrowserError(f"{binary} is not installed")
    profile = tempfile.mkdtemp(prefix="socketlab-chromium-")
    process = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    session: _Session | None = None
    try:
        port = _devtools_port(process, timeout)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/json/list", timeout=timeout
        ) as answer:
            targets = json.loads(answer.read(1 << 20))
        target = next(t for t in targets if t.get("type") == "page")
        session = _Session(target["webSocketDebuggerUrl"], timeout)
        for domain in ("Runtime", "Log", "Page"):
            session.call(f"{domain}.enable", timeout=timeout)
        session.events.clear()
        session.call("Page.navigate", {"url": page.resolve().as_uri()}, timeout=timeout)
        session.wait_event("Page.loadEventFired", timeout=timeout)
        report = PageReport()
        for name, expression in probes.items():
            result = session.call(
                "Runtime.evaluate",
                {"expression": expression, "returnByValue": True},
                timeout=timeout,
            )
            report.probes[name] = result.get("result", {}).get("value")
        # Late messages: a timer, an image that failed after load.
        with contextlib.suppress(websocket.WebSocketTimeoutException, BrowserError):
            session.socket.settimeout(settle)
            session.wait_event("Never.happens", timeout=settle)
        session.socket.settimeout(timeout)
        shot = session.call(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True},
            timeout=timeout,
        )
        report.screenshot = base64.b64decode(shot["data"])
        for event in session.events:
            described = _describe(event)
            if described is not None:
                text, is_error = described
                report.messages.append(text)
                if is_error:
                    report.errors.append(text)
        return report
    finally:
        if session is not None:
            session.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
