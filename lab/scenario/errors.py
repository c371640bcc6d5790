"""Errors of lab.scenario (part of the tree drawn in ``lab.errors``)::

    LabError
    └── ScenarioError       a scenario file is invalid (file, line and what is wrong)

A check that does not hold is not an exception: it is a failed
:class:`~lab.scenario.checks.CheckResult` in the report.
"""

from __future__ import annotations

from lab.errors import LabError


class ScenarioError(LabError):
    """A scenario file cannot be read, does not match the schema, or refers to nothing."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
