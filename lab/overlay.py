"""The lab's own Compose override, added to a project's files by ``lab up``.

Pure: :func:`lab_override` builds it from the :class:`~lab.topology.ProjectModel`.
It adds, without touching the user's files,

* the project label (``io.socketlab.project``) on every service, so ``lab
  down`` finds its containers whatever the files say, and the netkit image
  label, so helpers started later use the image the lab came up with. Not on
  networks: Compose v1 replaces a network's whole definition with an
  override's (its ``enable_ipv6`` and ``ipam`` would be lost); ``lab down``
  finds networks by Compose's own project label instead;
* for each service marked ``x-socketlab: {router: true}``, the sysctls that
  make it forward between its networks. Namespaced sysctls are set when the
  container starts: a helper cannot set them later (Docker mounts
  ``/proc/sys`` read-only, even with NET_ADMIN).

:func:`override_file` writes it (JSON is YAML to both Composes) for the
length of one Compose command.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lab.helpers import PROJECT_LABEL
from lab.topology import ProjectModel

NETKIT_LABEL = "io.socketlab.netkit-image"
FORWARD_V4 = "net.ipv4.ip_forward"
FORWARD_V6 = "net.ipv6.conf.all.forwarding"


def router_sysctls(model: ProjectModel, service: str) -> dict[str, str]:
    """Forwarding on for ``service``: IPv4 always, IPv6 when one of its networks has it."""
    spec = model.service(service)
    values = {FORWARD_V4: "1"}
    if any(model.network(key).ipv6 for key in spec.networks):
        values[FORWARD_V6] = "1"
    return values


def lab_override(model: ProjectModel, *, project: str, netkit_image: str) -> dict[str, Any]:
    """The override document (see the module docstring)."""
    labels = {PROJECT_LABEL: project}
    if netkit_image:
        labels[NETKIT_LABEL] = netkit_image
    services: dict[str, Any] = {}
    for spec in model.services:
        entry: dict[str, Any] = {"labels": dict(labels)}
        if spec.router:
            entry["sysctls"] = router_sysctls(model, spec.name)
        services[spec.name] = entry
    return {"services": services}


@contextlib.contextmanager
def override_file(document: dict[str, Any], *, project: str) -> Iterator[Path]:
    """``document`` in a temporary file that lives as long as the block."""
    with tempfile.TemporaryDirectory(prefix=f"socketlab-{project}-") as folder:
        path = Path(folder) / "socketlab.override.json"
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        yield path
