"""The lab's shared secrets inside the containers: read from files, compared in constant time.

``lab up`` writes two secrets into per-service volumes mounted read-only at
``/run/secrets/socketlab`` (mode 0400, owned by the service user), and only
into the services that use them; neither is ever in a container's environment,
so ``docker inspect`` does not show them:

* ``pickle-key``: the HMAC key of the signed-pickle demo (``server``, ``client``);
* ``admin-token``: the bearer token of the write, schedule, fault and reset
  endpoints (``server`` checks it and runs ``socketlab feed``; ``udp-listener``
  checks it; ``client`` runs ``socketlab udp-stats --reset``).

A missing or empty file means "not configured": pickle stays disabled, and
every admin request is refused.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Final

from socketlab.errors import ConfigError

SECRETS_DIR: Final = "/run/secrets/socketlab"
ADMIN_TOKEN_FILE: Final = f"{SECRETS_DIR}/admin-token"
PICKLE_KEY_FILE: Final = f"{SECRETS_DIR}/pickle-key"
MAX_SECRET_BYTES: Final = 4096


def read_secret(path: Path) -> bytes | None:
    """The secret in ``path`` without surrounding whitespace; None when absent or empty."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the secret in {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{path} holds more than {MAX_SECRET_BYTES} bytes: not a secret")
    return data.strip() or None


def read_token(path: Path) -> str | None:
    """The admin token in ``path`` (ASCII), or None when there is none."""
    secret = read_secret(path)
    if secret is None:
        return None
    try:
        return secret.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: an admin token is ASCII text") from exc


def bearer(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header carrying ``token`` (none without a token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def is_authorized(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` (constant time)."""
    if not token or not header:
        return False
    scheme, _, presented = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())
