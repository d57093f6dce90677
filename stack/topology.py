"""The cluster's containers as data: what each one runs, mounts and publishes.

Pure: from a spec, an image tag, the network's subnet and the state paths it returns the
container definitions and the config files they mount (the host directory that holds
those files is passed in: where the host keeps state is `tasks.host`'s business). `tasks.docker_engine` makes them real.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from stack import backup, etcd_auth, fencing, layout, metrics, render, site, tls
from stack import pooler as pgbouncer
from stack.secrets import Secrets
from stack.spec import ClusterSpec, Role

# Fail DNS look-ups in one second, once: a node cut off from the network (a partition) must
# notice quickly that etcd is gone and demote itself, not hang in the resolver for a minute.
DNS_OPTIONS = ["timeout:1", "attempts:1"]


# ---- hardening: limits, capabilities, read-only roots, tmpfs for secrets ----

MIB = 1024 * 1024

# What each role's entrypoint needs as root before it drops to its service user (measured:
# docs/concepts/security.md): CHOWN/FOWNER/FSETID for `install -o ... -m 2775` of its private
# directories (install chowns, then chmods a file it no longer owns), SETUID/SETGID for `setpriv --reuid`. The Patroni node also gets DAC_OVERRIDE
# and KILL because pgha's root `docker exec`s refresh the postgres-owned 0600 copies under
# /run/pgha and send SIGHUP to Patroni (tasks/patroni.py, tasks/pgbackrest.py). No role binds
# a port below 1024 inside its container, so none needs NET_BIND_SERVICE.
_DROP_TO_USER = ("CHOWN", "FOWNER", "SETGID", "SETUID")
CAPABILITIES: dict[str, tuple[str, ...]] = {
    Role.PATRONI.value: ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"),
    Role.ETCD.value: _DROP_TO_USER,
    Role.HAPROXY.value: _DROP_TO_USER,
    Role.POOLER.value: (*_DROP_TO_USER, "FSETID"),
    Role.FENCER.value: _DROP_TO_USER,
    Role.REPO.value: _DROP_TO_USER,  # REPO_START: chown/chmod of the repository, setpriv to postgres
    # The exporter reads its mounted files as their owner and binds an unprivileged port: none.
    Role.METRICS.value: (),
}
# Roles whose root filesystem is read-only: everything they write is a volume or a tmpfs.
# Not the Patroni node: PostgreSQL, Patroni, pgBackRest (lock and spool files, logs), pg_dump
# and the major-upgrade tools write in many places of the image; a tmpfs for each is a
# change of its own (docs/concepts/security.md).
READ_ONLY_ROOT = {Role.ETCD.value, Role.HAPROXY.value, Role.POOLER.value, Role.FENCER.value, Role.REPO.value,
                  Role.METRICS.value}
# tmpfs mounts: /run/pgha holds the private copies of the 0600 files (passwords, pgpass, keys),
# so no secret is ever written to the container's writable layer (`docker diff` shows none).
_RUN = (layout.RUN_DIR, "rw,nosuid,nodev,noexec,size=16m,mode=0700")
_TMP = ("/tmp", "rw,nosuid,nodev,size=16m,mode=1777")  # noqa: S108 - a tmpfs inside the container
TMPFS: dict[str, tuple[tuple[str, str], ...]] = {
    Role.PATRONI.value: (_RUN,),
    Role.ETCD.value: (_RUN, _TMP),  # /run/pgha: etcd's copies of its TLS files (tls_start)
    Role.HAPROXY.value: (_RUN, _TMP, ("/run/haproxy", "rw,nosuid,nodev,noexec,size=1m,mode=0700")),
    Role.POOLER.value: (_RUN, _TMP, (layout.SOCKET_DIR, "rw,nosuid,nodev,noexec,size=1m,mode=2775")),
    Role.FENCER.value: (_RUN, _TMP),
    Role.REPO.value: (_RUN, _TMP),  # /tmp: pgBackRest's lock files (lock-path)
    Role.METRICS.value: (_TMP,),
}


@dataclass(frozen=True)
class Hardening:
    """A container's limits and privileges, as the engine takes them."""

    nano_cpus: int
    memory_bytes: int
    shm_bytes: int | None
    cap_add: tuple[str, ...]
    cap_drop: tuple[str, ...] = ("ALL",)
    security_opt: tuple[str, ...] = ("no-new-privileges:true",)
    read_only: bool = False
    tmpfs: tuple[tuple[str, str], ...] = ()  # (container path, mount options)


def hardening(spec: ClusterSpec, role: str) -> Hardening:
    """The role's limits (spec.resources), dropped capabilities and tmpfs mounts."""
    res = spec.resources.of(role)
    return Hardening(
        nano_cpus=int(res.cpus * 1_000_000_000),
        memory_bytes=res.memory_mib * MIB,
        shm_bytes=spec.resources.shm_mib * MIB if role == Role.PATRONI.value else None,
        cap_add=CAPABILITIES[role],
        read_only=role in READ_ONLY_ROOT,
        tmpfs=TMPFS[role],
    )


def harden(spec: ClusterSpec, planned: Planned) -> Planned:
    """`planned` with its role's hardening and the spec's log cap; the config hash covers both, so a
    changed limit or cap recreates it."""
    c = planned.container
    h = hardening(spec, c.role)
    logs = spec.logs.driver_options()
    return replace(planned, container=replace(c, hardening=h, log_options=logs,
                                              config_hash=render.digest(c.config_hash, h, logs)))


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
    hardening: Hardening | None = None  # limits, capabilities, tmpfs (`harden`); None: the engine's defaults
    host_network: bool = False  # many hosts: the host's network namespace (stack/hosts.py says why)
    log_options: dict[str, str] | None = None  # json-file max-size / max-file (`harden`); None: the engine's default
    # volume name -> container path: a tmpfs-backed volume that containers of one engine share
    # (layout.HAPROXY_FENCE_TMPFS); it holds no data and goes with the containers.
    tmpfs_volumes: dict[str, str] = field(default_factory=dict)
    # Networks joined besides `network`, before the container starts: a standby cluster's nodes
    # join the primary site's network to stream from it (stack/site.py).
    extra_networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Planned:
    container: ContainerDef
    files: dict[str, str] = field(default_factory=dict, repr=False)  # file name -> content


# ---- tls: the members that present the cluster's certificates start through tls.START_SCRIPT ----
def tls_start(spec: ClusterSpec, user: str, role: str, cmd: list[str]) -> dict[str, object]:
    """ContainerDef fields of a member started through the TLS wrapper (it copies /etc/pgha/tls
    to /run/pgha/tls for `user`, then runs pgha-entrypoint), or the image's entrypoint (TLS off)."""
    if not spec.tls.enabled:
        return {"command": cmd}
    return {"entrypoint": ["/bin/sh", f"{layout.CONFIG_MOUNT}/{tls.START_FILE}", user], "command": [role, *cmd]}


def tls_files(spec: ClusterSpec) -> dict[str, str]:
    return {tls.START_FILE: tls.START_SCRIPT} if spec.tls.enabled else {}


def tls_hash(spec: ClusterSpec, role: Role) -> list[object]:
    """The TLS file names a role receives, for its definition hash: a role whose set shrank (a
    cluster made when every role held every key) is recreated, so no private copy outlives the
    file removed from its config directory."""
    return [list(tls.ROLE_FILES[role.value])] if spec.tls.enabled else []


def etcdctl_tls(spec: ClusterSpec) -> list[str]:
    """etcdctl's flags as root in an etcd container (the mounted files): the CA and pgha's client certificate."""
    if not spec.tls.enabled:
        return []
    return [f"--cacert={tls.ROOT_CA}", f"--cert={tls.ROOT_CLIENT_CERT}", f"--key={tls.ROOT_CLIENT_KEY}"]
# ---- end tls ----


def etcd_member(spec: ClusterSpec, member: str, image: str, conf_dir: str | None = None,
                peer_cn: bool = True) -> Planned:
    """An etcd member; `conf_dir` holds its TLS files (mounted at /etc/pgha; needed when spec.tls is on);
    `peer_cn`: etcd accepts only its peer certificate's common name from a peer (`render.etcd_tls_flags`)."""
    cmd = render.etcd_command(spec, member, peer_cn)
    start = tls_start(spec, "etcd", Role.ETCD.value, cmd)
    health = ["etcdctl", "--command-timeout=2s", *etcdctl_tls(spec)]
    if spec.tls.enabled:
        health.append(f"--endpoints=https://localhost:{layout.ETCD_CLIENT_PORT}")
    return harden(spec, Planned(ContainerDef(
        scope=spec.scope, role=Role.ETCD.value, member=member, name=spec.container(member), image=image,
        network=spec.network, config_hash=render.digest(image, cmd, DNS_OPTIONS, start),
        volumes={spec.volume(member): layout.ETCD_MOUNT},
        config_dir=conf_dir if spec.tls.enabled else None,
        healthcheck=[*health, "endpoint", "health"],
        host_network=spec.multi_host,
        **start,  # type: ignore[arg-type]
    ), files=tls_files(spec)))


def patroni_node(spec: ClusterSpec, member: str, image: str, subnet: str, secrets: Secrets, conf_dir: str) -> Planned:
    """A Patroni node; `conf_dir` is the host directory holding its rendered files (mounted at /etc/pgha)."""
    text = render.render_patroni_yml(spec, member, subnet, secrets)
    # Over hosts `subnet` is the other site's host addresses, admitted in pg_hba and reloaded live on
    # the nodes when a standby site joins (flows/steps/standby.admit_on_primary): they do not count in
    # the digest, so the primary site's next `pgha up` does not recreate its nodes for them.
    hashed = render.render_patroni_yml(spec, member, "", secrets) if spec.multi_host else text
    volumes = {spec.volume(member): layout.DATA_MOUNT}
    if spec.backup.enabled and spec.backup.s3 is None and spec.backup.repo_host is None:
        # The pgBackRest repository, shared by every node (stack/backup.py explains why);
        # with a repository host the nodes mount none (they archive to it over TLS).
        volumes[backup.repo_volume(spec)] = layout.REPO_MOUNT
    start = tls_start(spec, "postgres", Role.PATRONI.value, [])
    api = f"{render.scheme(spec)}://localhost:{layout.PATRONI_API_PORT}/liveness"
    ca = ["--cacert", tls.ROOT_CA] if spec.tls.enabled else []
    return harden(spec, Planned(
        ContainerDef(
            scope=spec.scope, role=Role.PATRONI.value, member=member, name=spec.container(member), image=image,
            network=spec.network,
            config_hash=render.digest(image, render.redact(hashed, secrets), DNS_OPTIONS, sorted(volumes.items()),
                                      *([start] if spec.tls.enabled else []), *tls_hash(spec, Role.PATRONI)),
            volumes=volumes,
            config_dir=conf_dir,
            healthcheck=["curl", "-fsS", *ca, "-o", "/dev/null", api],
            host_network=spec.multi_host,
            # one engine: a standby's nodes also sit on the primary site's network (over hosts: host networking)
            extra_networks=((site.primary_network(spec),) if spec.standby_of is not None and not spec.multi_host
                            else ()),
            **start,  # type: ignore[arg-type]
        ),
        files={"patroni.yml": text, **tls_files(spec)},
    ))


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
    api = fence_api_volumes(spec)
    return harden(spec, Planned(
        ContainerDef(
            scope=spec.scope, role=Role.HAPROXY.value, member=member, name=spec.container(member), image=image,
            network=spec.network, command=[], config_hash=render.digest(image, text, ports, DNS_OPTIONS,
                                                                        *tls_hash(spec, Role.HAPROXY), *api.items()),
            config_dir=conf_dir, ports=ports, tmpfs_volumes=api,
            healthcheck=["curl", "-fsS", "-o", "/dev/null", f"http://localhost:{stats}/"],
            host_network=spec.multi_host,
        ),
        files={"haproxy.cfg": text},
    ))


def pooler(spec: ClusterSpec, image: str, conf_dir: str, scram_secrets: dict[str, str]) -> Planned:
    """PgBouncer on `ports.pool`, beside HAProxy (on every host with `hosts`), reaching the primary through it.

    `scram_secrets` (role -> pg_authid SCRAM secret) become its auth_file; the config hash
    covers them (hashed, never shown), so a changed password recreates the pooler.
    """
    ini = pgbouncer.render_pgbouncer_ini(spec)
    users = pgbouncer.render_userlist(scram_secrets)
    # Many hosts (host networking): PgBouncer binds ports.pool on its host, nothing is published.
    ports = {} if spec.multi_host else {layout.PGBOUNCER_PORT: spec.ports.pool}
    member = spec.pooler_member
    start = tls_start(spec, "postgres", Role.POOLER.value, [])
    return harden(spec, Planned(
        ContainerDef(
            scope=spec.scope, role=Role.POOLER.value, member=member, name=spec.container(member), image=image,
            network=spec.network,
            config_hash=render.digest(image, ini, render.digest(users), ports, DNS_OPTIONS,
                                      *([start] if spec.tls.enabled else []), *tls_hash(spec, Role.POOLER)),
            config_dir=conf_dir, ports=ports,
            healthcheck=["pg_isready", "-q", "-h", layout.SOCKET_DIR, "-p", str(pgbouncer.listen_port(spec))],
            host_network=spec.multi_host,
            **start,  # type: ignore[arg-type]
        ),
        files={layout.PGBOUNCER_INI: ini, layout.PGBOUNCER_USERLIST: users, **tls_files(spec)},
    ))


def fence_api_volumes(spec: ClusterSpec) -> dict[str, str]:
    """The volume HAProxy and the fencer share for HAProxy's runtime-API socket ({} with `hosts`,
    where each host's fencer sees its own engine only and HAProxy's health checks decide)."""
    return {} if spec.multi_host else {spec.haproxy_api_volume: layout.HAPROXY_FENCE_DIR}


def fencer_config(spec: ClusterSpec) -> fencing.FencerConfig:
    """The fencing agent's configuration; the one place its etcd URLs and credentials are built.

    etcd is reached as Patroni reaches it (`render.etcd_hosts`: the members' container names on
    the cluster network, or with `hosts` their hosts' addresses). With spec.tls, https URLs, the
    CA and the fencer's own client certificate, copied by FENCER_START to /run/pgha/tls for the
    agent's user, and etcd's `fencer` user (its password in FENCER_PASSWORD_FILE). The engine:
    the fencer's own socket proxy (a unix socket with `hosts`, see `stack.layout`). Every watcher
    of a cluster has the same configuration: each follows the engine whose socket its host
    mounted into it.
    """
    docker_url = f"unix://{layout.FENCER_PROXY_SOCKET}" if spec.multi_host else f"http://{layout.FENCER_PROXY}"
    auth = etcd_auth.enabled(spec)
    return fencing.FencerConfig(
        scope=spec.scope,
        leader_key=fencing.leader_key(layout.PATRONI_NAMESPACE, spec.scope),
        etcd_urls=[f"{render.scheme(spec)}://{h}" for h in render.etcd_hosts(spec)],
        docker_url=docker_url,
        stats_file=layout.FENCER_STATS,
        etcd_tls={"ca": tls.CA, "cert": tls.GATEWAY_CERT, "key": tls.GATEWAY_KEY} if spec.tls.enabled else None,
        etcd_user=etcd_auth.FENCER_USER if auth else None,
        etcd_password_file=f"{layout.RUN_DIR}/{FENCER_PASSWORD_FILE}" if auth else None,
        haproxy_sockets=[layout.HAPROXY_FENCE_SOCKET] if fence_api_volumes(spec) else [],
        route_wait_s=float(spec.timing.ttl),
        route_hold_s=float(spec.timing.loop_wait + 2),
        # Nothing can still be connecting to a drained server once `timeout connect` has passed.
        handback_after_s=render.HAPROXY_CONNECT_TIMEOUT_S + HANDBACK_MARGIN_S,
    )


HANDBACK_MARGIN_S = 0.5  # beyond HAProxy's `timeout connect`, for a busy machine's timers
FENCER_PASSWORD_FILE = "etcd-password"  # noqa: S105 - a file name; in the fencer's config dir: etcd's `fencer` user's password
PROXY_USER = "haproxy"  # the socket proxy's user: not root, and not the agent's (nobody)


def _literal(text: str) -> str:
    """`text` as a regex that matches it alone: every character outside [A-Za-z0-9_-] in a
    bracket (no backslash, which HAProxy's config parser would take for its own escape)."""
    return "".join(c if c.isalnum() or c in "_-" else f"[{c}]" for c in text)


def render_socket_proxy(scope: str, docker_socket: str = layout.DOCKER_SOCKET, unix: bool = False) -> str:
    """HAProxy in front of the engine's socket: only GET of /_ping, of the cluster's Patroni
    containers' /containers/<name>/json, and of /events with the one filter the agent sends
    (`fencing.events_query`: this cluster's Patroni containers).

    Everything else (POST, DELETE, exec, create, kill, another container's inspection - its
    environment -, unfiltered events, other paths) gets 403 before it reaches the engine. It
    listens on the fencer's loopback only, or (`unix`, the host-network fencer of `hosts`) on a
    socket in the fencer's private /run/pgha (a tmpfs no other process on the host sees).
    """
    version = "^(/v[0-9.]+)?"
    inspect = f"{version}/(_ping|containers/{_literal(scope)}-pg-[0-9]+/json)$"
    events = f"{version}/events[?]{_literal(fencing.events_query(scope))}&since=[0-9]+([.][0-9]+)?$"
    bind = f"{layout.FENCER_PROXY_SOCKET} mode 666" if unix else layout.FENCER_PROXY
    return "\n".join([
        render.HAPROXY_BANNER,
        "global",
        "    maxconn 64",
        "defaults",
        "    mode http",
        # The event stream's lines are forwarded as they come: without it HAProxy sends with
        # MSG_MORE and a death reaches the agent a delayed ACK (about 200 ms) late.
        "    option http-no-delay",
        "    timeout connect 2s",
        "    timeout client 1h",
        "    timeout server 1h",
        "frontend engine",
        f"    bind {bind}",
        f"    acl allowed_path path_reg {inspect}",
        f"    acl allowed_events url_reg {events}",
        "    http-request deny deny_status 403 unless METH_GET allowed_path or METH_GET allowed_events",
        "    default_backend socket",
        "backend socket",
        f"    server engine {docker_socket}",
        "",
    ])


FENCER_START = f"""#!/bin/sh
# The fencer: the socket proxy runs as {PROXY_USER} with the engine socket's group (the one
# identity that can open it), without root and without capabilities; the agent runs as nobody,
# which cannot open the socket (0660) and reaches the engine only through the proxy's filter.
# /run/pgha is a tmpfs (empty after every restart): root (without DAC_OVERRIDE) owns it
# before copying, and hands it to nobody after; 0711 lets the health check (root) stat the
# agent's counters without listing or reading anything.
set -eu
chown root:root /run/pgha && chmod 0700 /run/pgha
for f in fencer.py fencing.py fencer.json; do
  install -o nobody -g nogroup -m 0600 "/etc/pgha/$f" "/run/pgha/$f"
done
if [ -f /etc/pgha/{FENCER_PASSWORD_FILE} ]; then  # etcd auth: the agent's password
  install -o nobody -g nogroup -m 0600 /etc/pgha/{FENCER_PASSWORD_FILE} /run/pgha/{FENCER_PASSWORD_FILE}
fi
if [ -d /etc/pgha/tls ]; then  # spec.tls: the CA and the gateway client certificate
  install -d -m 0711 /run/pgha/tls  # root's: it writes into it without DAC_OVERRIDE; the files are nobody's
  for f in /etc/pgha/tls/*; do install -o nobody -g nogroup -m 0600 "$f" /run/pgha/tls/; done
fi
gid=$(stat -c %g {layout.DOCKER_SOCKET})
install -d -o {PROXY_USER} -g nogroup -m 0711 /run/pgha/engine  # the proxy's unix socket (hosts)
install -o {PROXY_USER} -g nogroup -m 0600 /etc/pgha/sockproxy.cfg /run/pgha/sockproxy.cfg
chown nobody:nogroup /run/pgha && chmod 0711 /run/pgha
setpriv --reuid={PROXY_USER} --regid="$gid" --clear-groups haproxy -D -f /run/pgha/sockproxy.cfg
exec setpriv --reuid=nobody --regid=nogroup --clear-groups python3 -u /run/pgha/fencer.py /run/pgha/fencer.json
"""


def fencer(spec: ClusterSpec, image: str, conf_dir: str, agent_files: dict[str, str],
           member: str | None = None, etcd_password: str | None = None) -> Planned:
    """The fencing watcher of one engine: pgha's image, the engine's socket read-only behind a proxy.

    `agent_files` are the agent's sources (fencer.py, fencing.py), read by the caller. With
    `hosts`, `member` is one of `spec.fencer_members()` (`fencer-<host>`): host networking like
    every member there (it reaches etcd at the hosts' addresses), the socket that host's
    `engine_socket` names, and the proxy on a unix socket (`stack.layout` says why).
    `etcd_password`: etcd's `fencer` user's password (with etcd auth, spec.tls).
    """
    member = member or spec.fencer_member
    host = spec.fencer_hosts().get(member)
    socket = spec.host_named(host).engine_socket if host is not None else layout.DOCKER_SOCKET
    files = {**agent_files, "fencer.json": fencer_config(spec).to_json(),
             "sockproxy.cfg": render_socket_proxy(spec.scope, unix=spec.multi_host), "fencer.sh": FENCER_START}
    shown = sorted(files.items())
    if etcd_password is not None and etcd_auth.enabled(spec):
        files[FENCER_PASSWORD_FILE] = etcd_password
        shown.append((FENCER_PASSWORD_FILE, render.digest(etcd_password)))  # hashed, never shown
    binds = {socket: layout.DOCKER_SOCKET}
    api = fence_api_volumes(spec)
    return harden(spec, Planned(
        ContainerDef(
            scope=spec.scope, role=Role.FENCER.value, member=member, name=spec.container(member), image=image,
            network=spec.network, command=[],
            config_hash=render.digest(image, shown, DNS_OPTIONS, binds, *tls_hash(spec, Role.FENCER), *api.items()),
            config_dir=conf_dir, entrypoint=["/bin/sh", f"{layout.CONFIG_MOUNT}/fencer.sh"], binds=binds,
            tmpfs_volumes=api,
            healthcheck=["sh", "-c", f"test $(( $(date +%s) - $(stat -c %Y {layout.FENCER_STATS}) )) -lt 30"],
            host_network=spec.multi_host,
        ),
        files=files,
    ))


# ---- r-repo: the pgBackRest repository host (backup.repo_host) ----
REPO_START = """#!/bin/sh
# The repository host: the repository volume and pgBackRest's files belong to postgres, and
# `pgbackrest server` runs as postgres as the container's main process (the engine restarts it).
# /run/pgha is a tmpfs (empty after every restart, so this runs in full each start): root
# (without DAC_OVERRIDE) owns it while copying, and opens it to postgres (0711: search only) after.
set -eu
chown root:root /run/pgha && chmod 0700 /run/pgha
install -d -m 0711 /run/pgha/pgbackrest  # root's: root writes into it without DAC_OVERRIDE
for f in /etc/pgha/pgbackrest/*; do install -o postgres -g postgres -m 0600 "$f" /run/pgha/pgbackrest/; done
chmod 0711 /run/pgha
chmod 0750 /var/lib/pgbackrest && chown postgres:postgres /var/lib/pgbackrest
exec setpriv --reuid=postgres --regid=postgres --clear-groups pgbackrest --config=/run/pgha/pgbackrest/backup.conf server
"""


def repo_host(spec: ClusterSpec, image: str, conf_dir: str, conf: str, certs: dict[str, str],
              passphrase: str | None) -> Planned:
    """The repository host's container on backup.repo_host: the repository volume, `pgbackrest server`.

    `conf` is `stack.backup.render_repo_conf`'s text (it carries the cipher passphrase:
    the definition hash covers it with the passphrase redacted); `certs` the cluster's
    pgBackRest TLS material. Host networking like every member across hosts, on its own
    port (PGBACKREST_REPO_PORT), so it may share a host with a Patroni node.
    """
    files = {f"{layout.PGBACKREST_HOST_SUBDIR}/{n}": t for n, t in certs.items()}
    files[f"{layout.PGBACKREST_HOST_SUBDIR}/backup.conf"] = conf
    files[layout.REPO_START] = REPO_START
    shown = conf.replace(passphrase, "<redacted>") if passphrase else conf
    volumes = {backup.repo_volume(spec): layout.REPO_MOUNT}
    ping = ["pgbackrest", "--config=/dev/null", "--log-level-file=off", "--log-level-console=error", "--tls-server-address=localhost",
            f"--tls-server-port={layout.PGBACKREST_REPO_PORT}", "server-ping"]
    member = spec.repo_member
    return harden(spec, Planned(
        ContainerDef(
            scope=spec.scope, role=Role.REPO.value, member=member, name=spec.container(member), image=image,
            network=spec.network, command=[],
            config_hash=render.digest(image, shown, REPO_START, sorted(volumes.items()),
                                      render.digest(sorted(certs.items()))),
            volumes=volumes, config_dir=conf_dir,
            entrypoint=["/bin/sh", f"{layout.CONFIG_MOUNT}/{layout.REPO_START}"],
            healthcheck=ping,
            host_network=spec.multi_host,
        ),
        files=files,
    ))


# ---- metrics: pgha's Prometheus exporter (metrics.enabled) ----
def exporter_config(spec: ClusterSpec) -> metrics.ExporterConfig:
    """The exporter's configuration: every node's REST API on the cluster network (https with
    spec.tls, verified with the cluster's CA), the audit's sample beside it in /etc/pgha."""
    nodes = tuple((m, f"{render.scheme(spec)}://{spec.address(m)}:{layout.PATRONI_API_PORT}") for m in spec.node_names())
    return metrics.ExporterConfig(
        scope=spec.scope, nodes=nodes, interval_s=spec.metrics.interval_s, port=layout.METRICS_PORT,
        ca_file=f"{tls.MOUNT_DIR}/ca.crt" if spec.tls.enabled else None,
        audit_file=f"{layout.CONFIG_MOUNT}/{layout.METRICS_AUDIT}")


def metrics_exporter(spec: ClusterSpec, image: str, conf_dir: str, agent_files: dict[str, str]) -> Planned:
    """The exporter: pgha's node image (its python3), the agent's sources and configuration in
    /etc/pgha, 127.0.0.1:`ports.metrics`. No capability, a read-only root, no secret: it asks only
    the REST API's open GET endpoints. Its health check: the latest snapshot is fresh."""
    files = {**agent_files, "exporter.json": exporter_config(spec).to_json()}
    ports = {layout.METRICS_PORT: spec.ports.metrics}
    mount = layout.CONFIG_MOUNT
    return harden(spec, Planned(
        ContainerDef(
            scope=spec.scope, role=Role.METRICS.value, member=spec.metrics_member,
            name=spec.container(spec.metrics_member), image=image, network=spec.network, command=[],
            config_hash=render.digest(image, sorted(files.items()), ports, DNS_OPTIONS,
                                      *tls_hash(spec, Role.METRICS)),
            config_dir=conf_dir, ports=ports,
            # -B: no bytecode written next to the read-only sources
            entrypoint=["python3", "-u", "-B", f"{mount}/exporter.py", f"{mount}/exporter.json"],
            healthcheck=["curl", "-fsS", "-o", "/dev/null", f"http://localhost:{layout.METRICS_PORT}/healthz"],
        ),
        files=files,
    ))
