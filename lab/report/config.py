"""Settings of lab.report, read once (``ReportConfig.from_env()``) where a report is made."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from socketlab.config import EnvConfig, env_config, env_field
from socketlab.errors import ConfigError


@env_config
@dataclass(frozen=True, kw_only=True)
class PcapLimits(EnvConfig):
    """Bounds on what one capture may cost: packets read, state kept, bins drawn."""

    max_packets: int = env_field(
        "SOCKETLAB_REPORT_MAX_PACKETS",
        1_000_000,
        "packets of one pcap analysed; the rest is counted as not read",
    )
    max_record: int = env_field(
        "SOCKETLAB_REPORT_MAX_RECORD",
        262_144,
        "largest pcap record accepted (bytes); a larger length field ends the read as damaged",
    )
    max_flows: int = env_field(
        "SOCKETLAB_REPORT_MAX_FLOWS",
        1024,
        "TCP connections and UDP sessions analysed per pcap; more are counted, not analysed",
    )
    max_in_flight: int = env_field(
        "SOCKETLAB_REPORT_MAX_IN_FLIGHT",
        1024,
        "unacknowledged segments remembered per direction for RTT samples",
    )
    max_rtt_samples: int = env_field(
        "SOCKETLAB_REPORT_MAX_RTT_SAMPLES",
        100_000,
        "RTT samples kept per pcap (a uniform sample of them beyond that)",
    )
    udp_window: int = env_field(
        "SOCKETLAB_REPORT_UDP_WINDOW",
        4096,
        "sequence numbers behind the highest in which a late datagram still fills its gap",
    )
    max_bins: int = env_field(
        "SOCKETLAB_REPORT_MAX_BINS",
        100_000,
        "time bins per pcap; packets after the last one are counted but not plotted",
    )
    bin_seconds: float = env_field(
        "SOCKETLAB_REPORT_BIN_SECONDS", 0.1, "width of the analysis's time bins (seconds)"
    )

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if value <= 0:
                setting = spec.metadata["socketlab.env"].name
                raise ConfigError(f"{setting}={value!r} must be above 0")


@env_config
@dataclass(frozen=True, kw_only=True)
class ReportConfig(EnvConfig):
    """Everything report.html needs from the environment."""

    pcap: PcapLimits = field(default_factory=PcapLimits)
    plot_bins: int = env_field(
        "SOCKETLAB_REPORT_PLOT_BINS", 200, "most bars or points per plotted series"
    )
    output_chars: int = env_field(
        "SOCKETLAB_REPORT_OUTPUT_CHARS", 4000, "characters of a step's output shown in the report"
    )

    def __post_init__(self) -> None:
        if self.plot_bins < 2:
            raise ConfigError(f"SOCKETLAB_REPORT_PLOT_BINS={self.plot_bins} must be at least 2")
        if self.output_chars < 0:
            raise ConfigError(f"SOCKETLAB_REPORT_OUTPUT_CHARS={self.output_chars} is negative")
