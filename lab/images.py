"""Building the lab's images, offline when no registry answers.

Two images, one Dockerfile (``services/Dockerfile``):

* **runtime** — what the four services run. ``FROM $BASE_IMAGE``, by default a
  public ``python:3.11-slim``. When that image is neither present nor
  pullable (no registry, as on air-gapped machines), we build a local base
  from Debian packages instead: ``mmdebstrap`` writes a rootfs from the
  host's own apt mirror, ``docker import`` turns it into an image.
* **netkit** — the helper that joins a service's network namespace to shape
  or measure it (``tc``, ``iptables``, NFQUEUE, ``iperf3``, ``ping``). Always
  the local Debian base, because it needs those packages.

Python dependencies are downloaded (and, for sdists, built) on the host into
``build/wheels/<set>-<hash>/`` and installed in the image with
``pip --no-index``: ``docker build`` itself needs no network.

Every image is tagged with a digest of its inputs (Dockerfile, package code,
wheels, base image id); an image with that tag already present is reused, so
a second ``lab up`` with no change builds nothing.

The pure parts (apt source parsing, the mmdebstrap command, the base-image
choice, input digests) are functions with unit tests; ``ensure_images`` runs
them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from lab.errors import ImageBuildError

log = logging.getLogger("lab.images")

DEFAULT_BASE_IMAGE = "python:3.11-slim"
LOCAL_BASE_REPO = "socketlab/base"
RUNTIME_REPO = "socketlab/runtime"
NETKIT_REPO = "socketlab/netkit"
INPUTS_LABEL = "io.socketlab.inputs"

# The local base carries what both images need; the runtime stage uses only
# python3 + venv from it, the netkit stage the network tools.
BASE_PACKAGES: tuple[str, ...] = (
    "ca-certificates",
    "python3",
    "python3-venv",
    "iproute2",
    "iptables",
    "iputils-ping",
    "iperf3",
    "socat",
    "openssl",  # lab bench's peer: socat | tee | openssl dgst -sha256
    "tcpdump",
    "procps",
    "netbase",
    "libnetfilter-queue1",
    "ethtool",
)

WHEEL_SETS: dict[str, tuple[str, ...]] = {
    "runtime": ("services/requirements.txt",),
    "netkit": ("services/requirements.txt", "services/requirements-netkit.txt"),
}

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- pure


@dataclass(frozen=True, kw_only=True)
class AptSource:
    """One apt source: ``deb URI SUITE COMPONENTS...``."""

    uri: str
    suite: str
    components: tuple[str, ...]

    def line(self) -> str:
        return f"deb {self.uri} {self.suite} {' '.join(self.components)}"


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Parse ``sources.list`` style text (``deb [opts] URI SUITE COMP...``)."""
    sources = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)  # drop [signed-by=...] options
        fields = line.split()
        if len(fields) < 4:
            continue
        sources.append(AptSource(uri=fields[1], suite=fields[2], components=tuple(fields[3:])))
    return sources


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse deb822 ``*.sources`` text (stanzas of ``Types/URIs/Suites/Components``)."""
    sources = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.lstrip().startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            key, value = raw.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                sources.append(AptSource(uri=uri, suite=suite, components=components))
    return sources


def base_mirror_lines(sources: Iterable[AptSource], codename: str) -> list[str]:
    """The host's sources for ``codename`` (and -updates/-security), as mmdebstrap mirrors.

    Third-party repositories (other suites, non-``main`` components only) are
    left out: the base needs nothing from them.
    """
    wanted = {codename, f"{codename}-updates", f"{codename}-security"}
    lines = []
    for source in sources:
        if source.suite in wanted and "main" in source.components:
            line = AptSource(uri=source.uri, suite=source.suite, components=("main",)).line()
            if line not in lines:
                lines.append(line)
    return lines


def mmdebstrap_argv(
    *, suite: str, mirrors: Sequence[str], packages: Sequence[str], output: str
) -> list[str]:
    """The mmdebstrap command that writes the local base rootfs tarball."""
    if not mirrors:
        raise ImageBuildError(f"no apt mirror for {suite!r} found in the host's apt sources")
    return [
        "mmdebstrap",
        "--variant=apt",
        "--format=tar",
        f"--include={','.join(sorted(packages))}",
        # docs, man pages and locales only make the image bigger
        "--dpkgopt=path-exclude=/usr/share/{doc,man,locale}/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        suite,
        output,
        *mirrors,
    ]


@dataclass(frozen=True, kw_only=True)
class BaseChoice:
    """Which base image the runtime stage builds on, and why."""

    image: str
    build_local: bool
    reason: str


def choose_base_image(
    *, requested: str, present: bool, pullable: bool, local_image: str
) -> BaseChoice:
    """Use ``requested`` when it is here or can be pulled; else build the local base."""
    if present:
        return BaseChoice(image=requested, build_local=False, reason=f"{requested} is present")
    if pullable:
        return BaseChoice(image=requested, build_local=False, reason=f"pulled {requested}")
    return BaseChoice(
        image=local_image,
        build_local=True,
        reason=f"{requested} is not present and cannot be pulled: using a local Debian base",
    )


def digest(parts: Iterable[bytes]) -> str:
    """SHA-256 over length-prefixed parts (so boundaries matter), hex."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()


def tree_digest(root: Path, paths: Iterable[Path], *, extra: Iterable[str] = ()) -> str:
    """Digest of files (names relative to ``root`` and contents) plus ``extra`` strings."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        elif path.is_file():
            files.append(path)
    parts: list[bytes] = [s.encode() for s in extra]
    for file in sorted(set(files)):
        parts.append(str(file.relative_to(root)).encode())
        parts.append(file.read_bytes())
    return digest(parts)


def local_base_tag(codename: str, packages: Sequence[str]) -> str:
    return f"{LOCAL_BASE_REPO}:{codename}-{digest(p.encode() for p in sorted(packages))[:12]}"


def stale_image_tags(
    tags: Iterable[str], *, keep: Iterable[str], in_use: Iterable[str]
) -> list[str]:
    """Our runtime/netkit tags that are neither the current set nor used by a container."""
    ours = (f"{RUNTIME_REPO}:", f"{NETKIT_REPO}:")
    protected = set(keep) | set(in_use)
    return sorted(t for t in set(tags) if t.startswith(ours) and t not in protected)


# --------------------------------------------------------------------------- impure


def host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    """The host's release codename (``bookworm``), from /etc/os-release."""
    try:
        text = os_release.read_text()
    except OSError as exc:
        raise ImageBuildError(f"cannot read {os_release}: {exc}") from exc
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.MULTILINE)
    if not match:
        raise ImageBuildError(f"no VERSION_CODENAME in {os_release}: not a Debian-like host?")
    return match.group(1)


def host_apt_sources(apt_dir: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every enabled apt source of the host (sources.list, *.list, *.sources)."""
    sources: list[AptSource] = []
    candidates = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in candidates:
        if not path.is_file():
            continue
        if path.suffix == ".list":
            sources += parse_one_line_sources(path.read_text())
        elif path.suffix == ".sources":
            sources += parse_deb822_sources(path.read_text())
    return sources


def _image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def _pull(client: docker.DockerClient, ref: str, progress: Progress) -> bool:
    progress(f"pulling {ref} ...")
    try:
        client.images.pull(ref)
    except docker.errors.APIError as exc:
        progress(f"cannot pull {ref}: {exc.explanation or exc}")
        return False
    return True


def ensure_local_base(client: docker.DockerClient, progress: Progress) -> str:
    """Build (once) the Debian base image from the host's apt mirror; return its tag."""
    codename = host_codename()
    tag = local_base_tag(codename, BASE_PACKAGES)
    if _image_exists(client, tag):
        return tag
    mirrors = base_mirror_lines(host_apt_sources(), codename)
    progress(f"building local base image {tag} with mmdebstrap from {', '.join(mirrors)}")
    with tempfile.TemporaryDirectory(prefix="socketlab-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        argv = mmdebstrap_argv(
            suite=codename, mirrors=mirrors, packages=BASE_PACKAGES, output=str(rootfs)
        )
        try:
            subprocess.run(argv, check=True, timeout=1800, stdout=sys.stderr)
        except FileNotFoundError as exc:
            raise ImageBuildError(
                "mmdebstrap is not installed (apt-get install mmdebstrap): it is needed "
                "to build the base image when no registry is reachable"
            ) from exc
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise ImageBuildError(f"mmdebstrap failed: {exc}") from exc
        repository, image_tag = tag.split(":", 1)
        progress(f"importing rootfs as {tag}")
        try:
            client.api.import_image_from_file(
                str(rootfs),
                repository=repository,
                tag=image_tag,
                changes=[
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "ENV LANG=C.UTF-8",
                    f"LABEL {INPUTS_LABEL}={tag}",
                ],
            )
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"docker import of the base rootfs failed: {exc}") from exc
    return tag


def ensure_wheels(repo_root: Path, wheel_set: str, progress: Progress) -> Path:
    """Download/build the wheels of ``wheel_set`` on the host; return their folder.

    The folder name carries a digest of the requirement files, so a changed
    requirement gets a fresh folder and an unchanged one is reused.
    """
    req_files = [repo_root / name for name in WHEEL_SETS[wheel_set]]
    key = tree_digest(repo_root, req_files, extra=[sys.version.split()[0][:4]])[:12]
    folder = repo_root / "build" / "wheels" / f"{wheel_set}-{key}"
    stamp = folder / ".complete"
    if stamp.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    progress(f"downloading wheels for {wheel_set} into {folder.relative_to(repo_root)}")
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(folder)]
    for req in req_files:
        argv += ["-r", str(req)]
    try:
        subprocess.run(argv, check=True, timeout=900, stdout=sys.stderr)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise ImageBuildError(f"building wheels for {wheel_set} failed: {exc}") from exc
    merged = "".join(req.read_text() for req in req_files)
    (folder / "requirements.txt").write_text(merged)
    stamp.write_text(key + "\n")
    return folder


def _build(
    client: docker.DockerClient,
    *,
    repo_root: Path,
    target: str,
    tag: str,
    buildargs: dict[str, str],
    progress: Progress,
) -> None:
    progress(f"building {tag} (target {target})")
    try:
        stream: Iterable[dict[str, Any]] = client.api.build(
            path=str(repo_root),
            dockerfile="services/Dockerfile",
            target=target,
            tag=tag,
            buildargs=buildargs,
            labels={INPUTS_LABEL: tag.split(":", 1)[1]},
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            if "error" in chunk:
                raise ImageBuildError(f"building {tag} failed: {chunk['error'].strip()}")
            line = str(chunk.get("stream", "")).strip()
            if line.startswith("Step "):
                progress(f"  {line}")
    except docker.errors.APIError as exc:
        raise ImageBuildError(f"building {tag} failed: {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class ImageSet:
    """The image references a lab project runs."""

    runtime: str
    netkit: str


def ensure_images(
    client: docker.DockerClient,
    repo_root: Path,
    *,
    progress: Progress,
    requested_base: str | None = None,
) -> ImageSet:
    """Make sure the runtime and netkit images for the current sources exist."""
    requested = requested_base or os.environ.get("SOCKETLAB_BASE_IMAGE") or DEFAULT_BASE_IMAGE
    local_base = ensure_local_base(client, progress)  # netkit needs it in any case
    present = _image_exists(client, requested)
    choice = choose_base_image(
        requested=requested,
        present=present,
        pullable=not present and _pull(client, requested, progress),
        local_image=local_base,
    )
    progress(f"base image: {choice.image} ({choice.reason})")

    wheels = {name: ensure_wheels(repo_root, name, progress) for name in WHEEL_SETS}
    # Both stages see the same build args, so building one never invalidates
    # the other's cache.
    buildargs = {
        "BASE_IMAGE": choice.image,
        "NETKIT_BASE": local_base,
        "RUNTIME_WHEELS": str(wheels["runtime"].relative_to(repo_root)),
        "NETKIT_WHEELS": str(wheels["netkit"].relative_to(repo_root)),
    }
    code = [
        repo_root / "services/Dockerfile",
        repo_root / "services/install-venv.sh",
        repo_root / "services/socketlab",
    ]
    images = {}
    for target, repo in (("runtime", RUNTIME_REPO), ("netkit", NETKIT_REPO)):
        base_ids = [client.images.get(choice.image).id, client.images.get(local_base).id]
        key = tree_digest(repo_root, [*code, *wheels.values()], extra=[target, *base_ids])[:16]
        tag = f"{repo}:{key}"
        if not _image_exists(client, tag):
            _build(
                client,
                repo_root=repo_root,
                target=target,
                tag=tag,
                buildargs=buildargs,
                progress=progress,
            )
        images[target] = tag
    return ImageSet(runtime=images["runtime"], netkit=images["netkit"])


def prune_images(client: docker.DockerClient, current: ImageSet, progress: Progress) -> list[str]:
    """Remove lab images left by earlier sources; keep ``current`` and any in use."""
    tags = [tag for image in client.images.list() for tag in image.tags]
    in_use = [tag for container in client.containers.list(all=True) for tag in container.image.tags]
    removed = []
    for tag in stale_image_tags(tags, keep=[current.runtime, current.netkit], in_use=in_use):
        try:
            client.images.remove(tag)
        except docker.errors.APIError as exc:
            progress(f"kept {tag}: {exc.explanation or exc}")
            continue
        removed.append(tag)
    return removed
