"""The lab's secrets on their way into the containers (pure: what goes where, as a tar).

``lab up`` makes two secrets per checkout (:func:`lab.api.pickle_key`,
:func:`lab.api.admin_token`, files under ``build/``, mode 0600) and puts them
into one volume per service that needs them, mounted read-only at
``/run/secrets/socketlab`` by docker-compose.yml:

=============  ==============================  ==========================================
volume         service                          files
=============  ==============================  ==========================================
secrets-server server                           pickle-key, admin-token (checks and uses it)
secrets-client client                           pickle-key, admin-token (udp-stats --reset)
secrets-udp    udp-listener                     admin-token (checks POST /reset)
=============  ==============================  ==========================================

The rss-poller gets neither. The files are owned by the service user (uid
10001) with mode 0400, so they are readable there whatever the host's user is;
being files in volumes rather than environment variables, ``docker inspect``
never shows them, and the same works with a remote Docker engine, where a bind
mount of ``build/`` would not exist.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from typing import Final

SERVICE_UID: Final = 10001  # the runtime image's unprivileged user
SECRETS_MOUNT: Final = "/run/secrets/socketlab"  # where the services read them
PICKLE_KEY_NAME: Final = "pickle-key"
ADMIN_TOKEN_NAME: Final = "admin-token"  # noqa: S105 - a file name

# Compose volume name -> the secrets it holds.
SECRET_VOLUMES: Final[Mapping[str, tuple[str, ...]]] = {
    "secrets-server": (PICKLE_KEY_NAME, ADMIN_TOKEN_NAME),
    "secrets-client": (PICKLE_KEY_NAME, ADMIN_TOKEN_NAME),
    "secrets-udp": (ADMIN_TOKEN_NAME,),
}


def secret_files(*, pickle_key: str, admin_token: str) -> dict[str, dict[str, bytes]]:
    """For each secrets volume, the files it holds (an empty key disables pickle)."""
    values = {PICKLE_KEY_NAME: pickle_key, ADMIN_TOKEN_NAME: admin_token}
    return {
        volume: {name: (values[name] + "\n").encode() if values[name] else b"" for name in names}
        for volume, names in SECRET_VOLUMES.items()
    }


def secrets_tar(files: Mapping[str, bytes], *, uid: int = SERVICE_UID) -> bytes:
    """A tar of ``files`` (name -> content), each owned by ``uid`` with mode 0400."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.uid = info.gid = uid
            info.mode = 0o400
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def volume_labels(*, project: str, volume: str, project_label: str) -> dict[str, str]:
    """Labels of a secrets volume made before ``compose up``, so Compose adopts it as its own."""
    return {
        project_label: project,
        "com.docker.compose.project": project,
        "com.docker.compose.volume": volume,
    }
