"""etcd's users and roles: who may read and write which keys (pure).

With TLS on, etcd runs with authentication on and one user per kind of client:

- `patroni`: every Patroni node (and patronictl in it), by password over etcd's JSON gateway
  (Patroni's etcd3 client speaks HTTP to the gateway, where etcd ignores the certificate's
  common name). Read and write the scope's prefix only: `/service/<scope>/`.
- `fencer`: the fencing agent, by password over the gateway. Read and write the scope's leader
  key only (it reads it and deletes it in a compare-and-delete transaction; etcd has no
  delete-only permission).
- `<scope> pgha client`: pgha's own etcdctl, authenticated by its client certificate's common
  name (etcdctl speaks gRPC, where etcd maps the common name to a user). The root role:
  membership changes, the auth setup itself, deleting the scope's keys at teardown.
- `root`: required by etcd to enable auth; no password, so only a certificate whose common name
  is `root` could act as it, and the cluster CA issues none.

No user is named after the member certificate's common name (`<scope> member`): etcd's gateway
reaches etcd's gRPC side with that certificate, so such a user would be every gateway caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from stack import fencing, layout, tls
from stack.secrets import Secrets
from stack.spec import ClusterSpec

ROOT = "root"
PATRONI_USER = "patroni"
FENCER_USER = "fencer"


class Permission(StrEnum):
    READ = "read"
    READWRITE = "readwrite"


@dataclass(frozen=True)
class Grant:
    """One permission of a role: a key, or every key under a prefix."""

    key: str
    permission: Permission
    prefix: bool = False

    def args(self, role: str) -> list[str]:
        return ["role", "grant-permission", role, self.permission.value, self.key,
                *(["--prefix=true"] if self.prefix else [])]


@dataclass(frozen=True)
class EtcdUser:
    """An etcd user, its role, and where its password comes from (None: certificate only)."""

    name: str
    role: str
    grants: tuple[Grant, ...] = ()
    secret: str | None = None  # the `Secrets` field holding its password

    def password(self, secrets: Secrets) -> str | None:
        return getattr(secrets, self.secret) if self.secret else None


def enabled(spec: ClusterSpec) -> bool:
    """Auth needs TLS: pgha's etcdctl authenticates by its certificate (no password in argv or env)."""
    return spec.tls.enabled


def scope_prefix(spec: ClusterSpec) -> str:
    return f"{layout.PATRONI_NAMESPACE}/{spec.scope}/"


def users(spec: ClusterSpec) -> list[EtcdUser]:
    """Every etcd user of the cluster, in the order they are created."""
    leader = fencing.leader_key(layout.PATRONI_NAMESPACE, spec.scope)
    return [
        EtcdUser(ROOT, ROOT),
        EtcdUser(tls.client_cn(spec.scope), ROOT),
        EtcdUser(PATRONI_USER, PATRONI_USER, (Grant(scope_prefix(spec), Permission.READWRITE, prefix=True),),
                 "etcd_patroni"),
        EtcdUser(FENCER_USER, FENCER_USER, (Grant(leader, Permission.READWRITE),), "etcd_fencer"),
    ]


def user(spec: ClusterSpec, name: str) -> EtcdUser:
    return next(u for u in users(spec) if u.name == name)


@dataclass(frozen=True)
class Step:
    """One etcdctl call of the setup; `password_of` names the user whose password it reads on stdin."""

    args: list[str]
    password_of: str | None = None


def setup_steps(spec: ClusterSpec, existing_users: set[str], existing_roles: set[str]) -> list[Step]:
    """The etcdctl calls that make the users and roles exist as `users` says (idempotent: run on
    every `up`; a password is set again each time, so the state directory's file is the truth)."""
    steps: list[Step] = []
    for u in users(spec):
        if u.role != ROOT and u.role not in existing_roles:
            steps.append(Step(["role", "add", u.role]))
        steps += [Step(g.args(u.role)) for g in u.grants]
        if u.secret is None:
            if u.name not in existing_users:
                steps.append(Step(["user", "add", u.name, "--no-password"]))
        elif u.name not in existing_users:
            steps.append(Step(["user", "add", u.name, "--interactive=false"], password_of=u.name))
        else:
            steps.append(Step(["user", "passwd", u.name, "--interactive=false"], password_of=u.name))
        steps.append(Step(["user", "grant-role", u.name, u.role]))
    return steps


def auth_status_on(out: str) -> bool | None:
    """What `etcdctl auth status` says ("Authentication Status: true"); None: not that answer."""
    for line in out.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "authentication status":
            return value.strip().lower() == "true"
    return None
