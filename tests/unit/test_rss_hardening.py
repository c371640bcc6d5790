"""The poller against hostile entries and the corpus defects (issue 20, items 4 and corpus).

* what it prints cannot drive a terminal or forge a line, and one hostile entry
  degrades only itself;
* an EBCDIC feed is read in the code page it declares;
* ``--once`` exits 1 with the reason when a poll failed;
* a ``CharacterEncodingOverride`` is recorded, and the same entry decoded
  correctly later is not printed again.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from socketlab.__main__ import main as socketlab_main
from socketlab.rss.entries import parse_feed
from socketlab.rss.poller import Poller, PollerOptions, entry_line
from socketlab.rss.safety import ebcdic_codepage, neutralise, replace_controls

HOSTILE = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>t</title>'
    b"<item><title>fine</title><guid>ok-1</guid><description>calm</description></item>"
    b"<item><title>evil\x1b[2J\x1b]0;pwned\x07\nnext</title><guid>evil-1</guid>"
    b"<description><![CDATA[in cdata \x1b[31m red]]> and \x00 nul</description></item>"
    b"<item><title>also fine</title><guid>ok-2</guid></item>"
    b"</channel></rss>\n"
)


def test_one_hostile_entry_degrades_only_itself() -> None:
    parsed = parse_feed(HOSTILE, url="http://lab/x.rss", content_type="application/rss+xml")
    assert not parsed.bozo, parsed.bozo_reason
    assert parsed.degraded_entries == 1
    by_key = {item.key: item for item in parsed.items}
    keys = ["guid:http://lab/ok-2", "guid:http://lab/evil-1", "guid:http://lab/ok-1"]
    assert [item.key for item in parsed.items] == keys
    evil = by_key[keys[1]]
    assert evil.degraded
    assert not by_key[keys[0]].degraded
    assert not by_key[keys[2]].degraded
    # The text is kept exactly; only the printer escapes it.
    assert evil.title == "evil\x1b[2J\x1b]0;pwned\x07\nnext"
    assert evil.summary == "in cdata \x1b[31m red and \x00 nul"


def test_the_printed_line_is_one_line_with_controls_escaped() -> None:
    parsed = parse_feed(HOSTILE, url="http://lab/x.rss", content_type="application/rss+xml")
    evil = next(item for item in parsed.items if item.degraded)
    line = entry_line(
        {"title": evil.title, "link": "http://x/\u202etxt.exe", "summary": evil.summary}
    )
    assert line == (
        "evil\\x1b[2J\\x1b]0;pwned\\x07\\x0anext | http://x/\\u202etxt.exe | "
        "in cdata \\x1b[31m red and \\x00 nul"
    )


def test_replace_controls_counts_and_leaves_clean_documents_alone() -> None:
    assert replace_controls(b"<a>\t\r\n</a>") == (b"<a>\t\r\n</a>", 0)
    assert replace_controls(b"<a>\x1b</a><![CDATA[\x01]]>") == (
        b"<a>&#xE01B;</a><![CDATA[]]>&#xE001;<![CDATA[]]>",
        2,
    )
    assert neutralise(HOSTILE).controls == 5


@pytest.mark.parametrize(
    "codepage", ["cp500", "ibm500", "ebcdic-cp-be", "ebcdic-cp-ch", "cp037", "cp1140"]
)
def test_an_ebcdic_feed_is_read_in_its_declared_code_page(codepage: str) -> None:
    document = (
        f'<?xml version="1.0" encoding="{codepage}"?>\n<!-- comment -->'
        '<rss version="2.0"><channel><title>T!</title>'
        "<item><title>Hello [world] | 100 ¬ {x}!</title><guid>g-1</guid></item></channel></rss>"
    )
    parsed = parse_feed(document.encode(codepage), url="http://lab/e.rss")
    assert not parsed.bozo, parsed.bozo_reason
    assert [item.title for item in parsed.items] == ["Hello [world] | 100 ¬ {x}!"]
    assert parsed.title == "T!"


@pytest.mark.parametrize(
    ("declaration", "expected"),
    [
        pytest.param('encoding="ebcdic-cp-be"', "cp500", id="alias"),
        pytest.param('encoding="IBM500"', "cp500", id="upper-case"),
        pytest.param('encoding="utf-8"', "cp037", id="not-ebcdic"),
        pytest.param('encoding="no-such-codec"', "cp037", id="unknown"),
        pytest.param("", "cp037", id="none"),
    ],
)
def test_ebcdic_codepage(declaration: str, expected: str) -> None:
    head = f'<?xml version="1.0" {declaration}?><rss/>'.encode("cp037")
    assert ebcdic_codepage(head) == expected


class _Files(BaseHTTPRequestHandler):
    """Serves whatever the test put in ``documents`` (path -> bytes); 404 otherwise."""

    documents: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.documents.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def files() -> Iterator[tuple[str, dict[str, bytes]]]:
    documents: dict[str, bytes] = {}
    handler = type("Files", (_Files,), {"documents": documents})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", documents
    finally:
        httpd.shutdown()
        httpd.server_close()


def _poll_once(url: str, directory: Path) -> tuple[Poller, str]:
    options = PollerOptions(
        timeout=5,
        output=directory / "entries.jsonl",
        state=directory / "state.sqlite3",
        status=directory / "status.json",
    )
    out = io.StringIO()
    poller = Poller([url], options, stdout=out)
    try:
        poller.run(threading.Event(), once=True)
    finally:
        poller.close()
    return poller, out.getvalue()


CORRECT = (
    '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>news</title>'
    "<item><title>Café € crème</title><guid>urn:café-€</guid></item></channel></rss>"
).encode()
# The same entry with one stray windows-1252 byte elsewhere in the document.
MISDECLARED = CORRECT.replace(b"<title>news</title>", b"<title>news \x92</title>")


def test_an_encoding_override_is_recorded_and_the_entry_is_not_printed_twice(
    files: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    root, documents = files
    documents["/f.rss"] = MISDECLARED
    poller, printed = _poll_once(root + "/f.rss", tmp_path)
    status = poller.status[root + "/f.rss"]
    assert status.encoding_override == ("document declared as utf-8, but parsed as windows-1252")
    assert status.state == "ok"
    assert printed.splitlines() == ["Café € crème | urn:café-€ | -"]
    recorded = json.loads((tmp_path / "status.json").read_text())
    assert recorded["feeds"][root + "/f.rss"]["encoding_override"].startswith("document declared")

    documents["/f.rss"] = CORRECT  # the publisher fixed the stray byte
    poller, printed = _poll_once(root + "/f.rss", tmp_path)
    assert printed == "", "the same entry, decoded correctly, is not new"
    assert poller.status[root + "/f.rss"].encoding_override is None


def test_a_hostile_entry_through_the_poller(
    files: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    root, documents = files
    documents["/h.rss"] = HOSTILE
    poller, printed = _poll_once(root + "/h.rss", tmp_path)
    status = poller.status[root + "/h.rss"]
    assert status.state == "ok"
    assert status.degraded_entries == 1
    lines = printed.splitlines()
    assert len(lines) == 3, "one line per entry, none forged"
    assert "\x1b" not in printed
    assert "\x07" not in printed
    assert "\x00" not in printed
    assert lines[1].startswith("evil\\x1b[2J\\x1b]0;pwned\\x07\\x0anext | ")
    record = json.loads((tmp_path / "entries.jsonl").read_text().splitlines()[1])
    assert record["degraded"] is True
    assert record["title"].startswith("evil\x1b")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        pytest.param("/missing.rss", "HTTP 404", id="404"),
        pytest.param("/garbage.rss", None, id="parse-failure-is-degraded-not-failed"),
    ],
)
def test_once_exits_non_zero_with_the_reason_when_the_poll_failed(
    files: tuple[str, dict[str, bytes]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    path: str,
    reason: str | None,
) -> None:
    root, documents = files
    documents["/garbage.rss"] = b"\x00\x01 not xml at all"
    documents["/good.rss"] = CORRECT
    argv = ["rss-poller", "--once", "--dir", str(tmp_path), "--timeout", "5"]
    code = socketlab_main([*argv, root + "/good.rss", root + path])
    err = capsys.readouterr().err.splitlines()
    if reason is None:
        assert code == 0
        return
    assert code == 1
    assert err[-1].startswith(f"socketlab rss-poller: poll failed: {root}{path}: ")
    assert reason in err[-1]
    assert "good.rss" not in err[-1]


def test_once_fails_when_the_server_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["rss-poller", "--once", "--dir", str(tmp_path), "--timeout", "2"]
    assert socketlab_main([*argv, "http://127.0.0.1:9/x.rss"]) == 1
    assert "Connection refused" in capsys.readouterr().err
