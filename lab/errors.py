"""The lab controller's exception tree.

Everything the controller raises on purpose derives from :class:`LabError`;
the CLI turns it into a one-line message and a non-zero exit code::

    LabError
    ├── DockerUnavailable       no Docker engine answers
    ├── ComposeError            the Compose CLI is missing or a compose command failed
    ├── ImageBuildError         base image, wheels or image build failed
    ├── NotReady                a service did not become healthy before its deadline
    ├── ServiceNotFound         no running container for a service in this project
    ├── CommandTimeout          a command in a container ran past its timeout
    ├── ShapingError            lab.shaping (defined there: SpecError, SelfCheckFailed)
    ├── BenchError              lab.bench: a benchmark or sweep could not run (GridError: bad grid)
    ├── CaptureError            lab.scenario.capture: a pcap helper could not start, stop or copy
    └── ScenarioError           lab.scenario: a scenario file is invalid (file, line, what)

A scenario check that does not hold is a result (reported, exit code 1), not
an exception.

Lower-layer errors (docker SDK, subprocess) are translated where they happen,
keeping the cause with ``raise ... from exc``.
"""

from __future__ import annotations


class LabError(Exception):
    """Root of every error the lab controller raises on purpose."""


class DockerUnavailable(LabError):
    """No Docker engine answers at the configured address."""


class ComposeError(LabError):
    """The Compose CLI is missing, or a Compose command failed."""


class ImageBuildError(LabError):
    """Building the base image, the wheels or a lab image failed."""


class NotReady(LabError):
    """A service did not become healthy before its deadline."""


class ServiceNotFound(LabError):
    """There is no container for that service in this lab project."""


class CommandTimeout(LabError):
    """A command run in a container did not finish before its timeout."""
