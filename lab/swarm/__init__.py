"""The lab on a Docker Swarm: ``lab up --swarm`` (``SOCKETLAB_ORCHESTRATOR=swarm``).

The project's Compose file becomes a stack on the Swarm whose manager
``DOCKER_HOST`` names; :class:`~lab.swarm.orchestrator.SwarmOrchestrator` is the
second implementation of :class:`lab.orchestrator.Orchestrator`, so every
``lab`` command (status, exec, shape, partition, run, bench, capture) works on
it as it does under Compose.

Modules, pure first:

* ``plan``: Compose's normalised config -> the stack file, and what stack
  deploy ignores, handled (waves for ``depends_on``, restart policies, dnsrr);
* ``placement``: ``--spread``, a node per service;
* ``nodes``: the node list and each node's Docker endpoint;
* ``distribution``: registry push, or save once and load where missing;
* ``tasks``: the manager's tasks as the lab's containers (node, state, error);
* ``orchestrator``: the I/O; ``config``: ``SOCKETLAB_SWARM_*``; ``errors``.

Why each node's own engine, and not a global helper service: a shaping or
capture helper must join the network namespace of one task, on the node that
runs it. Swarm services cannot do that (a service spec has no
``network_mode: container:...``), so a global service could only do it by
holding every node's Docker socket and taking orders over the network: root
on every node for anything on the overlay, and a second control channel to
secure. The node's engine does it directly, with the same helper code as under
Compose, and the endpoint (a unix socket, ``ssh://`` through the user's own
ssh set-up, or ``tcp://`` the operator already secured) is the user's choice.
Nodes are only contacted for work on them: status and health come from the
manager's task list alone.
"""
