"""Errors of lab.swarm (part of the tree drawn in ``lab.errors``)::

    LabError
    └── SwarmError              the lab cannot run on this Swarm, or a Swarm step failed
        ├── NotASwarmManager    the engine DOCKER_HOST names is not a Swarm manager
        ├── NodeUnreachable     a node's engine (for helpers, exec, images) cannot be reached
        └── StackPlanError      the Compose project cannot become a stack (what, and why)

A task that cannot be placed or was rejected is not a SwarmError: it is the
task's own error, named, in :class:`~lab.errors.ServiceBlocked` (``lab up``
and ``wait_healthy`` raise it, as they raise ``ServiceStopped`` under Compose).
"""

from __future__ import annotations

from lab.errors import LabError


class SwarmError(LabError):
    """The lab cannot run on this Swarm, or a Swarm step (deploy, remove, images) failed."""


class NotASwarmManager(SwarmError):
    """The engine the controller talks to is not a Swarm manager."""


class NodeUnreachable(SwarmError):
    """A node's Docker engine has no endpoint, does not answer, or is another node."""


class StackPlanError(SwarmError):
    """Something in the Compose project has no meaning on a Swarm (the key, the service)."""
