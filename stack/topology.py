"""The cluster's containers as data: what each one runs, mounts and publishes.

Pure: from a spec, an image tag, the network's subnet and the state paths it returns the
container definitions and the config files they mount (the host directory that holds
those files is passed in: where the host keeps state is `tasks.host`'s business). `tasks.docker_engine` makes them real.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stack import backup, layout, render
from stack import pooler as pgbouncer
from stack.secrets import Secrets
from stack.spec import ClusterSpec, Role

# Fail DNS look-ups in one second, once: a node cut off from the network (a partition) must
# notice quickly that etcd is gone and demote itself, not hang in the resolver for a minute.
DNS_OPTIONS = ["timeout:1", "attempts:1"]


@dataclass(frozen=True)
class ContainerDef:
    """Everything that defines one container of a cluster."""

    scope: str
    role: str
    member: str
    name: str
    image: str
    network: str
    command: list[str]
    config_hash: str
    volumes: dict[str, str] = field(default_factory=dict)  # volume name -> container path
    config_dir: str | None = None  # host dir mounted read-only at /etc/pgha
    ports: dict[int, int] = field(default_factory=dict)  # container port -> 127.0.0.1 host port
    healthcheck: list[str] | None = None
    dns_options: list[str] = field(default_factory=lambda: list(DNS_OPTIONS))


@dataclass(frozen=True)
class Planned:
    container: ContainerDef
    files: dict[str, str] = field(default_factory=dict, repr=False)  # file name -> content


def etcd_member(spec: ClusterSpec, member: str, image: str) -> Planned:
    cmd = render.etcd_command(spec, member)
    return Planned(ContainerDef(
        scope=spec.scope, role=Role.ETCD.value, member=member, name=spec.container(member), image=image,
        network=spec.network, command=cmd, config_hash=render.digest(image, cmd, DNS_OPTIONS),
        volumes={spec.volume(member): layout.ETCD_MOUNT},
        healthcheck=["etcdctl", "--command-timeout=2s", "endpoint", "health"],
    ))


def patroni_node(spec: ClusterSpec, member: str, image: str, subnet: str, secrets: Secrets, conf_dir: str) -> Planned:
    """A Patroni node; `conf_dir` is the host directory holding its rendered files (mounted at /etc/pgha)."""
    text = render.render_patroni_yml(spec, member, subnet, secrets)
    volumes = {spec.volume(member): layout.DATA_MOUNT}
    if spec.backup.enabled and spec.backup.s3 is None:
        # The pgBackRest repository, shared by every node (stack/backup.py explains why).
        volumes[backup.repo_volume(spec)] = layout.REPO_MOUNT
    return Planned(
        ContainerDef(
            scope=spec.scope, role=Role.PATRONI.value, member=member, name=spec.container(member), image=image,
            network=spec.network, command=[],
            config_hash=render.digest(image, render.redact(text, secrets), DNS_OPTIONS, sorted(volumes.items())),
            volumes=volumes,
            config_dir=conf_dir,
            healthcheck=["curl", "-fsS", "-o", "/dev/null", f"http://localhost:{layout.PATRONI_API_PORT}/liveness"],
        ),
        files={"patroni.yml": text},
    )


def haproxy(spec: ClusterSpec, image: str, conf_dir: str) -> Planned:
    text = render.render_haproxy_cfg(spec)
    ports = {
        layout.HAPROXY_RW_PORT: spec.ports.rw,
        layout.HAPROXY_RO_PORT: spec.ports.ro,
        layout.HAPROXY_STATS_PORT: spec.ports.stats,
    }
    member = spec.haproxy_member
    return Planned(
        ContainerDef(
            scope=spec.scope, role=Role.HAPROXY.value, member=member, name=spec.container(member), image=image,
            network=spec.network, command=[], config_hash=render.digest(image, text, ports, DNS_OPTIONS),
            config_dir=conf_dir, ports=ports,
            healthcheck=["curl", "-fsS", "-o", "/dev/null", f"http://localhost:{layout.HAPROXY_STATS_PORT}/"],
        ),
        files={"haproxy.cfg": text},
    )


def pooler(spec: ClusterSpec, image: str, conf_dir: str, scram_secrets: dict[str, str]) -> Planned:
    """PgBouncer on `ports.pool`, on the host that runs HAProxy, reaching the primary through it.

    `scram_secrets` (role -> pg_authid SCRAM secret) become its auth_file; the config hash
    covers them (hashed, never shown), so a changed password recreates the pooler.
    """
    ini = pgbouncer.render_pgbouncer_ini(spec)
    users = pgbouncer.render_userlist(scram_secrets)
    ports = {layout.PGBOUNCER_PORT: spec.ports.pool}
    member = spec.pooler_member
    return Planned(
        ContainerDef(
            scope=spec.scope, role=Role.POOLER.value, member=member, name=spec.container(member), image=image,
            network=spec.network, command=[],
            config_hash=render.digest(image, ini, render.digest(users), ports, DNS_OPTIONS),
            config_dir=conf_dir, ports=ports,
            healthcheck=["pg_isready", "-q", "-h", layout.SOCKET_DIR, "-p", str(layout.PGBOUNCER_PORT)],
        ),
        files={layout.PGBOUNCER_INI: ini, layout.PGBOUNCER_USERLIST: users},
    )
