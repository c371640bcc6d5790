"""How the lab's images reach the Swarm's nodes (pure): :func:`distribution_plan`.

The images are built (or found) on one engine, the *build engine*
(``SOCKETLAB_SWARM_BUILD_HOST``, default the manager). Two ways out:

* **a registry** (``SOCKETLAB_SWARM_REGISTRY``): each image is tagged
  ``REGISTRY/NAME:TAG`` and pushed once; the stack names those references,
  and every node pulls what its tasks need (Swarm does that);
* **no registry** (air-gapped): the images are saved once (``docker save``,
  one tarball for all of them, so shared layers travel once) and loaded
  (``docker load``) into each usable node that lacks one of them (with
  ``--spread`` pinning every service, only the nodes it chose); a node that
  has them all gets nothing.

Images the build engine does not hold (``redis:7``) are the nodes' own
business: they pull them as Swarm asks. What was loaded is recorded
(:func:`record_document`) so ``lab down`` removes those tags and no others.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lab.swarm.errors import SwarmError
from lab.swarm.nodes import Node, sorted_nodes

# A Swarm config holds at most 500 KB; the record is a few hundred bytes per node.
MAX_RECORD_BYTES = 500 * 1024


@dataclass(frozen=True, kw_only=True)
class NodeLoad:
    """Images to ``docker load`` into one node."""

    node: Node
    images: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class DistributionPlan:
    """What to push, what to load where, and the reference each service runs."""

    refs: Mapping[str, str]  # image on the build engine -> reference the stack names
    push: tuple[tuple[str, str], ...] = ()  # (image, registry reference)
    loads: tuple[NodeLoad, ...] = ()
    pulled: tuple[str, ...] = ()  # not on the build engine: nodes pull these themselves

    @property
    def saved(self) -> tuple[str, ...]:
        """Every image some node gets by ``docker load`` (saved once, in one tarball)."""
        return tuple(dict.fromkeys(image for load in self.loads for image in load.images))

    def describe(self) -> str:
        parts = []
        if self.push:
            parts.append(f"push {len(self.push)} images to the registry; nodes pull them")
        for load in self.loads:
            parts.append(f"load {len(load.images)} images into {load.node.hostname}")
        if self.pulled:
            parts.append(f"nodes pull {', '.join(self.pulled)} themselves")
        return "; ".join(parts) or "every node has every image already"


def has_registry_host(image: str) -> bool:
    """Whether ``image`` names its registry (``reg.example:5000/x``, ``localhost/x``)."""
    first, sep, _ = image.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def registry_ref(image: str, registry: str) -> str:
    """``socketlab/runtime:abc`` in ``registry`` (an image naming a registry is kept)."""
    if has_registry_host(image):
        return image
    return f"{registry.rstrip('/')}/{image}"


def distribution_plan(
    images: Sequence[str],
    *,
    local: frozenset[str],
    nodes: Sequence[Node],
    present: Mapping[str, frozenset[str]],
    registry: str | None,
    targets: frozenset[str] | None = None,
) -> DistributionPlan:
    """Decide how ``images`` reach the usable ``nodes`` (see the module docstring).

    ``local``: the images the build engine holds; ``present``: node ID -> the
    images that node holds already (only needed without a registry);
    ``targets``: the IDs of the only nodes that will run tasks (``--spread``
    pinned every service), else None: any usable node may get one.
    """
    wanted = tuple(dict.fromkeys(images))
    ours = tuple(image for image in wanted if image in local)
    pulled = tuple(image for image in wanted if image not in local)
    if registry:
        refs = {image: registry_ref(image, registry) for image in ours}
        push = tuple((image, refs[image]) for image in ours if refs[image] != image)
        return DistributionPlan(refs={**{i: i for i in pulled}, **refs}, push=push, pulled=pulled)
    loads = []
    for node in sorted_nodes(receiving_nodes(nodes, targets)):
        have = present.get(node.id, frozenset())
        missing = tuple(image for image in ours if image not in have)
        if missing:
            loads.append(NodeLoad(node=node, images=missing))
    return DistributionPlan(
        refs={image: image for image in wanted}, loads=tuple(loads), pulled=pulled
    )


def receiving_nodes(nodes: Sequence[Node], targets: frozenset[str] | None) -> list[Node]:
    """The nodes that need the images: the usable ones (of ``targets`` when given)."""
    return [n for n in nodes if n.usable and (targets is None or n.id in targets)]


def record_document(loaded: Mapping[str, Sequence[str]]) -> bytes:
    """What was loaded where (node ID -> image references), as the record's bytes."""
    data = json.dumps({node: sorted(set(refs)) for node, refs in sorted(loaded.items())})
    encoded = data.encode()
    if len(encoded) > MAX_RECORD_BYTES:
        raise SwarmError(
            f"the record of loaded images is {len(encoded)} bytes, over a config's limit"
        )
    return encoded


def parse_record(data: bytes) -> dict[str, list[str]]:
    """A record's bytes -> node ID -> image references; anything else is refused."""
    if len(data) > MAX_RECORD_BYTES:
        raise SwarmError(f"a record of loaded images is {len(data)} bytes: not ours")
    try:
        document = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise SwarmError(f"a record of loaded images is not JSON: {exc}") from exc
    if not isinstance(document, dict) or not all(
        isinstance(refs, list) and all(isinstance(ref, str) for ref in refs)
        for refs in document.values()
    ):
        raise SwarmError("a record of loaded images is not {node: [image, ...]}")
    return {str(node): list(refs) for node, refs in document.items()}
