"""Errors of lab.report (drawn in the package docstring)."""

from __future__ import annotations

from lab.errors import LabError


class ReportError(LabError):
    """A report, or a part of one, could not be built."""


class PcapError(ReportError):
    """A capture file is not a pcap this analysis reads (bad magic, link type, I/O error).

    Damage inside a readable pcap (a cut-off record, a frame that does not
    decode) is not an error: it is counted in the analysis and the rest is used.
    """


class ResultsError(ReportError):
    """``results.json`` (or data shaped like it) is missing a field or has a wrong type."""
