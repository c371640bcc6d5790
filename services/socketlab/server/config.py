"""The lab protocol server's settings, read once from the container's environment."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from socketlab.config import LAB_PROTOCOL_PORT, EnvConfig, env_config, env_field
from socketlab.credentials import PICKLE_KEY_FILE, read_secret
from socketlab.objects import DEFAULT_MAX_PICKLE, PICKLE_TYPE
from socketlab.protocol import Limits
from socketlab.sampledata import DEFAULT_DATA_ROOT
from socketlab.server.connection import Deadlines


@env_config
@dataclass(frozen=True, kw_only=True)
class ServerConfig(EnvConfig):
    """Everything the server can be told; :meth:`from_env` reads ``SOCKETLAB_*`` variables.

    Fields without a variable (host, poll interval, ...) are for tests and embedders.
    """

    host: str = "0.0.0.0"
    port: int = env_field(
        "SOCKETLAB_PORT", LAB_PROTOCOL_PORT, "TCP port of the lab protocol server"
    )
    data_root: Path = env_field(
        "SOCKETLAB_DATA_ROOT",
        Path(DEFAULT_DATA_ROOT),
        "folder of the files the server lists and serves (sample files are made there)",
    )
    pickle_key: bytes | None = env_field(
        "SOCKETLAB_PICKLE_KEY",
        None,
        "shared HMAC key of the signed-pickle demo (server and client), outside the lab; "
        "unset: read from SOCKETLAB_PICKLE_KEY_FILE",
    )
    pickle_key_file: Path = env_field(
        "SOCKETLAB_PICKLE_KEY_FILE",
        Path(PICKLE_KEY_FILE),
        "file holding the signed-pickle demo's key (mounted by lab up in server and client); "
        "absent or empty: pickle disabled",
    )
    max_pickle: int = env_field(
        "SOCKETLAB_MAX_PICKLE",
        DEFAULT_MAX_PICKLE,
        "largest signed pickle the server accepts, in bytes",
    )
    max_connections: int = env_field(
        "SOCKETLAB_MAX_CONNECTIONS",
        256,
        "connections served at once; past it the one idle longest is evicted (busy if none is)",
    )
    max_per_peer: int = env_field(
        "SOCKETLAB_MAX_PER_PEER", 64, "connections one address may hold at once; more are refused"
    )
    header_timeout: float = env_field(
        "SOCKETLAB_HEADER_TIMEOUT",
        10.0,
        "seconds a request's header may take to arrive (also the grace before the minimum rate)",
    )
    stall_timeout: float = env_field(
        "SOCKETLAB_STALL_TIMEOUT",
        15.0,
        "seconds with nothing received mid-message, or no send progress, before the server hangs up",
    )
    idle_timeout: float = env_field(
        "SOCKETLAB_IDLE_TIMEOUT",
        60.0,
        "seconds of silence between messages before the server hangs up",
    )
    min_rate: float = env_field(
        "SOCKETLAB_MIN_RATE", 4096.0, "bytes/s a message must average once the header grace is over"
    )
    max_stall: float = 60.0  # the longest a ``stall`` request may make the server wait
    poll_interval: float = 0.5  # how soon the loop notices ``stop`` and expired deadlines
    max_header: int = env_field(
        "SOCKETLAB_MAX_HEADER",
        16 * 1024,
        "largest JSON message header the server accepts, in bytes",
    )
    max_content: int = env_field(
        "SOCKETLAB_MAX_CONTENT", 1024 * 1024, "largest message content the server accepts, in bytes"
    )
    generate_samples: bool = True  # create the sample files under data_root at start

    def resolved(self) -> ServerConfig:
        """This config with the pickle key read from its file unless given (at the entry point)."""
        if self.pickle_key is not None:
            return self
        return replace(self, pickle_key=read_secret(self.pickle_key_file))

    def limits(self) -> Limits:
        """The size limits of every connection's decoder."""
        return Limits(
            max_header=self.max_header,
            default_max_content=self.max_content,
            max_content={PICKLE_TYPE: self.max_pickle},
        )

    def deadlines(self) -> Deadlines:
        """The time limits of every connection."""
        return Deadlines(
            header_timeout=self.header_timeout,
            stall_timeout=self.stall_timeout,
            idle_timeout=self.idle_timeout,
            min_rate=self.min_rate,
        )
