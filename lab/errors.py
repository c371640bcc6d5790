"""The lab controller's exception tree.

Everything the controller raises on purpose derives from :class:`LabError`;
the CLI turns it into a one-line message and a non-zero exit code::

    LabError
    ├── DockerUnavailable       no Docker engine answers
    ├── DockerError             a Docker API call failed (translated in lab.engine only)
    │   └── DockerNotFound      the container, network or volume is gone
    ├── ComposeError            the Compose CLI is missing or a compose command failed
    │   └── ComposeConfigError  Compose rejects the project's files (lab.compose)
    ├── TopologyError           lab.topology: the project is not a lab we can work with
    │   ├── NoSharedNetwork     two containers share no network, or several and none chosen
    │   └── NoIPv6              an IPv6 request on a network or container without IPv6
    ├── PrerequisiteMissing     lab.doctor: a required prerequisite is missing on this machine
    ├── TransferError           lab.transfer: a copy would escape its destination
    ├── ImageBuildError         base image, wheels or image build failed
    ├── NotReady                a service did not become healthy before its deadline
    │   ├── ServiceStopped      a service exited while the lab waited for it to be healthy
    │   ├── ServiceBlocked      its orchestrator says it cannot run (a Swarm task not placed)
    │   └── HelperNotReady      a helper container exited, or did not log what it should, in time
    ├── ServiceNotFound         no running container for a service in this project
    │   └── UnknownTarget       lab.addressing: no such service, or a replica it does not run
    ├── CommandTimeout          a command in a container ran past its timeout
    ├── ShapingError            lab.shaping: a link could not be shaped, healed or read
    │   ├── SpecError           a shaping option or profile entry is not valid
    │   └── SelfCheckFailed     shaped, but the self-check measured something else
    ├── BenchError              lab.bench: a benchmark or sweep could not run
    │   └── GridError           a sweep grid option has a value we cannot use
    ├── CaptureError            lab.scenario.capture: a pcap helper could not start, stop or copy
    ├── SwarmError              lab.swarm: the Swarm cannot run the lab
    │   ├── NotASwarmManager    the engine the controller talks to is not a Swarm manager
    │   ├── NodeUnreachable     a node's engine has no endpoint, does not answer, or is another
    │   └── StackPlanError      something in the project has no meaning on a Swarm
    ├── ReportError             lab.report: report.html or a part of it could not be built
    │   ├── PcapError           a file is not a pcap the analysis reads (magic, link type, I/O)
    │   └── ResultsError        results.json is not what ``lab run`` writes (where, what)
    └── ScenarioError           lab.scenario: a scenario file is invalid (file, line, what)

A scenario check that does not hold is a result (reported, exit code 1), not
an exception; neither is a report that could not be built (``lab run`` warns and
keeps the run's results).

Lower-layer errors are translated in one place each, keeping the cause with
``raise ... from exc``: Docker SDK and HTTP errors in :func:`lab.engine.docker_errors`,
the Compose CLI's in :meth:`lab.compose.Compose.run`. A bad setting is a
:class:`socketlab.errors.ConfigError` (not a LabError: the settings layer is
shared with the containers); ``lab.cli`` turns it into one line and exit code 2.
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


class DockerError(LabError):
    """A Docker API call failed (the SDK's error is the cause)."""


class DockerNotFound(DockerError):
    """The container, network or volume a Docker call named no longer exists."""


class ServiceStopped(NotReady):
    """A service the lab waits for has exited: waiting longer cannot help."""


class ServiceBlocked(NotReady):
    """The orchestrator says a service cannot run (a Swarm task that cannot be placed or
    was rejected, with Swarm's reason): waiting longer cannot help."""


class HelperNotReady(NotReady):
    """A helper container exited, or did not log what it should before its deadline.

    ``exited`` tells the two apart; ``output`` is what the helper had logged.
    """

    def __init__(self, message: str, *, exited: bool, output: str) -> None:
        super().__init__(message)
        self.exited = exited
        self.output = output

    @property
    def last_line(self) -> str:
        lines = self.output.strip().splitlines()
        return lines[-1] if lines else "no output"
