"""The cluster's password file: taken from POSTGRES_PASSWORD or generated once, kept 0600."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets as _random
from pathlib import Path

from stack.errors import StateError
from stack.secrets import ENV_SUPERUSER, Secrets
from tasks.host.state import secrets_file


def _generate() -> str:
    return _random.token_urlsafe(24)


def load_or_create(path: Path, env: dict[str, str] | None = None) -> Secrets:
    """Return the cluster's passwords, creating the 0600 file on first use.

    POSTGRES_PASSWORD sets the superuser password on the first `up`. Later it must match the
    stored one: PostgreSQL keeps the password it was created with, so a different value
    would only lock clients out.
    """
    env = dict(os.environ) if env is None else env
    wanted = env.get(ENV_SUPERUSER) or None
    if path.exists():
        try:
            data = json.loads(path.read_text())
            stored = Secrets(**{k: str(data[k]) for k in ("superuser", "replication", "rewind", "restapi")},
                             **{k: str(data.get(k) or "") for k in ETCD_KEYS})
        except (OSError, ValueError, KeyError, TypeError):
            raise StateError(f"password file {path} is unreadable or damaged; restore it from a backup") from None
        if wanted is not None and wanted != stored.superuser:
            raise StateError(
                f"{ENV_SUPERUSER} differs from the password this cluster was created with (kept in {path}); "
                f"unset {ENV_SUPERUSER} or change the role's password in PostgreSQL and in that file"
            )
        if all(getattr(stored, k) for k in ETCD_KEYS):
            return stored
        # A file written before etcd had users: their passwords are added once.
        stored = dataclasses.replace(stored, **{k: getattr(stored, k) or _generate() for k in ETCD_KEYS})
        _write(path, stored)
        return stored
    created = Secrets(
        superuser=wanted or _generate(),
        replication=_generate(),
        rewind=_generate(),
        restapi=_generate(),
        etcd_patroni=_generate(),
        etcd_fencer=_generate(),
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(path, created)
    return created


ETCD_KEYS = ("etcd_patroni", "etcd_fencer")


def _write(path: Path, s: Secrets) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(dataclasses.asdict(s), fh)
    os.replace(tmp, path)


def cluster_secrets(scope: str) -> Secrets:
    """The passwords of a cluster (created on first use), as its clients are to be given them.

    etcd's users' passwords are left out while pgha has not switched etcd's authentication on
    for this cluster (`etcd_auth_marker`): a Patroni node given a password while etcd's auth is
    off cannot start (Patroni 4.0 reads etcd 3.5's "authentication is not enabled" answer as an
    error), so a cluster made by an older pgha keeps running without them.
    """
    s = load_or_create(secrets_file(scope))
    if not etcd_auth_marker(scope).exists():
        return dataclasses.replace(s, **dict.fromkeys(ETCD_KEYS, ""))
    return s


def etcd_auth_marker(scope: str) -> Path:
    """Present once pgha has switched etcd's authentication on for the cluster (`tasks.etcd`)."""
    return secrets_file(scope).with_name("etcd-auth-on")
