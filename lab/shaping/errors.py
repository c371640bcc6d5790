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
