"""Errors raised on purpose by the RSS feed server and poller.

::

    SocketlabError
    └── RssError                 anything in socketlab.rss
        ├── FetchError           a feed could not be fetched (the poller backs off)
        │   ├── FetchTimeout     the whole fetch ran past its deadline
        │   ├── FeedTooLarge     the body (or its declared length) passed the size cap
        │   └── HttpStatusError  the server answered with an error status
        ├── UnsafeFeed           a document we refuse to hand to the parser at all
        ├── StateError           the SQLite state or the output file cannot be used
        ├── PollFailed           rss-poller --once: a feed's poll did not succeed
        └── PublishError         the feed server refused or did not answer a publish
"""

from __future__ import annotations

from socketlab.errors import SocketlabError


class RssError(SocketlabError):
    """Root of the RSS subsystem's errors."""


class FetchError(RssError):
    """A feed could not be fetched; the poller counts it as a failure and backs off."""


class FetchTimeout(FetchError):
    """The fetch (connect, headers and body together) ran past its deadline."""


class FeedTooLarge(FetchError):
    """The body, declared or streamed (after decompression), passed the size cap."""


class HttpStatusError(FetchError):
    """The server answered with a status we cannot use (4xx, 5xx, too many redirects)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class UnsafeFeed(RssError):
    """A document that still carries a DTD after neutralisation; it is never parsed."""


class StateError(RssError):
    """The poller's state database or output file cannot be opened or written."""


class PollFailed(RssError):
    """``rss-poller --once``: at least one feed's poll failed (the message names each)."""


class PublishError(RssError):
    """The feed server refused a publish request or could not be reached."""
