"""The socketlab exception tree.

Every exception raised on purpose by the in-container code derives from
:class:`SocketlabError`, so front ends (CLIs, servers) can turn it into a
one-line message and an exit code instead of a traceback::

    SocketlabError
    ├── ConfigError                 bad option or environment value
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
    ├── DatagramError               socketlab.udp.datagram: a datagram that breaks the UDP format
    ├── PathRefused                 socketlab.files: a name that escapes the data root
    ├── TransferError               a file transfer could not be completed or verified
    ├── PeerUnavailable             connect refused / timed out / reset
    ├── CommandFailed               (socketlab.client) a demo ran but did not show what it should
    └── ServiceError                a service could not start (port in use, ...)

Subsystems add their own subclasses next to their code; keep this drawing in step.
"""

from __future__ import annotations


class SocketlabError(Exception):
    """Root of every error socketlab raises on purpose."""


class ConfigError(SocketlabError):
    """An option or environment variable has a value we cannot use."""


class PeerUnavailable(SocketlabError):
    """The peer could not be reached, or went away (refused, timed out, reset)."""


class ServiceError(SocketlabError):
    """A service could not start or keep running."""
