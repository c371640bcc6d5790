"""Building the lab's images, offline when no registry answers.

One Dockerfile (``services/Dockerfile``), three stages:

* **wheels** — the builder. It compiles every Python dependency of the images
  (every pinned package, pure Python or not) from its sdist,
  with the Python the images run. Compilers and headers live only here.
* **runtime** — what the four services run, with the builder's wheels.
* **netkit** — the helper that joins a service's network namespace to shape or
  measure it (``tc``, ``iptables``, NFQUEUE, ``iperf3``, ``ping``).

Two worlds, chosen by whether ``BASE_IMAGE`` (default ``python:3.11-slim``) is
present or can be pulled:

* **registry** — every stage starts from ``BASE_IMAGE`` and adds its Debian
  packages (network tools, gcc and headers for the builder) from that image's
  own apt sources.
* **offline** — ``mmdebstrap`` writes two rootfs from the host's own apt
  mirror, imported as ``NAMESPACE/base`` (runtime and netkit) and
  ``NAMESPACE/build-base`` (the same Python plus gcc and headers). They already
  hold every package, so ``docker build`` runs with ``--network none``.

The host never compiles: it only runs ``pip download`` of sdists (every
requirement is pinned in ``services/requirements*.txt``) and of the pinned
build tools' pure wheels, into ``<cache>/<hash>/`` (``build/sources`` of a
checkout, else ``~/.cache/socketlab/sources``, or ``SOCKETLAB_CACHE_DIR``).
Inside the build pip runs with ``--no-index``.

Where the build's files come from (:class:`ImageInputs`, :func:`find_inputs`):
the checkout the ``lab`` package lives in (an editable install), or the
installed package itself, which carries them as package data (``lab/_image``:
the Dockerfile, its scripts and the lock files, put there by ``setup.py``) next
to the installed ``socketlab`` package's own sources. Either way the build
context is assembled from those files (a tar stream, the same layout:
``services/...``, ``build/sources/<hash>/``), so ``lab`` needs no checkout and
the same sources give the same context and the same image tags wherever ``lab``
runs from.

Every image is tagged with a digest of its inputs (Dockerfile, scripts,
package code, downloaded sources, base image ids, package lists); an image
with that tag already present is reused, so a second ``lab up`` with no change
builds nothing.

The pure parts (apt source parsing, the mmdebstrap command, the base-image
and stage choice, lock parsing, pip commands, input digests) are functions
with unit tests; ``ensure_images`` runs them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import docker
import docker.errors

from lab.errors import ImageBuildError
from lab.progress import Progress
from socketlab.config import EnvConfig, env_config, env_field
from socketlab.errors import ConfigError

log = logging.getLogger("lab.images")

DEFAULT_BASE_IMAGE = "python:3.11-slim"
DEFAULT_NAMESPACE = "socketlab"
LOCAL_BASE_REPO = f"{DEFAULT_NAMESPACE}/base"
RUNTIME_REPO = f"{DEFAULT_NAMESPACE}/runtime"
NETKIT_REPO = f"{DEFAULT_NAMESPACE}/netkit"
INPUTS_LABEL = "io.socketlab.inputs"
# Stable names of the lab's images, so a project's own Dockerfile can build FROM them.
STABLE_TAG = "latest"

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
    "ethtool",
)
# What the netkit stage adds to a base that lacks it (a registry image).
NETKIT_PACKAGES: tuple[str, ...] = (
    "iproute2",
    "iptables",
    "iputils-ping",
    "iperf3",
    "socat",
    "tcpdump",
    "procps",
    "netbase",
    "ethtool",
)
# What the builder stage adds to a base that lacks it (plus python3-dev when
# that base's python3 has no headers).
BUILD_PACKAGES: tuple[str, ...] = ("gcc", "libc6-dev")
# The offline builder base: the same python3 as the local base, with everything
# the builder stage needs already installed.
BUILD_BASE_PACKAGES: tuple[str, ...] = ("python3", "python3-venv", "python3-dev", *BUILD_PACKAGES)

LOCK_FILES: tuple[str, ...] = ("services/requirements.txt", "services/requirements-netkit.txt")
BUILD_TOOLS_FILE = "services/requirements-build.txt"
SOURCES_DIR = Path("build") / "sources"
DOCKERFILE = "services/Dockerfile"
PACKAGE_DIR = "services/socketlab"
IMAGE_FILES: tuple[str, ...] = (
    DOCKERFILE,
    "services/install-venv.sh",
    "services/install-debs.sh",
    "services/build-wheels.sh",
)
IMAGE_INPUTS: tuple[str, ...] = (*IMAGE_FILES, PACKAGE_DIR)
# Every file besides the package sources that a build reads: what a wheel carries
# in lab/_image (setup.py copies services/Dockerfile, *.sh and requirements*.txt).
DATA_FILES: tuple[str, ...] = (*IMAGE_FILES, *LOCK_FILES, BUILD_TOOLS_FILE)
INSTALLED_DATA = "_image"
MMDEBSTRAP_TIMEOUT = 1800
PIP_DOWNLOAD_TIMEOUT = 900
BUILD_LOG_TAIL = 15  # lines of a failed build step shown with the error

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in build output

# A Docker repository path: lowercase components joined by '/'.
_NAMESPACE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")


@env_config
@dataclass(frozen=True, kw_only=True)
class ImagesConfig(EnvConfig):
    """Where the lab's images come from and what they are called."""

    base_image: str = env_field(
        "SOCKETLAB_BASE_IMAGE",
        DEFAULT_BASE_IMAGE,
        "base image of every stage when present or pullable (Debian-based, with python3 "
        "and venv); otherwise local bases are built with mmdebstrap",
    )
    namespace: str = env_field(
        "SOCKETLAB_IMAGE_NAMESPACE",
        DEFAULT_NAMESPACE,
        "repository prefix of the lab's images (NAMESPACE/runtime, /netkit, /base, /build-base)",
    )
    registry_timeout: float = env_field(
        "SOCKETLAB_REGISTRY_TIMEOUT", 20.0, "seconds lab doctor waits for a registry to answer"
    )
    cache_dir: Path | None = env_field(
        "SOCKETLAB_CACHE_DIR",
        None,
        "folder of the images' downloaded sources (default: build/sources of the checkout "
        "lab runs from, else ~/.cache/socketlab/sources)",
    )

    def __post_init__(self) -> None:
        if not _NAMESPACE.match(self.namespace):
            raise ConfigError(
                f"SOCKETLAB_IMAGE_NAMESPACE={self.namespace!r} is not a Docker repository "
                "prefix (lowercase letters, digits, '.', '_', '-', '/')"
            )


# --------------------------------------------------------------------------- pure


@dataclass(frozen=True, kw_only=True)
class ImageNames:
    """The repositories of one namespace's images."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def base(self) -> str:
        return f"{self.namespace}/base"

    @property
    def build_base(self) -> str:
        return f"{self.namespace}/build-base"

    @property
    def runtime(self) -> str:
        return f"{self.namespace}/runtime"

    @property
    def netkit(self) -> str:
        return f"{self.namespace}/netkit"


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
    """The mmdebstrap command that writes a local base rootfs tarball."""
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


@dataclass(frozen=True, kw_only=True)
class StagePlan:
    """The image each Dockerfile stage starts from, what it adds, and the build's network."""

    runtime_base: str
    netkit_base: str
    builder_base: str
    netkit_packages: tuple[str, ...]
    build_packages: tuple[str, ...]
    # False: the bases hold every package, the build runs with --network none.
    network: bool

    @property
    def bases(self) -> tuple[str, ...]:
        return (self.runtime_base, self.netkit_base, self.builder_base)

    def buildargs(self, sources: str) -> dict[str, str]:
        """The Dockerfile's build args (the same for every target, so caches are shared)."""
        return {
            "BASE_IMAGE": self.runtime_base,
            "NETKIT_BASE": self.netkit_base,
            "BUILDER_BASE": self.builder_base,
            "NETKIT_PACKAGES": " ".join(self.netkit_packages),
            "BUILD_PACKAGES": " ".join(self.build_packages),
            "SOURCES": sources,
        }


def plan_stages(choice: BaseChoice, *, local_base: str, build_base: str) -> StagePlan:
    """Registry world: every stage from the chosen image, packages from its apt sources.

    Offline world: runtime and netkit from the local base, the builder from the
    local build base (same Debian release, same python3, plus gcc and headers);
    the build needs no network.
    """
    if choice.build_local:
        return StagePlan(
            runtime_base=local_base,
            netkit_base=local_base,
            builder_base=build_base,
            netkit_packages=NETKIT_PACKAGES,
            build_packages=BUILD_PACKAGES,
            network=False,
        )
    return StagePlan(
        runtime_base=choice.image,
        netkit_base=choice.image,
        builder_base=choice.image,
        netkit_packages=NETKIT_PACKAGES,
        build_packages=BUILD_PACKAGES,
        network=True,
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
    files: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            for found in path.rglob("*"):
                if found.is_file() and "__pycache__" not in found.parts:
                    files[str(found.relative_to(root))] = found
        elif path.is_file():
            files[str(path.relative_to(root))] = path
    return files_digest(files, extra=extra)


def files_digest(files: Mapping[str, Path], *, extra: Iterable[str] = ()) -> str:
    """Digest of ``extra`` strings, then each file's name (as given) and contents,
    in path order (part by part, as :class:`~pathlib.PurePath` sorts)."""
    parts: list[bytes] = [s.encode() for s in extra]
    for name in sorted(files, key=lambda text: PurePosixPath(text).parts):
        parts.append(name.encode())
        parts.append(files[name].read_bytes())
    return digest(parts)


# The socketlab package's files the images need: what a wheel holds of it (its sources
# and, as package data in pyproject.toml, the healthcheck script), no bytecode or strays.
PACKAGE_FILE_PATTERNS: tuple[str, ...] = ("*.py", "*.sh")


def package_files(folder: Path) -> dict[str, Path]:
    """The ``socketlab`` package's files, by their path under ``folder``
    (:data:`PACKAGE_FILE_PATTERNS`)."""
    return {
        str(path.relative_to(folder)): path
        for pattern in PACKAGE_FILE_PATTERNS
        for path in folder.rglob(pattern)
        if path.is_file() and "__pycache__" not in path.parts
    }


@dataclass(frozen=True, kw_only=True)
class ImageInputs:
    """The files a build reads, by their path in the build context, and where the
    downloaded sources are kept. ``origin`` says where they came from (messages)."""

    files: Mapping[str, Path]
    sources_dir: Path
    origin: str

    def read(self, name: str) -> str:
        try:
            return self.files[name].read_text()
        except (KeyError, OSError) as exc:
            raise ImageBuildError(f"cannot read {name} of {self.origin}: {exc}") from exc

    @property
    def context_files(self) -> dict[str, Path]:
        """What the image stages COPY: the Dockerfile, its scripts, the package sources."""
        return {name: path for name, path in self.files.items() if not name.endswith(".txt")}


def checkout_inputs(root: Path, *, sources_dir: Path | None = None) -> ImageInputs:
    """A checkout's own files (``services/...``), sources under its ``build/sources``."""
    files = {name: root / name for name in DATA_FILES}
    package = package_files(root / PACKAGE_DIR)
    files |= {f"{PACKAGE_DIR}/{name}": path for name, path in package.items()}
    return ImageInputs(
        files=files, sources_dir=sources_dir or root / SOURCES_DIR, origin=f"the checkout {root}"
    )


def installed_inputs(data: Path, package: Path, *, sources_dir: Path) -> ImageInputs:
    """An installed socketlab's files: ``data`` holds what :data:`DATA_FILES` names (by
    file name), ``package`` is the installed ``socketlab`` package."""
    files = {name: data / PurePosixPath(name).name for name in DATA_FILES}
    files |= {f"{PACKAGE_DIR}/{name}": path for name, path in package_files(package).items()}
    return ImageInputs(files=files, sources_dir=sources_dir, origin=f"the installed package {data}")


def find_inputs(config: ImagesConfig) -> ImageInputs:
    """Where this ``lab``'s image files are: the package data of an installed wheel, else the
    checkout it runs from (an editable install); ImageBuildError when neither has them."""
    import lab  # noqa: PLC0415 - the packages themselves locate the files
    import socketlab  # noqa: PLC0415

    lab_dir = Path(lab.__file__).resolve().parent
    package = Path(socketlab.__file__).resolve().parent
    data = lab_dir / INSTALLED_DATA
    if (data / PurePosixPath(DOCKERFILE).name).is_file():
        cache = config.cache_dir or Path.home() / ".cache" / "socketlab" / "sources"
        return installed_inputs(data, package, sources_dir=cache)
    root = lab_dir.parent
    if (root / DOCKERFILE).is_file() and (root / PACKAGE_DIR).is_dir():
        return checkout_inputs(root, sources_dir=config.cache_dir)
    raise ImageBuildError(
        f"this socketlab has no image files ({data} is missing): reinstall it from a wheel "
        "or a checkout (pip install .)"
    )


def sources_files(sources: Path, key: str) -> dict[str, Path]:
    """A sources folder's files as the build context holds them: ``build/sources/KEY/...``."""
    prefix = PurePosixPath(*SOURCES_DIR.parts, key)
    return {
        str(prefix / path.relative_to(sources).as_posix()): path
        for path in sources.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def build_context(files: Mapping[str, Path]) -> IO[bytes]:
    """A tar stream of ``files`` under their context paths (owner 0, mtime 0: the same
    files give the same stream), in a temporary file the caller closes."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who closes it
    with tarfile.open(fileobj=spool, mode="w:") as archive:
        for name in sorted(files, key=lambda text: PurePosixPath(text).parts):
            path = files[name]
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode = 0o755 if path.suffix == ".sh" else 0o644
            with path.open("rb") as content:
                archive.addfile(info, content)
    spool.seek(0)
    return spool


def local_base_tag(codename: str, packages: Sequence[str], *, repo: str = LOCAL_BASE_REPO) -> str:
    return f"{repo}:{codename}-{digest(p.encode() for p in sorted(packages))[:12]}"


def stale_image_tags(
    tags: Iterable[str],
    *,
    keep: Iterable[str],
    in_use: Iterable[str],
    names: ImageNames = ImageNames(),
) -> list[str]:
    """Our runtime/netkit tags that are neither the current set nor used by a container."""
    ours = (f"{names.runtime}:", f"{names.netkit}:")
    protected = set(keep) | set(in_use)
    stable = {f"{repo}:{STABLE_TAG}" for repo in (names.runtime, names.netkit)}
    return sorted(
        t for t in set(tags) if t.startswith(ours) and t not in protected and t not in stable
    )


def stable_tags(images: ImageSet, names: ImageNames) -> list[tuple[str, str]]:
    """(image, stable name) pairs: the runtime as ``<namespace>/runtime:latest``, the
    local Debian base as ``<namespace>/base:latest`` (pure; namespace ``socketlab``)."""
    pairs = [(images.runtime, f"{names.runtime}:{STABLE_TAG}")]
    if images.base:
        pairs.append((images.base, f"{names.base}:{STABLE_TAG}"))
    return pairs


@dataclass(frozen=True, kw_only=True)
class Pin:
    """One ``name==version`` line of a lock file."""

    name: str
    version: str

    @property
    def key(self) -> str:
        return normalize_name(self.name)


def normalize_name(name: str) -> str:
    """A distribution name as PEP 503 compares it (``Feedparser_SGMLlib`` = ``feedparser-sgmllib``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")


def parse_lock(text: str, *, source: str) -> list[Pin]:
    """Every requirement line must be ``name==version``: the images build what is pinned.

    Comments and blank lines are fine; anything else (ranges, URLs, options,
    extras, markers) is an ImageBuildError naming ``source`` and the line.
    """
    pins: list[Pin] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line.replace(" ", ""))
        if match is None:
            raise ImageBuildError(f"{source}:{number}: {line!r} is not pinned as name==version")
        pin = Pin(name=match.group(1), version=match.group(2))
        if pin.key in seen:
            raise ImageBuildError(f"{source}:{number}: {pin.name} is pinned twice")
        seen.add(pin.key)
        pins.append(pin)
    return pins


def sdist_download_argv(
    python: str, *, dest: str, lock_files: Sequence[str], pins: Sequence[Pin]
) -> list[str]:
    """``pip download`` of the sdists of ``pins`` (no dependencies: the locks list them all).

    ``--no-binary`` names only the pinned packages, so the build backends pip
    needs to read an sdist's metadata may still come as wheels; nothing is
    compiled.
    """
    argv = [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    argv += ["--no-deps", "--no-binary", ",".join(sorted(p.key for p in pins)), "--dest", dest]
    for lock in lock_files:
        argv += ["-r", lock]
    return argv


def tools_download_argv(python: str, *, dest: str, tools_file: str) -> list[str]:
    """``pip download`` of the pinned build tools' pure wheels (py3-none-any).

    Pure wheels run on whatever Python the builder stage has; asking for them
    explicitly keeps the host's interpreter out of the choice (a build tool
    may also have compiled wheels for the host's Python).
    """
    return [
        python,
        *("-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"),
        *("--only-binary", ":all:", "--platform", "any", "--implementation", "py"),
        *("--abi", "none", "--dest", dest, "-r", tools_file),
    ]


_SDIST = re.compile(r"^(?P<name>.+)-(?P<version>[^-]+)\.(?:tar\.gz|zip)$")
_WHEEL = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-\d[^-]*)?-(?P<tags>[^-]+-[^-]+-[^-]+)\.whl$"
)


def check_downloads(
    filenames: Iterable[str], *, sdists: Sequence[Pin], tools: Sequence[Pin]
) -> None:
    """Every pin of ``sdists`` has its sdist and every build tool a pure wheel, or ImageBuildError."""
    have_sdists: set[tuple[str, str]] = set()
    have_wheels: dict[tuple[str, str], str] = {}
    for filename in filenames:
        if match := _SDIST.match(filename):
            have_sdists.add((normalize_name(match["name"]), match["version"]))
        elif match := _WHEEL.match(filename):
            have_wheels[(normalize_name(match["name"]), match["version"])] = match["tags"]
    missing = [f"{p.name}=={p.version}" for p in sdists if (p.key, p.version) not in have_sdists]
    if missing:
        raise ImageBuildError(f"no sdist downloaded for {', '.join(missing)}")
    for pin in tools:
        tags = have_wheels.get((pin.key, pin.version))
        if tags is None:
            raise ImageBuildError(f"no wheel downloaded for build tool {pin.name}=={pin.version}")
        if not tags.endswith("-none-any"):
            raise ImageBuildError(
                f"build tool {pin.name}=={pin.version} has no pure wheel ({tags}): "
                "the builder runs another Python than the host"
            )


def context_of(inputs: ImageInputs, sources: Path) -> tuple[str, dict[str, Path]]:
    """The ``SOURCES`` build arg and every file of the build context."""
    key = sources.name
    where = str(PurePosixPath(*SOURCES_DIR.parts, key))
    return where, {**inputs.context_files, **sources_files(sources, key)}


def image_digest(
    inputs: ImageInputs,
    *,
    target: str,
    sources: Path,
    plan: StagePlan,
    base_ids: Sequence[str],
) -> str:
    """The tag of ``target``: every input of the build, base image ids included."""
    where, files = context_of(inputs, sources)
    buildargs = plan.buildargs(where)
    extra = [target, *base_ids, *(f"{key}={value}" for key, value in sorted(buildargs.items()))]
    return files_digest(files, extra=extra)[:16]


# --------------------------------------------------------------------------- impure


def host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    """The host's release codename (``bookworm``), from /etc/os-release."""
    try:
        text = os_release.read_text()
    except OSError as exc:
        raise ImageBuildError(f"cannot read {os_release}: {exc}") from exc
    codename = codename_of(text)
    if codename is None:
        raise ImageBuildError(f"no VERSION_CODENAME in {os_release}: not a Debian-like host?")
    return codename


def codename_of(os_release_text: str) -> str | None:
    """``VERSION_CODENAME`` of an os-release text, or None."""
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", os_release_text, re.MULTILINE)
    return match.group(1) if match else None


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


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise ImageBuildError(f"cannot look up image {ref}: {exc.explanation or exc}") from exc
    return True


def _pull(client: docker.DockerClient, ref: str, progress: Progress) -> bool:
    progress(f"pulling {ref} ...")
    try:
        client.images.pull(ref)
    except docker.errors.APIError as exc:
        progress(f"cannot pull {ref}: {exc.explanation or exc}")
        return False
    return True


def ensure_local_base(
    client: docker.DockerClient,
    progress: Progress,
    *,
    packages: Sequence[str] = BASE_PACKAGES,
    repo: str = LOCAL_BASE_REPO,
) -> str:
    """Build (once) a Debian base image with ``packages`` from the host's apt mirror."""
    codename = host_codename()
    tag = local_base_tag(codename, packages, repo=repo)
    if image_exists(client, tag):
        return tag
    mirrors = base_mirror_lines(host_apt_sources(), codename)
    progress(f"building local base image {tag} with mmdebstrap from {', '.join(mirrors)}")
    with tempfile.TemporaryDirectory(prefix="socketlab-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        argv = mmdebstrap_argv(
            suite=codename, mirrors=mirrors, packages=packages, output=str(rootfs)
        )
        try:
            subprocess.run(argv, check=True, timeout=MMDEBSTRAP_TIMEOUT, stdout=sys.stderr)
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


def _pip_download(argv: Sequence[str], what: str) -> None:
    try:
        subprocess.run(argv, check=True, timeout=PIP_DOWNLOAD_TIMEOUT, stdout=sys.stderr)
    except subprocess.CalledProcessError as exc:
        raise ImageBuildError(
            f"downloading {what} failed (pip download exited {exc.returncode}; "
            "its messages are above)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(f"downloading {what} took over {exc.timeout:g} s") from exc
    except OSError as exc:
        raise ImageBuildError(f"cannot run pip to download {what}: {exc}") from exc


def ensure_sources(
    inputs: ImageInputs | Path, progress: Progress, *, python: str = sys.executable
) -> Path:
    """Download (once) what the builder stage builds from; return the folder.

    The sdists of every pinned requirement and the pure wheels of the pinned
    build tools go into ``<sources_dir>/<hash>/`` with the lock files; the
    hash covers the lock files, so a changed pin gets a fresh folder. Nothing
    is compiled here, and the host's Python version does not matter.
    ``inputs`` may be a checkout's folder.
    """
    if isinstance(inputs, Path):
        inputs = checkout_inputs(inputs)
    names = [*LOCK_FILES, BUILD_TOOLS_FILE]
    locks = [inputs.files[name] for name in LOCK_FILES]
    tools_file = inputs.files[BUILD_TOOLS_FILE]
    sdist_pins = [pin for name in LOCK_FILES for pin in parse_lock(inputs.read(name), source=name)]
    tool_pins = parse_lock(inputs.read(BUILD_TOOLS_FILE), source=BUILD_TOOLS_FILE)
    key = files_digest({name: inputs.files[name] for name in names})[:12]
    folder = inputs.sources_dir / key
    stamp = folder / ".complete"
    if stamp.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    progress(f"downloading sources into {folder} (pip download)")
    _pip_download(
        sdist_download_argv(
            python, dest=str(folder), lock_files=[str(p) for p in locks], pins=sdist_pins
        ),
        "the pinned requirements' sdists",
    )
    _pip_download(
        tools_download_argv(python, dest=str(folder), tools_file=str(tools_file)),
        "the pinned build tools",
    )
    check_downloads((path.name for path in folder.iterdir()), sdists=sdist_pins, tools=tool_pins)
    for path in [*locks, tools_file]:
        shutil.copyfile(path, folder / path.name)
    stamp.write_text(key + "\n")
    return folder


def _build(
    client: docker.DockerClient,
    *,
    context: IO[bytes],
    target: str,
    tag: str,
    buildargs: dict[str, str],
    network: bool,
    progress: Progress,
) -> None:
    progress(f"building {tag} (target {target}{'' if network else ', no network'})")
    options: dict[str, Any] = {} if network else {"network_mode": "none"}
    context.seek(0)
    try:
        stream: Iterable[dict[str, Any]] = client.api.build(
            fileobj=context,
            custom_context=True,
            dockerfile=DOCKERFILE,
            target=target,
            tag=tag,
            buildargs=buildargs,
            labels={INPUTS_LABEL: tag.split(":", 1)[1]},
            rm=True,
            forcerm=True,
            decode=True,
            **options,
        )
        recent: deque[str] = deque(maxlen=BUILD_LOG_TAIL)
        for chunk in stream:
            if "error" in chunk:
                # The failing step's own output says why; show it before the one-line error.
                for line in recent:
                    progress(f"  | {line}")
                raise ImageBuildError(f"building {tag} failed: {chunk['error'].strip()}")
            text = _ANSI.sub("", str(chunk.get("stream", "")))
            for line in filter(None, (part.rstrip() for part in text.splitlines())):
                if line.startswith("Step "):
                    recent.clear()
                    progress(f"  {line}")
                else:
                    recent.append(line)
    except docker.errors.APIError as exc:
        raise ImageBuildError(f"building {tag} failed: {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class ImageSet:
    """The image references a lab project runs (``base``: the local Debian base)."""

    runtime: str
    netkit: str
    base: str = ""


def ensure_images(
    client: docker.DockerClient,
    inputs: ImageInputs,
    *,
    progress: Progress,
    requested_base: str | None = None,
    config: ImagesConfig,
) -> ImageSet:
    """Make sure the runtime and netkit images for the current sources exist."""
    names = ImageNames(namespace=config.namespace)
    requested = requested_base or config.base_image
    present = image_exists(client, requested)
    pullable = not present and _pull(client, requested, progress)
    local_base = build_base = ""  # only the offline world has local bases
    if not (present or pullable):
        local_base = ensure_local_base(client, progress, packages=BASE_PACKAGES, repo=names.base)
        build_base = ensure_local_base(
            client, progress, packages=BUILD_BASE_PACKAGES, repo=names.build_base
        )
    choice = choose_base_image(
        requested=requested, present=present, pullable=pullable, local_image=local_base
    )
    plan = plan_stages(choice, local_base=local_base, build_base=build_base)
    progress(f"base image: {choice.image} ({choice.reason}); builder: {plan.builder_base}")

    sources = ensure_sources(inputs, progress)
    where, files = context_of(inputs, sources)
    buildargs = plan.buildargs(where)
    base_ids = [client.images.get(base).id for base in plan.bases]
    images = {}
    missing = []
    for target, repo in (("runtime", names.runtime), ("netkit", names.netkit)):
        key = image_digest(inputs, target=target, sources=sources, plan=plan, base_ids=base_ids)
        images[target] = f"{repo}:{key}"
        if not image_exists(client, images[target]):
            missing.append(target)
    if missing:
        progress(f"image files from {inputs.origin}")
        with build_context(files) as context:
            for target in missing:
                _build(
                    client,
                    context=context,
                    target=target,
                    tag=images[target],
                    buildargs=buildargs,
                    network=plan.network,
                    progress=progress,
                )
    return ImageSet(runtime=images["runtime"], netkit=images["netkit"], base=local_base)


def tag_stable_names(client: docker.DockerClient, images: ImageSet, names: ImageNames) -> None:
    """Tag the images with their stable names (:func:`stable_tags`)."""
    for source, name in stable_tags(images, names):
        repository, tag = name.rsplit(":", 1)
        try:
            client.images.get(source).tag(repository, tag)
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"cannot tag {source} as {name}: {exc}") from exc


def prune_images(
    client: docker.DockerClient,
    current: ImageSet,
    progress: Progress,
    *,
    names: ImageNames,
) -> list[str]:
    """Remove lab images left by earlier sources; keep ``current`` and any in use."""
    tags = [tag for image in client.images.list() for tag in image.tags]
    in_use = [tag for container in client.containers.list(all=True) for tag in container.image.tags]
    removed = []
    stale = stale_image_tags(
        tags, keep=[current.runtime, current.netkit], in_use=in_use, names=names
    )
    for tag in stale:
        try:
            client.images.remove(tag)
        except docker.errors.APIError as exc:
            progress(f"kept {tag}: {exc.explanation or exc}")
            continue
        removed.append(tag)
    return removed
