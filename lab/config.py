"""The controller's settings: one :class:`LabConfig`, read once at the entry point.

``lab`` (``lab.cli.main``) reads ``LabConfig.from_env()`` before it builds its
parser, and :class:`lab.api.Lab` reads it when the API is used directly; the
object is then passed down (runners find it as ``lab.config``). Nothing in
``lab`` reads the environment at import time. A bad value is a
:class:`socketlab.errors.ConfigError` whose message is the one line the CLI
prints (``SOCKETLAB_SHAPING_TIMEOUT='abc' is not a number``)::

    LabConfig                 project, Compose command and files, checkout, pickle key,
    │                             admin token, Docker, `lab exec` and `lab cp` bounds
    ├── shaping: ShapingConfig    lab shape: namespace commands, helpers, self-check
    ├── scenario: ScenarioConfig  lab run: readiness, recovery, reads, check polling
    ├── capture: CaptureConfig    lab run: tcpdump helpers
    ├── bench: BenchConfig        lab bench / lab sweep
    ├── report: ReportConfig      report.html and pcap analysis (lab.report.config)
    ├── watch: WatchConfig        lab watch: refresh, reads, counter helpers
    └── swarm: SwarmConfig        lab --swarm: node endpoints, images, timeouts (lab.swarm.config)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from lab.images import ImagesConfig
from lab.report.config import ReportConfig
from lab.swarm.config import SwarmConfig
from socketlab.config import EnvConfig, env_config, env_field

PICKLE_KEY_ENV = "SOCKETLAB_PICKLE_KEY"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# What runs the lab's services (lab.orchestrator).
OrchestratorKind = Literal["compose", "swarm"]


@dataclass(frozen=True, kw_only=True)
class ShapingConfig(EnvConfig):
    """``lab shape`` / ``unshape`` / ``partition`` and the shaping self-check."""

    netns_timeout: float = env_field(
        "SOCKETLAB_SHAPING_TIMEOUT", 30.0, "seconds a shaping command in a namespace may take"
    )
    helper_ready_timeout: float = env_field(
        "SOCKETLAB_SHAPER_READY_TIMEOUT",
        20.0,
        "seconds a shaping helper (and the self-check's iperf3 server) has to get ready",
    )
    helper_stop_timeout: int = env_field(
        "SOCKETLAB_SHAPER_STOP_TIMEOUT", 3, "seconds a shaping helper gets to stop before a kill"
    )
    check_pings: int = env_field(
        "SOCKETLAB_CHECK_PINGS", 50, "echo probes of a delay-only self-check (and lab RTTs)"
    )
    baseline_probes: int = env_field(
        "SOCKETLAB_BASELINE_PROBES", 50, "echo probes of the unshaped baseline before a self-check"
    )
    check_loss_probes: int = env_field(
        "SOCKETLAB_CHECK_LOSS_PROBES", 1000, "echo probes of a self-check that counts loss"
    )
    check_rate_seconds: int = env_field(
        "SOCKETLAB_CHECK_RATE_SECONDS", 4, "seconds of iperf3 in a rate self-check"
    )
    check_max_probes: int = env_field(
        "SOCKETLAB_CHECK_MAX_PROBES",
        20000,
        "most echo probes a self-check sends to measure bursty loss (about 40 bursts wanted)",
    )
    check_reorder_probes: int = env_field(
        "SOCKETLAB_CHECK_REORDER_PROBES",
        1000,
        "numbered datagrams of a self-check's one-way stream that measures reordering",
    )
    check_stream_port: int = env_field(
        "SOCKETLAB_CHECK_STREAM_PORT",
        5299,
        "UDP port the self-check's stream listener binds in the destination's namespace",
    )
    check_host_slack: float = env_field(
        "SOCKETLAB_CHECK_HOST_SLACK",
        0.002,
        "seconds a busy host may add to a self-check's delay percentiles (upper side only)",
    )
    check_load_probes: int = env_field(
        "SOCKETLAB_CHECK_LOAD_PROBES",
        100,
        "echo probes (20 ms apart) of a queue's RTT under load in a self-check",
    )
    iperf_port: int = env_field(
        "SOCKETLAB_IPERF_PORT", 5201, "port of the self-check's iperf3 server"
    )
    helper_cpu_shares: int = env_field(
        "SOCKETLAB_SHAPER_CPU_SHARES",
        8192,
        "CPU weight of a verdict loop's helper (Docker cpu-shares, default 1024; 0 leaves it): "
        "on a busy host it is scheduled first, which keeps its delays precise",
    )
    stats_interval: float = env_field(
        "SOCKETLAB_SHAPER_STATS_INTERVAL",
        1.0,
        "seconds between a verdict loop's counter lines, passed to each shaping helper "
        "(`lab watch` shows drops from them; one short log line each)",
    )


@dataclass(frozen=True, kw_only=True)
class ScenarioConfig(EnvConfig):
    """``lab run``: how long the runner waits for the lab, steps and checks."""

    exec_grace: float = env_field(
        "SOCKETLAB_SCENARIO_EXEC_GRACE",
        30.0,
        "seconds past a step's timeout the runner waits for the Docker exec call",
    )
    ready_timeout: float = env_field(
        "SOCKETLAB_SCENARIO_READY_TIMEOUT", 30.0, "seconds the lab has to be healthy before a run"
    )
    recover_timeout: float = env_field(
        "SOCKETLAB_SCENARIO_RECOVER_TIMEOUT",
        120.0,
        "seconds the lab has to be healthy again after a scenario's faults",
    )
    read_timeout: float = env_field(
        "SOCKETLAB_SCENARIO_READ_TIMEOUT",
        30.0,
        "seconds for one read of a check's URL or file (hashing gets ten times that)",
    )
    check_poll: float = env_field(
        "SOCKETLAB_SCENARIO_CHECK_POLL", 0.5, "seconds between tries of a check with `within`"
    )
    file_copy_limit: int = env_field(
        "SOCKETLAB_SCENARIO_FILE_COPY_LIMIT",
        16 * 1024 * 1024,
        "bytes up to which a same_file check copies the files into the results",
    )
    daemon_dir: str = env_field(
        "SOCKETLAB_SCENARIO_DAEMON_DIR",
        "/tmp",  # noqa: S108 - a folder inside the service's container, not the host's
        "folder in a container where a daemon step keeps its pid and output (writable there)",
    )
    daemon_output_limit: int = env_field(
        "SOCKETLAB_SCENARIO_DAEMON_OUTPUT_LIMIT",
        1024 * 1024,
        "bytes of a daemon step's stdout and of its stderr kept (the last ones)",
    )


@dataclass(frozen=True, kw_only=True)
class CaptureConfig(EnvConfig):
    """``lab run --capture``: the tcpdump helpers."""

    snaplen: int = env_field("SOCKETLAB_CAPTURE_SNAPLEN", 256, "bytes kept of each packet")
    start_timeout: float = env_field(
        "SOCKETLAB_CAPTURE_START_TIMEOUT", 30.0, "seconds tcpdump has to start listening"
    )
    stop_timeout: float = env_field(
        "SOCKETLAB_CAPTURE_STOP_TIMEOUT", 20.0, "seconds tcpdump has to exit after SIGINT"
    )
    max_seconds: float = env_field(
        "SOCKETLAB_CAPTURE_MAX_SECONDS",
        3600.0,
        "seconds after which a forgotten capture helper ends by itself",
    )


@dataclass(frozen=True, kw_only=True)
class BenchConfig(EnvConfig):
    """``lab bench`` and ``lab sweep``."""

    iperf_port: int = env_field(
        "SOCKETLAB_BENCH_IPERF_PORT", 5202, "port of the benchmark's iperf3 server"
    )
    peer_port: int = env_field(
        "SOCKETLAB_BENCH_PEER_PORT", 5203, "port of the benchmark's peer (socat) in the server"
    )
    ready_timeout: float = env_field(
        "SOCKETLAB_BENCH_READY_TIMEOUT", 20.0, "seconds a benchmark server has to get ready"
    )
    step_timeout: float = env_field(
        "SOCKETLAB_BENCH_STEP_TIMEOUT", 300.0, "seconds one benchmark step (a transfer) may take"
    )
    rtt_pings: int = env_field(
        "SOCKETLAB_BENCH_RTT_PINGS", 10, "echo probes of the RTT reported per condition"
    )


@dataclass(frozen=True, kw_only=True)
class WatchConfig(EnvConfig):
    """``lab watch`` and ``lab run --watch``."""

    interval: float = env_field("SOCKETLAB_WATCH_INTERVAL", 1.0, "seconds between refreshes")
    read_timeout: float = env_field(
        "SOCKETLAB_WATCH_READ_TIMEOUT",
        2.0,
        "seconds for one read of a refresh (the UDP listener's stats, a log tail)",
    )
    helper_timeout: float = env_field(
        "SOCKETLAB_WATCH_HELPER_TIMEOUT",
        20.0,
        "seconds a counter helper has to start in a namespace",
    )
    max_stats_bytes: int = env_field(
        "SOCKETLAB_WATCH_MAX_STATS_BYTES",
        1024 * 1024,
        "largest UDP listener stats answer read (bytes)",
    )
    log_tail: int = env_field(
        "SOCKETLAB_WATCH_LOG_TAIL", 400, "log lines of each helper read per refresh"
    )


@env_config
@dataclass(frozen=True, kw_only=True)
class LabConfig(EnvConfig):
    """Everything the controller reads from the environment."""

    project: str = env_field("SOCKETLAB_PROJECT", "socketlab", "Compose project name (`lab -p`)")
    compose: str | None = env_field(
        "SOCKETLAB_COMPOSE",
        None,
        "command that runs Compose, e.g. `docker-compose` "
        "(default: `docker compose` if it answers, else `docker-compose`)",
    )
    compose_file: str | None = env_field(
        "SOCKETLAB_COMPOSE_FILE",
        None,
        "the project's Compose files (`lab -f`), separated as in COMPOSE_FILE (`:` on Linux) "
        "(default: docker-compose.yml and docker-compose.override.yml of the checkout)",
    )
    exec_timeout: float = env_field(
        "SOCKETLAB_EXEC_TIMEOUT", 3600.0, "seconds a `lab exec` command may run"
    )
    copy_limit: int = env_field(
        "SOCKETLAB_COPY_LIMIT",
        4 * 1024**3,
        "bytes `lab cp` copies at most in one archive (either way)",
    )
    root: Path | None = env_field(
        "SOCKETLAB_ROOT", None, "the socketlab checkout (default: found from the working folder)"
    )
    pickle_key: str | None = env_field(
        PICKLE_KEY_ENV,
        None,
        "HMAC key of the signed-pickle demo; set empty to disable pickle "
        "(default: a key made once per project in its state folder: build/ or .socketlab/)",
    )
    admin_token: str | None = env_field(
        "SOCKETLAB_ADMIN_TOKEN",
        None,
        "the lab's admin token (feed writes, schedules, faults, UDP reset) "
        "(default: a token made once per project in its state folder: build/ or .socketlab/)",
    )
    docker_host: str = env_field(
        "DOCKER_HOST", DEFAULT_DOCKER_HOST, "the Docker engine (read by the Docker SDK too)"
    )
    reaper: bool = env_field(
        "SOCKETLAB_REAPER",
        True,
        "start a reaper for each `lab run` and pytest session: if the controller dies, it "
        "undoes the run's network faults, or removes the session's lab (needs the engine's "
        "unix socket)",
    )
    orchestrator: OrchestratorKind = env_field(
        "SOCKETLAB_ORCHESTRATOR",
        "compose",
        "what runs the lab: `compose` on DOCKER_HOST, or `swarm`: a stack on the Swarm whose "
        "manager DOCKER_HOST is (`lab --swarm`)",
    )
    shaping: ShapingConfig = field(default_factory=ShapingConfig)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    swarm: SwarmConfig = field(default_factory=SwarmConfig)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """As :meth:`EnvConfig.from_env`, except that an empty ``SOCKETLAB_PICKLE_KEY``
        is kept (it disables pickle) instead of meaning "unset"."""
        env = os.environ if environ is None else environ
        raw_key = env.get(PICKLE_KEY_ENV)
        if "pickle_key" not in overrides and raw_key is not None and not raw_key.strip():
            overrides["pickle_key"] = ""
        return super().from_env(env, **overrides)
