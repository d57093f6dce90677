"""Pure renderers: every config file and command line of a cluster, from its ClusterSpec.

No I/O here, so unit tests can check the exact output for several specs. Passwords come in
as a `Secrets` object and appear only in the rendered patroni.yml (a 0600 file mounted
read-only into the node), never in a command line, env var or label.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from stack import appdb, etcd_auth, site, tls
from stack.backup import archive_parameters
from stack.errors import SpecError
from stack.layout import (
    ETCD_CLIENT_PORT,
    ETCD_MOUNT,
    ETCD_PEER_PORT,
    ETCD_QUOTA_BYTES,
    HAPROXY_ADMIN_SOCKET,
    HAPROXY_FENCE_SOCKET,
    HAPROXY_RO_PORT,
    HAPROXY_RW_PORT,
    HAPROXY_STATS_PORT,
    PATRONI_API_PORT,
    PG_PORT,
    PGDATA,
    REPLICATION_USER,
    RESTAPI_USER,
    REWIND_USER,
    SOCKET_DIR,
    SUPERUSER,
)
from stack.resources import derive_memory_parameters
from stack.secrets import Secrets
from stack.spec import ClusterSpec

# pg_hba host names: dot-separated labels (no space, `#`, quote, `/` or `,`).
HBA_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
CONFIG_TOKEN_RE = re.compile(r"^[A-Za-z0-9._:/@+-]+$")


def etcd_hosts(spec: ClusterSpec) -> list[str]:
    return [f"{spec.address(m)}:{ETCD_CLIENT_PORT}" for m in spec.etcd_names()]


def scheme(spec: ClusterSpec) -> str:
    """http or https for etcd's and Patroni's URLs (spec.tls)."""
    return "https" if spec.tls.enabled else "http"


def etcd_tls_flags(spec: ClusterSpec, peer_cn: bool = True) -> list[str]:
    """Client and peer TLS, both requiring a certificate signed by the cluster CA; peers present etcd's
    own peer certificate and, with `peer_cn`, etcd accepts no other common name from a peer (off only
    while an older cluster's members move to the peer certificate one at a time: `tasks.host.tls`)."""
    return [
        f"--cert-file={tls.CERT}", f"--key-file={tls.KEY}", f"--trusted-ca-file={tls.CA}", "--client-cert-auth",
        f"--peer-cert-file={tls.PEER_CERT}", f"--peer-key-file={tls.PEER_KEY}", f"--peer-trusted-ca-file={tls.CA}",
        "--peer-client-cert-auth", *([f"--peer-cert-allowed-cn={tls.peer_cn(spec.scope)}"] if peer_cn else []),
    ]


def etcd_command(spec: ClusterSpec, member: str, peer_cn: bool = True) -> list[str]:
    """etcd's flags for one member. The initial-cluster flags only matter on first start."""
    host = config_token(spec.address(member), "address")  # many hosts: the host's address (host networking)
    sch = scheme(spec)
    initial = ",".join(f"{m}={sch}://{config_token(spec.address(m), 'address')}:{ETCD_PEER_PORT}"
                       for m in spec.etcd_names())
    return [
        f"--name={member}",
        f"--data-dir={ETCD_MOUNT}/data",
        f"--listen-client-urls={sch}://0.0.0.0:{ETCD_CLIENT_PORT}",
        f"--advertise-client-urls={sch}://{host}:{ETCD_CLIENT_PORT}",
        f"--listen-peer-urls={sch}://0.0.0.0:{ETCD_PEER_PORT}",
        f"--initial-advertise-peer-urls={sch}://{host}:{ETCD_PEER_PORT}",
        f"--initial-cluster={initial}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token={spec.scope}",
        # Small, bounded DB and short elections: a Docker network has sub-ms latency.
        "--heartbeat-interval=100",
        "--election-timeout=1000",
        "--auto-compaction-mode=periodic",
        "--auto-compaction-retention=1h",
        f"--quota-backend-bytes={ETCD_QUOTA_BYTES}",
        *(etcd_tls_flags(spec, peer_cn) if spec.tls.enabled else []),
    ]


def dcs_config(spec: ClusterSpec) -> dict[str, Any]:
    """Patroni's dynamic (DCS) configuration, set at bootstrap."""
    t = spec.timing
    parameters: dict[str, Any] = {
        "wal_level": "replica",
        "hot_standby": "on",
        "wal_log_hints": "on",
        "max_wal_senders": 10,
        "max_replication_slots": 10,
        "wal_keep_size": "128MB",
        "password_encryption": "scram-sha-256",
        "max_connections": 100,
    }
    # Memory settings from the node's limit (stack/resources.py); the spec's own values win.
    parameters.update(derive_memory_parameters(spec.resources.patroni.memory_mib, _max_connections(spec)))
    parameters.update(archive_parameters(spec))
    # e.g. pg_stat_statements declared in `databases:`, pgaudit with audit_logging
    if libs := appdb.preload_libraries(spec.databases, spec.audit_logging.enabled):
        parameters["shared_preload_libraries"] = ",".join(libs)
    parameters.update(appdb.audit_parameters(spec.audit_logging))
    parameters.update(spec.postgres_parameters)
    standby = {"standby_cluster": site.standby_cluster(spec)} if spec.standby_of is not None else {}
    return {
        **standby,
        "ttl": t.ttl,
        "loop_wait": t.loop_wait,
        "retry_timeout": t.retry_timeout,
        "maximum_lag_on_failover": t.maximum_lag_on_failover,
        "synchronous_mode": t.synchronous_mode,
        "postgresql": {
            "use_pg_rewind": True,
            "use_slots": True,
            "parameters": parameters,
        },
    }


def _max_connections(spec: ClusterSpec) -> int:
    raw = str(spec.postgres_parameters.get("max_connections", 100))
    return int(raw) if raw.isdigit() else 100


def pg_hba(subnet: str, ssl: bool = True) -> list[str]:
    """Only the cluster's own Docker network may connect over TCP, only with SCRAM, and (TLS on) only
    over TLS: `hostssl` lines and no `host` line, so a plain TCP connection finds no entry and is refused."""
    host = "hostssl" if ssl else "host"
    # `subnet` may name several, comma-separated (a standby cluster: its own and the primary site's network)
    nets = [n for n in subnet.split(",") if n] or [subnet]
    return [
        "local all postgres peer",
        "local all all scram-sha-256",
        f"{host} all all 127.0.0.1/32 scram-sha-256",
        # Patroni checks its own timeline over a local replication connection.
        f"{host} replication {REPLICATION_USER} 127.0.0.1/32 scram-sha-256",
        *[f"{host} replication {REPLICATION_USER} {n} scram-sha-256" for n in nets],
        *[f"{host} all all {n} scram-sha-256" for n in nets],
    ]


def hosts_pg_hba(spec: ClusterSpec, peers: str = "") -> list[str]:
    """Many hosts: the hosts' own addresses (each one /32), instead of the cluster network's subnet;
    a second site's too: the primary site's hosts (`standby_of.hosts`) and `peers`, the other site's
    host addresses comma-separated (`docker_hosts.node_subnets`)."""
    ssl = spec.tls.enabled
    host = "hostssl" if ssl else "host"
    rules = pg_hba("127.0.0.1/32", ssl)[:4]
    addresses = [h.address for h in spec.hosts or []]
    for a in [*(spec.standby_of.hosts or [] if spec.standby_of else []), *peers.split(",")]:
        if a and a not in addresses:
            addresses.append(a)
    for a in addresses:
        addr = hba_address(a)
        rules += [f"{host} replication {REPLICATION_USER} {addr} scram-sha-256",
                  f"{host} all all {addr} scram-sha-256"]
    return rules


def hba_address(address: str) -> str:
    """One host as a pg_hba address field: an IPv4 address as /32, a host name as itself.

    Anything else (a space, `#`, a quote, a mask of its own) would change what the line means,
    so it is refused here too, whatever the spec's validation let through.
    """
    try:
        return f"{ipaddress.IPv4Address(address)}/32"
    except ValueError:
        pass
    if not HBA_NAME_RE.match(address):
        raise SpecError(f"host address '{address}' cannot be written into pg_hba.conf (an IPv4 address or a host name)")
    return address


def config_token(value: str, what: str) -> str:
    """A value written unquoted into haproxy.cfg or etcd's flags: refused when it could split or end a line."""
    if not CONFIG_TOKEN_RE.match(value):
        raise SpecError(f"{what} '{value}' cannot be written into a config file (letters, digits and . _ : / @ + - only)")
    return value


# libpq options of Patroni's replication and rewind connections (primary_conninfo, pg_rewind).
PG_CLIENT_TLS = {"sslmode": "verify-full", "sslrootcert": tls.CA}
# The node's own server settings (patroni.yml, local: `config set` cannot change them).
PG_SERVER_TLS = {"ssl": "on", "ssl_cert_file": tls.CERT, "ssl_key_file": tls.KEY, "ssl_ca_file": tls.CA,
                 "ssl_min_protocol_version": "TLSv1.2"}


def _tls_patroni(spec: ClusterSpec, conf: dict[str, Any], secrets: Secrets) -> dict[str, Any]:
    """patroni.yml with TLS for etcd, the REST API and PostgreSQL (spec.tls.enabled)."""
    conf["etcd3"].update({"protocol": "https", "cacert": tls.CA, "cert": tls.CERT, "key": tls.KEY})
    if secrets.etcd_patroni:  # etcd's `patroni` user (stack/etcd_auth.py): the scope's prefix only,
        # with the gateway certificate (no common name: etcd's gateway refuses one with auth on)
        conf["etcd3"].update({"username": etcd_auth.PATRONI_USER, "password": secrets.etcd_patroni,
                              "cert": tls.GATEWAY_CERT, "key": tls.GATEWAY_KEY})
    # HTTPS; unsafe endpoints need the basic-auth credentials AND a client certificate from the CA
    # (verify_client optional: GETs for HAProxy's health checks need none).
    conf["restapi"].update({"certfile": tls.CERT, "keyfile": tls.KEY, "cafile": tls.CA, "verify_client": "optional"})
    # Patroni's calls to other members (failsafe, failover checks) and patronictl: CA + client cert.
    conf["ctl"].update({"insecure": False, "cacert": tls.CA, "certfile": tls.CERT, "keyfile": tls.KEY})
    pg = conf["postgresql"]
    for user in ("replication", "rewind"):
        pg["authentication"][user].update(PG_CLIENT_TLS)
    pg["parameters"].update(PG_SERVER_TLS)
    return conf


def patroni_config(spec: ClusterSpec, member: str, subnet: str, secrets: Secrets) -> dict[str, Any]:
    host = spec.address(member)
    conf: dict[str, Any] = {
        "scope": spec.scope,
        "name": member,
        "restapi": {
            "listen": f"0.0.0.0:{PATRONI_API_PORT}",
            "connect_address": f"{host}:{PATRONI_API_PORT}",
            # GETs (health checks) stay open; unsafe methods need these credentials.
            "authentication": {"username": RESTAPI_USER, "password": secrets.restapi},
        },
        "ctl": {"authentication": {"username": RESTAPI_USER, "password": secrets.restapi}},
        "etcd3": {"hosts": etcd_hosts(spec)},
        "bootstrap": {
            "dcs": dcs_config(spec),
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums", {"auth": "scram-sha-256"}],
        },
        "postgresql": {
            "listen": f"0.0.0.0:{PG_PORT}",
            "connect_address": f"{host}:{PG_PORT}",
            "data_dir": PGDATA,
            "bin_dir": f"/usr/lib/postgresql/{spec.postgres_version}/bin",
            "pgpass": "/run/pgha/pgpass",
            "authentication": {
                "superuser": {"username": SUPERUSER, "password": secrets.superuser},
                "replication": {"username": REPLICATION_USER, "password": secrets.replication},
                "rewind": {"username": REWIND_USER, "password": secrets.rewind},
            },
            # Patroni's own connections go through the socket (peer auth for postgres).
            "use_unix_socket": True,
            "use_unix_socket_repl": False,
            "pg_hba": pg_hba(subnet, spec.tls.enabled) if not spec.multi_host else hosts_pg_hba(spec, subnet),
            "parameters": {"unix_socket_directories": SOCKET_DIR},
        },
        "tags": node_tags(spec, member),
    }
    if (delayed := spec.delay_of(member)) is not None:
        # Local `postgresql.parameters` win over the DCS's (Patroni merges the local ones last), so
        # `config set` and the dynamic config never undo one node's delay; Patroni moves the
        # parameter into its recovery settings (standby.signal + postgresql.conf, PG >= 12).
        conf["postgresql"]["parameters"][DELAY_PARAMETER] = f"{delayed.seconds}s"
    return _tls_patroni(spec, conf, secrets) if spec.tls.enabled else conf


DELAY_PARAMETER = "recovery_min_apply_delay"


def node_tags(spec: ClusterSpec, member: str) -> dict[str, bool]:
    """Patroni's tags of one node. A delayed node is never promoted (nofailover), never in R/O routing
    (noloadbalance: its /replica answers 503, so HAProxy's replicas backend marks it down) and never
    the synchronous standby (nosync: in synchronous mode Patroni promotes only that one)."""
    delayed = spec.delay_of(member) is not None
    return {"nofailover": delayed, "noloadbalance": delayed, "clonefrom": False,
            "nosync": delayed and spec.timing.synchronous_mode}


def render_patroni_yml(spec: ClusterSpec, member: str, subnet: str, secrets: Secrets) -> str:
    return yaml.safe_dump(patroni_config(spec, member, subnet, secrets), sort_keys=False)


@dataclass(frozen=True)
class CfgSection:
    """One section of haproxy.cfg: its header line (`listen primary`) and its directives in order."""

    header: str
    directives: list[str]


HAPROXY_BANNER = "# Rendered by pgha from the ClusterSpec; do not edit by hand."
# HAProxy's health checks of Patroni's REST API (`listen primary` / `listen replicas`): Patroni
# answers OPTIONS and HEAD with the status line only (`write_status_code_only`), GET with a body.
CHECK_METHOD = "OPTIONS"
# HAProxy's `timeout connect`: the fencer hands a drained dead node back to the health checks
# only after it (stack/fencing.py, `takeout_commands`).
HAPROXY_CONNECT_TIMEOUT_S = 1


def haproxy_sections(spec: ClusterSpec) -> list[CfgSection]:
    """HAProxy: R/W → the member whose /primary answers 200, R/O → members whose /replica does.

    Servers are resolved through Docker's DNS at run time (`init-addr none`), so HAProxy
    starts before the nodes and follows a recreated container's new address.
    """
    t = spec.timing
    default_server = (
        f"default-server inter {t.inter_ms}ms fastinter {t.inter_ms}ms downinter {t.inter_ms}ms "
        f"fall {t.fall} rise {t.rise} on-marked-down shutdown-sessions "
        f"resolvers docker init-addr last,libc,none check port {PATRONI_API_PORT}"
        # Patroni's API over TLS, its certificate verified against the cluster CA.
        + (f" check-ssl verify required ca-file {tls.CA}" if spec.tls.enabled else "")
    )
    servers = [f"server {m} {spec.container(m)}:{PG_PORT}" for m in spec.node_names()]
    resolvers: list[CfgSection] = []
    rw_bind, ro_bind, stats_bind = f":{HAPROXY_RW_PORT}", f":{HAPROXY_RO_PORT}", f":{HAPROXY_STATS_PORT}"
    if spec.multi_host:
        # Many hosts (host networking): fixed host addresses, no Docker DNS; HAProxy binds the
        # cluster's client ports on its own host.
        default_server = default_server.replace("resolvers docker init-addr last,libc,none ", "")
        servers = [f"server {m} {config_token(spec.address(m), 'address')}:{PG_PORT}" for m in spec.node_names()]
        rw_bind, ro_bind, stats_bind = f":{spec.ports.rw}", f":{spec.ports.ro}", f":{spec.ports.stats}"
    else:
        resolvers = [CfgSection("resolvers docker", [
            "nameserver dns 127.0.0.11:53",
            *(f"hold {state} 1s" for state in ("valid", "other", "refused", "nx", "timeout")),
            "timeout resolve 1s",
        ])]
    return [
        CfgSection("global", [
            "maxconn 2000",
            "log stdout format raw local0 warning",
            # The runtime API: a switchover routes the new primary the moment Patroni confirms
            # it (`set server ... health up`) instead of after fall x inter (tasks/haproxy.py).
            f"stats socket {HAPROXY_ADMIN_SOCKET} mode 600 level admin",
            # The fencer's: it marks a member the engine confirmed dead down at once and routes
            # the new leader when it takes the lock (stack/layout.py, tasks/fencer_agent.py).
            # Not with `hosts`: a fencer there sees its own host's engine only.
            *([] if spec.multi_host else [f"stats socket {HAPROXY_FENCE_SOCKET} mode 666 level admin"]),
        ]),
        *resolvers,
        CfgSection("defaults", [
            "mode tcp",
            "log global",
            # A stopped node's address blackholes packets for a while: short connect and check
            # timeouts mark it down in about a second instead of several.
            f"timeout connect {HAPROXY_CONNECT_TIMEOUT_S}s",
            "timeout client 30m",
            "timeout server 30m",
            f"timeout check {t.check_timeout_ms}ms",
            # retries 0: a refused connection goes straight back to the client, which reconnects
            # at once, instead of waiting HAProxy's 1 s turn-around on a node that is demoting.
            f"retries {t.retries}",
        ]),
        CfgSection("frontend stats", [
            "mode http",
            f"bind {stats_bind}",
            "http-request use-service prometheus-exporter if { path /metrics }",
            "stats enable",
            "stats uri /",
            "stats refresh 5s",
        ]),
        CfgSection("listen primary", [
            f"bind {rw_bind}",
            # OPTIONS, not GET: Patroni answers it with the status line alone. To a GET it writes
            # headers and a JSON body, and HAProxy, done once it has read the status, closes the
            # check with a reset while Patroni still writes: Patroni 4.0 logs each as a WARNING
            # and a 20-line ConnectionResetError traceback (about 0.5 GB a day per node).
            # A standby cluster's leader is its standby leader (read-only until `pgha site promote`):
            # /leader answers 200 for either, so the R/W port reaches the promoted leader unchanged.
            f"option httpchk {CHECK_METHOD} {'/leader' if spec.standby_of is not None else '/primary'}",
            "http-check expect status 200",
            default_server,
            *servers,
        ]),
        CfgSection("listen replicas", [
            f"bind {ro_bind}",
            "balance roundrobin",
            f"option httpchk {CHECK_METHOD} /replica",
            "http-check expect status 200",
            default_server,
            *servers,
        ]),
    ]


def serialize_haproxy(sections: list[CfgSection]) -> str:
    """haproxy.cfg text: the banner, then each section's header and its indented directives,
    sections separated by one blank line."""
    blocks = [f"{sec.header}\n" + "".join(f"    {d}\n" for d in sec.directives) for sec in sections]
    return f"{HAPROXY_BANNER}\n" + "\n".join(blocks)


def render_haproxy_cfg(spec: ClusterSpec) -> str:
    """haproxy.cfg for the spec (the structure is `haproxy_sections`)."""
    return serialize_haproxy(haproxy_sections(spec))


def digest(*parts: object) -> str:
    """A short stable hash of a container's definition (for the pgha.config label).

    Callers pass config text with passwords redacted, so the label reveals nothing.
    """
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def redact(text: str, secrets: Secrets) -> str:
    for value in secrets.values():
        text = text.replace(value, "<redacted>")
    return text
