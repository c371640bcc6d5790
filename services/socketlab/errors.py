"""The socketlab exception tree, and the one place socket errors become peer errors.

Every exception raised on purpose by the in-container code derives from
:class:`SocketlabError`, so front ends (CLIs, servers) can turn it into a
one-line message and an exit code instead of a traceback::

    SocketlabError
    ├── ConfigError                 bad option or environment value (exit 2)
    ├── ProtocolError               socketlab.protocol (framing, limits, objects)
    │   ├── RemoteProtocolError     the peer broke the protocol
    │   │   ├── ServerRefused       (protocol.messages) a request answered with an error
    │   │   └── UnknownAction       (protocol.messages) no such action
    │   ├── LocalProtocolError      we were asked to send something invalid
    │   └── ObjectError             (socketlab.objects) a payload we will not turn into objects
    │       └── PickleRefused       disabled, unsigned, mis-signed, oversize, forbidden class
    ├── RssError                    socketlab.rss.errors (FetchError > FetchTimeout,
    │                               FeedTooLarge, HttpStatusError; UnsafeFeed; StateError;
    │                               PublishError)
    ├── ChatError                   socketlab.chat.errors (ChatRefused, HubGone, ScriptError)
    ├── DatagramError               socketlab.udp.datagram: a datagram that breaks the UDP format
    ├── PathRefused                 socketlab.files: a name that escapes the data root
    ├── TransferError               a file transfer could not be completed or verified
    ├── PeerUnavailable             the peer cannot be reached or went away
    │   ├── ConnectFailed           no connection: refused, unreachable, unknown name,
    │   │                           connect timeout
    │   ├── ReadTimeout             connected, but nothing arrived within the read timeout
    │   ├── SendTimeout             connected, but the peer took nothing within the timeout
    │   └── PeerClosed              the peer closed or reset the connection
    ├── CommandFailed               (socketlab.client) a demo ran but did not show what it should
    └── ServiceError                a service could not start (port in use, ...)
        └── ComponentFailed         (socketlab.supervisor) a part of a container process died

Subsystems add their own subclasses next to their code; keep this drawing in step.

Socket calls that talk to a peer run inside :func:`peer_errors`, which turns
``OSError`` (and the socket timeout) into the matching :class:`PeerUnavailable`
subclass, keeping the cause. Callers tell the cases apart by type, never by
message text.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

Operation = Literal["connect", "read", "send"]


class SocketlabError(Exception):
    """Root of every error socketlab raises on purpose."""


class ConfigError(SocketlabError):
    """An option or environment variable has a value we cannot use."""


class PeerUnavailable(SocketlabError):
    """The peer could not be reached, or went away (base of the four cases below)."""


class ConnectFailed(PeerUnavailable):
    """No connection: refused, unreachable, a name that does not resolve, connect timeout."""


class ReadTimeout(PeerUnavailable):
    """Connected, but nothing arrived from the peer within the read timeout."""


class SendTimeout(PeerUnavailable):
    """Connected, but the peer (or the network) took nothing within the timeout."""


class PeerClosed(PeerUnavailable):
    """The peer closed or reset the connection (or the kernel gave up on it)."""


class ServiceError(SocketlabError):
    """A service could not start or keep running."""


def _is_our_timeout(exc: OSError) -> bool:
    # A socket timeout (settimeout) is TimeoutError without an errno; the kernel's
    # ETIMEDOUT (retransmissions gave up) is also a TimeoutError, but it means the
    # connection died, not that the peer was slow to answer.
    return isinstance(exc, TimeoutError) and exc.errno is None


def translate_os_error(
    exc: OSError, *, peer: str, operation: Operation, timeout: float | None = None
) -> PeerUnavailable:
    """The :class:`PeerUnavailable` subclass for ``exc``, raised while ``operation``-ing ``peer``."""
    waited = f"{timeout:g} s" if timeout is not None else "the timeout"
    reason = exc.strerror or str(exc) or type(exc).__name__
    if operation == "connect":
        if _is_our_timeout(exc):
            return ConnectFailed(
                f"cannot reach {peer}: no connection within {waited} (connect timeout)"
            )
        return ConnectFailed(f"cannot reach {peer}: {reason}")
    if _is_our_timeout(exc):
        if operation == "read":
            return ReadTimeout(f"no answer from {peer} within {waited} (read timeout)")
        return SendTimeout(f"{peer} took nothing for {waited} (send timeout)")
    if isinstance(exc, ConnectionError | TimeoutError) or exc.errno in _CLOSED_ERRNOS:
        return PeerClosed(f"{peer} closed the connection ({reason})")
    verb = "receiving from" if operation == "read" else "sending to"
    return PeerUnavailable(f"{verb} {peer} failed: {reason}")


# Errnos (besides ConnectionError's) meaning the connection is gone for good.
_CLOSED_ERRNOS = frozenset({errno.ENOTCONN, errno.ESHUTDOWN, errno.ENETRESET})


@contextmanager
def peer_errors(peer: str, operation: Operation, *, timeout: float | None = None) -> Iterator[None]:
    """Run socket calls on ``peer``; an ``OSError`` leaves as a :class:`PeerUnavailable`.

    ``operation`` says what the block does (``connect``, ``read`` or ``send``) so
    a timeout becomes :class:`ConnectFailed`, :class:`ReadTimeout` or
    :class:`SendTimeout`; ``timeout`` (seconds) only goes into the message.
    """
    try:
        yield
    except OSError as exc:
        raise translate_os_error(exc, peer=peer, operation=operation, timeout=timeout) from exc
