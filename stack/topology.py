"""The cluster's containers as data: what each one runs, mounts and publishes.

Pure: from a spec, an image tag, the network's subnet and the state paths it returns the
container definitions and the config files they mount (the host directory that holds
those files is passed in: where the host keeps state is `tasks.host`'s business). `tasks.docker_engine` makes them real.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stack import backup, fencing, layout, render
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
    entrypoint: list[str] | None = None  # None: the image's pgha-entrypoint with `role` as first argument
    binds: dict[str, str] = field(default_factory=dict)  # host path -> container path, read-only
    host_network: bool = False  # many hosts: the host's network namespace (stack/hosts.py says why)


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
        host_network=spec.multi_host,
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
            host_network=spec.multi_host,
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
    stats = layout.HAPROXY_STATS_PORT
    if spec.multi_host:  # host networking: HAProxy binds the client ports itself, nothing is published
        ports, stats = {}, spec.ports.stats
    return Planned(
        ContainerDef(
            scope=spec.scope, role=Role.HAPROXY.value, member=member, name=spec.container(member), image=image,
            network=spec.network, command=[], config_hash=render.digest(image, text, ports, DNS_OPTIONS),
            config_dir=conf_dir, ports=ports,
            healthcheck=["curl", "-fsS", "-o", "/dev/null", f"http://localhost:{stats}/"],
            host_network=spec.multi_host,
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


def fencer_config(spec: ClusterSpec) -> fencing.FencerConfig:
    """The fencing agent's configuration; the one place its etcd URLs and credentials are built.

    Plain http today. When etcd gets client certificates (the hardening issue), this returns
    https URLs and `etcd_tls` with the mounted CA/cert/key paths; the agent already uses them.
    """
    return fencing.FencerConfig(
        scope=spec.scope,
        leader_key=fencing.leader_key(layout.PATRONI_NAMESPACE, spec.scope),
        etcd_urls=[f"http://{spec.container(m)}:{layout.ETCD_CLIENT_PORT}" for m in spec.etcd_names()],
        docker_url=f"http://{layout.FENCER_PROXY}",
        stats_file=layout.FENCER_STATS,
        etcd_tls=None,
    )


def render_socket_proxy(docker_socket: str = layout.DOCKER_SOCKET) -> str:
    """HAProxy in front of the engine's socket: only GET of /_ping, /events and /containers/<id>/json.

    Everything else (POST, DELETE, exec, create, kill, other paths) gets 403 before it reaches
    the engine. It listens on the fencer's loopback only.
    """
    allowed = r"^(/v[0-9.]+)?/(_ping|events|containers/[A-Za-z0-9_.-]+/json)$"
    return "\n".join([
        render.HAPROXY_BANNER,
        "global",
        "    maxconn 64",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 1h",
        "    timeout server 1h",
        "frontend engine",
        f"    bind {layout.FENCER_PROXY}",
        f"    http-request deny deny_status 403 unless {{ method GET }} {{ path_reg {allowed} }}",
        "    default_backend socket",
        "backend socket",
        f"    server engine {docker_socket}",
        "",
    ])


FENCER_START = """#!/bin/sh
# The fencer: the socket proxy runs as root (it alone opens the engine's socket); the agent runs
# as nobody, which cannot open the socket (root:docker 0660) and reaches the engine only
# through the proxy's GET-only filter.
set -eu
install -d -o nobody -g nogroup -m 0700 /run/pgha
for f in fencer.py fencing.py fencer.json; do
  install -o nobody -g nogroup -m 0600 "/etc/pgha/$f" "/run/pgha/$f"
done
haproxy -D -f /etc/pgha/sockproxy.cfg
exec setpriv --reuid=nobody --regid=nogroup --clear-groups python3 -u /run/pgha/fencer.py /run/pgha/fencer.json
"""


def fencer(spec: ClusterSpec, image: str, conf_dir: str, agent_files: dict[str, str]) -> Planned:
    """The fencing watcher of one engine: pgha's image, the engine's socket read-only behind a proxy.

    `agent_files` are the agent's sources (fencer.py, fencing.py), read by the caller.
    """
    files = {**agent_files, "fencer.json": fencer_config(spec).to_json(), "sockproxy.cfg": render_socket_proxy(),
             "fencer.sh": FENCER_START}
    binds = {layout.DOCKER_SOCKET: layout.DOCKER_SOCKET}
    member = spec.fencer_member
    return Planned(
        ContainerDef(
            scope=spec.scope, role=Role.FENCER.value, member=member, name=spec.container(member), image=image,
            network=spec.network, command=[], config_hash=render.digest(image, sorted(files.items()), DNS_OPTIONS, binds),
            config_dir=conf_dir, entrypoint=["/bin/sh", f"{layout.CONFIG_MOUNT}/fencer.sh"], binds=binds,
            healthcheck=["sh", "-c", f"test $(( $(date +%s) - $(stat -c %Y {layout.FENCER_STATS}) )) -lt 30"],
        ),
        files=files,
    )
