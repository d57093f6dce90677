"""PgBouncer, pure: its config rendered from the spec, its SHOW output as models, its audit.

Why SCRAM secrets and not `auth_query`: `auth_query` needs an `auth_user` whose credential
PgBouncer must present to PostgreSQL, so a password (or an MD5 hash, which logs in just as
well) would sit in PgBouncer's auth_file. The SCRAM secret PostgreSQL itself stores
(`pg_authid.rolpassword`, `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`) lets PgBouncer
verify a client, and the proof that client sends gives PgBouncer the keys to log in to
PostgreSQL as it (SCRAM pass-through, PgBouncer ≥ 1.14): nothing on disk can log in by itself.
The file is rendered from pg_authid at `pgha up` (0600, mounted read-only, copied to a
directory only postgres reads) and a changed secret recreates the pooler.
"""

from __future__ import annotations

from pydantic import BaseModel

from stack import tls
from stack.findings import Finding, Level, grade
from stack.layout import HAPROXY_RW_PORT, PGBOUNCER_PORT, PGBOUNCER_USERLIST, RUN_DIR, SOCKET_DIR, SUPERUSER
from stack.spec import ClusterSpec

ADMIN_DB = "pgbouncer"  # PgBouncer's admin console database
# Roles that log in through the pooler: pgha's own (replication, rewind) never do.
POOLED_ROLES = (SUPERUSER,)


def pooled_roles(spec: ClusterSpec) -> tuple[str, ...]:
    """The superuser and every declared login role with a password (`roles:` in the spec)."""
    return POOLED_ROLES + tuple(r.name for r in spec.roles if r.login and r.password is not None)


def where(spec: ClusterSpec) -> str:
    """Every pooler's address as clients reach it (`host:port`, comma-separated over hosts)."""
    return ",".join(f"{h}:{p}" for h, p in spec.client_endpoints(pooled=True))


def listen_port(spec: ClusterSpec) -> int:
    """The port PgBouncer listens on in its container: its own fixed port, published on 127.0.0.1;
    with `hosts` (host networking, nothing published) `ports.pool` on the host itself."""
    return spec.ports.pool if spec.multi_host else PGBOUNCER_PORT


def render_pgbouncer_ini(spec: ClusterSpec) -> str:
    """pgbouncer.ini: every database through HAProxy's R/W port, SCRAM for clients and servers.

    HAProxy is the one beside it: its container on the cluster network, or with `hosts` the same
    host's HAProxy on 127.0.0.1:`ports.rw` (host networking; the member certificate names 127.0.0.1).
    """
    p = spec.pooler
    haproxy, rw = (("127.0.0.1", spec.ports.rw) if spec.multi_host
                   else (spec.container(spec.haproxy_member), HAPROXY_RW_PORT))
    lines = [
        "; Rendered by pgha from the ClusterSpec; do not edit by hand.",
        "[databases]",
        # Declared databases with their own pool size (`databases[].pool_size`).
        *(f"{d.name} = host={haproxy} port={rw} dbname={d.name} pool_size={d.pool_size}"
          for d in spec.databases if d.pool_size is not None),
        # Any database name: PgBouncer connects to the same name on the primary, through HAProxy.
        f"* = host={haproxy} port={rw}",
        "",
        "[pgbouncer]",
        "listen_addr = 0.0.0.0",
        f"listen_port = {listen_port(spec)}",
        # The admin console's socket: `psql -h` here as the postgres OS user logs in as the
        # `pgbouncer` admin user without a password (same UID as the running process).
        f"unix_socket_dir = {SOCKET_DIR}",
        "auth_type = scram-sha-256",
        f"auth_file = {RUN_DIR}/{PGBOUNCER_USERLIST}",
        f"admin_users = {SUPERUSER}",
        f"stats_users = {SUPERUSER}",
        f"pool_mode = {p.pool_mode.value}",
        f"max_client_conn = {p.max_client_conn}",
        f"default_pool_size = {p.default_pool_size}",
        # Drivers send these at startup; PgBouncer would refuse the connection otherwise.
        "ignore_startup_parameters = extra_float_digits,options",
        # A failed server login (HAProxy routing nowhere for a moment) is retried after 1 s,
        # not PgBouncer's 15 s, while clients wait in the queue.
        "server_login_retry = 1",
        "server_connect_timeout = 3",
        # Clients queue while a switchover pauses the pool; this bounds the wait.
        "query_wait_timeout = 120",
        "logfile =",
        "syslog = 0",
        "log_connections = 0",
        "log_disconnections = 0",
        # spec.tls: PostgreSQL takes TLS only; PgBouncer verifies the server (through HAProxy) with the CA.
        *(["server_tls_sslmode = verify-full", f"server_tls_ca_file = {tls.CA}",
           "server_tls_protocols = secure"] if spec.tls.enabled else []),
        # ... and its clients speak TLS too: a plaintext client is refused (TCP; the admin socket
        # inside the container is not TCP), and clients verify the pooler's certificate, issued
        # by the cluster CA for 127.0.0.1 (sslmode=verify-full, as on HAProxy's path).
        *(["client_tls_sslmode = require", f"client_tls_cert_file = {tls.POOLER_CERT}",
           f"client_tls_key_file = {tls.POOLER_KEY}", f"client_tls_ca_file = {tls.CA}",
           "client_tls_protocols = secure"] if spec.tls.enabled else []),
        "",
    ]
    return "\n".join(lines)


def render_userlist(secrets: dict[str, str]) -> str:
    """auth_file lines `"role" "SCRAM-SHA-256$..."` (the SCRAM secrets of `secrets`, sorted)."""
    for role, secret in secrets.items():
        if not secret.startswith("SCRAM-SHA-256$"):
            raise ValueError(f"role {role} has no SCRAM secret; only SCRAM secrets go to the pooler")
    return "".join(f'"{role}" "{secret}"\n' for role, secret in sorted(secrets.items()))


class PoolRow(BaseModel):
    """One line of PgBouncer's SHOW POOLS."""

    database: str
    user: str
    cl_active: int = 0
    cl_waiting: int = 0
    sv_active: int = 0
    sv_idle: int = 0
    sv_used: int = 0
    maxwait_s: float = 0.0
    pool_mode: str = ""


def parse_pools(rows: list[dict[str, object]]) -> list[PoolRow]:
    """SHOW POOLS rows (column -> value) as PoolRows; the admin console's own pool left out."""
    out: list[PoolRow] = []
    for r in rows:
        if r.get("database") == ADMIN_DB:
            continue

        def num(key: str, row: dict[str, object] = r) -> int:
            v = row.get(key)
            return int(v) if isinstance(v, int | str) and str(v).lstrip("-").isdigit() else 0

        out.append(PoolRow(
            database=str(r.get("database", "")), user=str(r.get("user", "")),
            cl_active=num("cl_active"), cl_waiting=num("cl_waiting"), sv_active=num("sv_active"),
            sv_idle=num("sv_idle"), sv_used=num("sv_used"),
            maxwait_s=num("maxwait") + num("maxwait_us") / 1e6, pool_mode=str(r.get("pool_mode", "") or ""),
        ))
    return out


class PoolerObs(BaseModel):
    """What the pooler says, for status and the audit."""

    reachable: bool
    error: str = ""
    pools: list[PoolRow] = []
    paused: bool = False

    @property
    def clients_active(self) -> int:
        return sum(p.cl_active for p in self.pools)

    @property
    def clients_waiting(self) -> int:
        return sum(p.cl_waiting for p in self.pools)

    @property
    def server_connections(self) -> int:
        return sum(p.sv_active + p.sv_idle + p.sv_used for p in self.pools)

    @property
    def max_wait_s(self) -> float:
        return max((p.maxwait_s for p in self.pools), default=0.0)

    def summary(self) -> str:
        if not self.reachable:
            return f"unreachable: {self.error}"
        return (f"{len(self.pools)} pools, {self.clients_active} clients active, {self.clients_waiting} waiting, "
                f"{self.server_connections} server connections")


def pooler_problems(obs: PoolerObs, spec: ClusterSpec, wait_warn_s: float = 5.0) -> list[str]:
    """Problems worth a line in status and a finding in the audit (empty: the pooler is fine)."""
    if not obs.reachable:
        return [f"pooler on {where(spec)} unreachable: {obs.error}"]
    out: list[str] = []
    if obs.max_wait_s >= wait_warn_s and obs.clients_waiting:
        out.append(f"pooler: {obs.clients_waiting} clients waiting, the oldest for {obs.max_wait_s:.1f}s "
                   f"(pool size {spec.pooler.default_pool_size} too small, or long transactions)")
    total = sum(p.cl_active + p.cl_waiting for p in obs.pools)
    if total >= 0.9 * spec.pooler.max_client_conn:
        out.append(f"pooler: {total} client connections, near max_client_conn {spec.pooler.max_client_conn}")
    return out


WAIT_WARN_S = 5.0  # a client queued this long: the pool is too small or transactions too long
WAIT_CRITICAL_S = 30.0


def check_pooler(obs: PoolerObs | None, spec: ClusterSpec, error: str = "") -> list[Finding]:
    """The audit's pooler rows: reachable, not left paused, clients waiting, client and server connections."""
    if obs is None or not obs.reachable:
        why = error or (obs.error if obs else "not observed")
        return [Finding("pooler.reachable", spec.pooler_member, Level.CRITICAL, why, "answers",
                        f"docker logs {spec.container(spec.pooler_member)}; `pgha up` recreates it")]
    th = spec.audit
    out = [Finding("pooler.reachable", spec.pooler_member, Level.OK, obs.summary(), "answers")]
    out.append(Finding("pooler.paused", spec.pooler_member, Level.CRITICAL if obs.paused else Level.OK,
                       "paused" if obs.paused else "serving", "serving",
                       "a switchover killed half-way left it paused: run RESUME on its admin console "
                       f"(database {ADMIN_DB} on {where(spec)})" if obs.paused else ""))
    lvl = grade(obs.max_wait_s, WAIT_WARN_S, WAIT_CRITICAL_S) if obs.clients_waiting else Level.OK
    out.append(Finding("pooler.waiting", spec.pooler_member, lvl,
                       f"{obs.clients_waiting} waiting, oldest {obs.max_wait_s:.1f}s",
                       f"warn {WAIT_WARN_S:g}s, critical {WAIT_CRITICAL_S:g}s",
                       "" if lvl == Level.OK else f"raise pooler.default_pool_size ({spec.pooler.default_pool_size}) "
                                                  "or look for long transactions"))
    clients = sum(p.cl_active + p.cl_waiting for p in obs.pools)
    pct = 100.0 * clients / spec.pooler.max_client_conn
    lvl = grade(pct, th.connections_warn_pct, th.connections_critical_pct)
    out.append(Finding("pooler.client_connections", spec.pooler_member, lvl,
                       f"{clients} of {spec.pooler.max_client_conn} ({pct:.0f}%)",
                       f"warn {th.connections_warn_pct:g}%, critical {th.connections_critical_pct:g}%",
                       "" if lvl == Level.OK else "raise pooler.max_client_conn"))
    out.append(Finding("pooler.server_connections", spec.pooler_member, Level.OK,
                       f"{obs.server_connections} (pool size {spec.pooler.default_pool_size} per database and user)"))
    return out
