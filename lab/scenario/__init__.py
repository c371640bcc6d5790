"""Declarative scenarios: YAML files -> validated plans -> runs with faults, checks, reports.

Python API (``lab run`` uses it; tests pass their own lab)::

    from lab.scenario import load_scenario, run_files
    report = run_files(lab, [Path("scenarios/hello.yaml")], results_root=Path("results"))
    report.passed, report.json_path, report.junit_path

Modules: ``loader`` (YAML with line numbers), ``schema`` (JSON Schema,
line-aware messages), ``plan`` (frozen dataclasses, pure builder), ``checks``
(pure verdicts over observations), ``report`` (results.json, junit.xml),
then the I/O: ``runner`` (one scenario, start to finish) with ``staging``
(congestion, shaped links, cleanup), ``execution`` (the steps), ``faults`` (the
fault timeline), ``observing`` (what checks read, and their verdicts) and
``artifacts``; ``session`` (a run of several files, its reports) and ``cli``.
The file format is described in ``scenarios/README.md``.
"""

from lab.scenario.checks import CheckResult, Observations, evaluate
from lab.scenario.errors import ScenarioError
from lab.scenario.plan import (
    Check,
    CheckKind,
    Fault,
    Link,
    Scenario,
    Step,
    build_scenario,
    load_scenario,
)
from lab.scenario.report import ScenarioResult
from lab.scenario.runner import ScenarioRunner
from lab.scenario.session import RunReport, run_files

__all__ = [
    "Check",
    "CheckKind",
    "CheckResult",
    "Fault",
    "Link",
    "Observations",
    "RunReport",
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "ScenarioRunner",
    "Step",
    "build_scenario",
    "evaluate",
    "load_scenario",
    "run_files",
]
