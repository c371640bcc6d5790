"""Errors of lab.bench (part of the tree drawn in ``lab.errors``)::

LabError
└── BenchError          a benchmark or sweep could not run, or gave no usable figure
    └── GridError       a sweep grid option (``--loss 0,x``) is not valid
"""

from __future__ import annotations

from lab.errors import LabError


class BenchError(LabError):
    """A benchmark or sweep could not run, or a tool gave no usable figure."""


class GridError(BenchError):
    """A sweep grid option has a value we cannot use."""
