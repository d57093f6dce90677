"""The declared roles' passwords on this machine: generated ones kept 0600, file ones read.

`app-passwords.json` in the cluster's state directory (the base generation's) holds the passwords pgha generated for
roles whose spec says `password: generated` (created on first use, never rotated by itself);
a role with `password: {file: PATH}` reads the first line of that file, refused when others
can read it. Never written to argv, env, a log or a message.
"""

from __future__ import annotations

import json
import secrets as _random
from pathlib import Path

from stack import appdb
from stack.errors import StateError
from stack.generations import base_of
from stack.spec import ClusterSpec
from tasks.host.state import cluster_dir, write_private

FILE = "app-passwords.json"


def refusal(spec: ClusterSpec) -> str | None:
    """Why the declared password files cannot be used (one line), before anything is changed."""
    for r in spec.roles:
        if isinstance(r.password, appdb.PasswordFile) and (why := appdb.password_file_problem(r.password.file)):
            return f"roles.{r.name}.password: {why}"
    return None


def _file(scope: str) -> Path:
    """One file for both generations of a cluster (`<scope>` and `<scope>-green` of a major upgrade),
    so the green one sets the same passwords the clients have."""
    return cluster_dir(base_of(scope)) / FILE


def _stored(scope: str) -> dict[str, str]:
    path = _file(scope)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in dict(data).items()}
    except (OSError, ValueError, TypeError):
        raise StateError(f"password file {path} is unreadable or damaged; restore it from a backup") from None


def passwords(spec: ClusterSpec, create: bool = True) -> dict[str, str]:
    """role -> password of every declared role that has one (generated ones created when `create`)."""
    if why := refusal(spec):
        raise StateError(why)
    stored = _stored(spec.scope)
    out: dict[str, str] = {}
    changed = False
    for r in spec.roles:
        if isinstance(r.password, str):  # "generated"
            if r.name not in stored and create:
                stored[r.name] = _random.token_urlsafe(24)
                changed = True
            if r.name in stored:
                out[r.name] = stored[r.name]
        elif isinstance(r.password, appdb.PasswordFile):
            out[r.name] = appdb.read_password_file(r.password.file)
    if changed:
        write_private(_file(spec.scope), json.dumps(stored, sort_keys=True))
    return out


def copy(source_scope: str, into_scope: str) -> None:
    """A restore into a new scope: its catalog holds the source's declared roles with their passwords,
    so the new scope keeps the same ones (0600) rather than generating others and altering the roles."""
    src, dst = _file(source_scope), _file(into_scope)
    if src.exists() and not dst.exists():
        write_private(dst, src.read_text())


def password_of(spec: ClusterSpec, role: str) -> str:
    """The password of one declared role, for `pgha dsn --user`."""
    declared = {r.name: r for r in spec.roles}
    if role not in declared:
        raise StateError(f"role '{role}' is not declared in the spec's roles: of cluster {spec.scope}")
    if declared[role].password is None:
        raise StateError(f"role '{role}' has no password (password: null in the spec)")
    got = passwords(spec, create=False).get(role)
    if got is None:
        raise StateError(f"no password stored for role '{role}' yet; run `pgha up` first")
    return got
