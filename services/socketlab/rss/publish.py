"""``socketlab feed``: publish entries, set schedules and read counters on the feed server.

Runs inside the ``server`` container (default target ``http://127.0.0.1:8080``)
or anywhere with ``--server URL``::

    socketlab feed publish --feed news --title "Hello" --summary "First post"
    socketlab feed schedule --feed news --every 5
    socketlab feed stats

Publishing and scheduling carry the lab's admin token, read from
``SOCKETLAB_ADMIN_TOKEN_FILE`` (mounted in the ``server`` container by ``lab up``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from socketlab.commandline import add_setting, command_parser
from socketlab.config import FEED_HTTP_PORT, EnvConfig, env_config, env_field
from socketlab.credentials import ADMIN_TOKEN_FILE, bearer, read_token
from socketlab.rss.errors import PublishError


@env_config
@dataclass(frozen=True, kw_only=True)
class PublishConfig(EnvConfig):
    """Settings of ``socketlab feed`` (the feed server's admin client)."""

    server: str = env_field(
        "SOCKETLAB_FEED_ADMIN_URL",
        f"http://127.0.0.1:{FEED_HTTP_PORT}",
        "base URL of the feed server's admin API for socketlab feed",
    )
    timeout: float = env_field(
        "SOCKETLAB_FEED_ADMIN_TIMEOUT", 5.0, "timeout of one socketlab feed request, seconds"
    )
    admin_token_file: Path = env_field(
        "SOCKETLAB_ADMIN_TOKEN_FILE",
        Path(ADMIN_TOKEN_FILE),
        "file holding the lab's admin token (feed admin and faults, UDP reset); "
        "absent: those requests are refused",
    )


def request_json(
    server: str,
    method: str,
    path: str,
    document: object | None,
    *,
    timeout: float,
    token: str | None = None,
) -> Any:
    """Send a JSON request to the feed server (with ``token``, if any) and return its answer."""
    data = None if document is None else json.dumps(document).encode()
    request = urllib.request.Request(  # noqa: S310 - lab admin URL, http(s) only below
        server.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **bearer(token)},
    )
    if not request.full_url.startswith(("http://", "https://")):
        raise PublishError(f"feed server URL must be http(s): {server!r}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            detail = _one_line(exc.read(4096))
        raise PublishError(f"{method} {path}: HTTP {exc.code}: {detail}") from exc
    except (OSError, ValueError) as exc:
        raise PublishError(f"{method} {path}: {exc}") from exc


def _one_line(body: bytes) -> str:
    """The server's reason: its JSON ``error`` when it sent one, else the text, on one line."""
    text = body.decode(errors="replace").strip()
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        text = document["error"]
    return " ".join(text.split())


def publish(
    server: str,
    feed: str,
    *,
    title: str,
    summary: str,
    timeout: float = 5.0,
    token: str | None = None,
) -> dict[str, Any]:
    """Publish one entry; returns the server's description of it (guid, link, ...)."""
    answer: dict[str, Any] = request_json(
        server,
        "POST",
        f"/admin/feeds/{feed}/entries",
        {"title": title, "summary": summary},
        timeout=timeout,
        token=token,
    )
    return answer


def main(argv: list[str]) -> int:
    config = PublishConfig.from_env()
    parser = command_parser("feed", __doc__.split("\n")[0])
    add_setting(parser, "--server", config=config, name="server")
    add_setting(parser, "--timeout", config=config, name="timeout")
    add_setting(parser, "--token-file", config=config, name="admin_token_file")
    sub = parser.add_subparsers(dest="action", required=True)
    pub = sub.add_parser("publish", help="add one entry to a feed (created if missing)")
    pub.add_argument("--feed", default="news")
    pub.add_argument("--title", required=True)
    pub.add_argument("--summary", default="")
    sched = sub.add_parser("schedule", help="publish one entry every N seconds (0 stops)")
    sched.add_argument("--feed", default="news")
    sched.add_argument("--every", type=float, required=True)
    sub.add_parser("stats", help="per-path request, 304 and byte counters")
    args = parser.parse_args(argv)
    token = read_token(args.token_file) if args.action != "stats" else None
    if args.action == "publish":
        answer: Any = publish(
            args.server,
            args.feed,
            title=args.title,
            summary=args.summary,
            timeout=args.timeout,
            token=token,
        )
    elif args.action == "schedule":
        answer = request_json(
            args.server,
            "POST",
            f"/admin/feeds/{args.feed}/schedule",
            {"every": args.every},
            timeout=args.timeout,
            token=token,
        )
    else:
        answer = request_json(args.server, "GET", "/stats", None, timeout=args.timeout)
    print(json.dumps(answer, indent=2, sort_keys=True))
    return 0
