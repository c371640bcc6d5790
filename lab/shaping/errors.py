"""Errors of lab.shaping (part of the tree drawn in ``lab.errors``)::

LabError
└── ShapingError        shaping could not be applied, or did not take effect
    └── SpecError       a shaping option or profile has a value we cannot use
"""

from __future__ import annotations

from lab.errors import LabError


class ShapingError(LabError):
    """Shaping could not be applied, or the self-check measured something else."""


class SpecError(ShapingError):
    """A shaping option (``--delay 40xs``) or a profile entry is not valid."""


class SelfCheckFailed(ShapingError):
    """The link was shaped, but the self-check measured something else.

    ``rows`` holds every measurement (metric, requested, measured, result,
    note), the passing ones too, so a front end can print the whole table.
    """

    def __init__(self, message: str, *, rows: tuple[dict[str, str], ...]) -> None:
        super().__init__(message)
        self.rows = rows
