"""PostgreSQL: the only place SQL is run.

Two ways, each for what it can do: psycopg connections through HAProxy's ports on
127.0.0.1 (parameterised statements, the cluster as clients see it), and psql on a node's
Unix socket as the postgres OS user (peer authentication, no password) for statements aimed
at one particular member — a member has no port published on the host.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import psycopg

from stack.audit_backup import ArchiverObs
from stack.audit_obs import PostgresObs, ReplicationRow
from stack.errors import PostgresError
from stack.hosts import multi_host_uri
from stack.layout import SOCKET_DIR, SUPERUSER
from stack.retry import with_retries
from stack.rolling import Setting
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks._prefect import task
from tasks.host import tls as host_tls
from tasks.node_exec import node


def tls_params(spec: ClusterSpec) -> dict[str, str]:
    """libpq TLS options for a connection from the host: verify-full against the cluster CA
    (the member certificate names 127.0.0.1; HAProxy passes TLS through untouched)."""
    if not spec.tls.enabled:
        return {}
    return {"sslmode": "verify-full", "sslrootcert": str(host_tls.ca_path(spec.scope))}


# libpq >= 16: refuse a server that does not prove it knows the password's SCRAM verifier (one
# that asks for a cleartext or md5 password, or for none, is refused before anything is sent).
REQUIRE_SCRAM = {"require_auth": "scram-sha-256"}


def server_auth_params(spec: ClusterSpec) -> dict[str, str]:
    """How pgha's own connections authenticate the server before sending credentials: TLS
    verify-full against the cluster CA when TLS is on (through HAProxy and to the pooler alike),
    and SCRAM required, whose server signature a process that merely bound the port cannot forge."""
    return {**tls_params(spec), **REQUIRE_SCRAM}


def dsn(spec: ClusterSpec, read_only: bool = False, password: str | None = None, dbname: str = "postgres",
        pooled: bool = False, passfile: str | None = None, user: str = SUPERUSER) -> str:
    """Connection URI (R/W, R/O or the pooler's); the password appears only when explicitly passed.

    The URI asks for TLS verified against the CA (spec.tls), through HAProxy and to the pooler
    alike (the pooler presents a certificate of the cluster CA for its addresses). Over many hosts it
    is libpq's multi-host URI: every host's HAProxy (or pooler), so a client survives the loss of the
    one it used.
    """
    port = spec.ports.pool if pooled else spec.ports.ro if read_only else spec.ports.rw
    auth = user + (f":{quote(password, safe='')}" if password else "")
    params = tls_params(spec)
    if passfile:
        params["passfile"] = passfile
    query = "&".join(f"{k}={quote(v, safe='/')}" for k, v in params.items())
    if spec.multi_host:
        uri = multi_host_uri(user, spec.client_endpoints(read_only, pooled), dbname, read_only,
                             f":{quote(password, safe='')}" if password else "")
        return uri + (f"&{query}" if query else "")
    return f"postgresql://{auth}@127.0.0.1:{port}/{dbname}" + (f"?{query}" if query else "")


def pgpass_line(spec: ClusterSpec, password: str, read_only: bool = False, pooled: bool = False,
                user: str = SUPERUSER) -> str:
    """~/.pgpass line(s) for the endpoint (`:` and `\\` escaped as libpq wants); every host's over many hosts."""
    pw = password.replace("\\", "\\\\").replace(":", "\\:")
    if spec.multi_host:
        return "".join(f"{h}:{p}:*:{user}:{pw}\n" for h, p in spec.client_endpoints(read_only, pooled))
    port = spec.ports.pool if pooled else spec.ports.ro if read_only else spec.ports.rw
    return f"127.0.0.1:{port}:*:{user}:{pw}\n"


def connect(spec: ClusterSpec, secrets: Secrets, read_only: bool = False, timeout: int = 3,
            dbname: str = "postgres", autocommit: bool = True, application_name: str = "pgha",
            keepalives: bool = False, pooled: bool = False, any_role: bool = False) -> psycopg.Connection:
    """A connection through HAProxy's R/W (or R/O) port, or the pooler's; one-line PostgresError when refused.

    `keepalives`: TCP keepalives bound a hang on a dead peer (the drill probes use them).
    `any_role`: over hosts, the R/W port's node whatever its role (a site demoted to a standby).
    """
    port = spec.ports.pool if pooled else spec.ports.ro if read_only else spec.ports.rw
    extra: dict[str, int | str] = ({"keepalives": 1, "keepalives_idle": 2, "keepalives_interval": 1,
                                    "keepalives_count": 2} if keepalives else {})
    host, ports, where = "127.0.0.1", str(port), f"127.0.0.1:{port}"
    if spec.multi_host:
        # Many hosts: libpq tries every host's HAProxy (or pooler) in turn (the multi-host URI `pgha dsn` prints).
        ends = spec.client_endpoints(read_only, pooled)
        host, ports = ",".join(h for h, _ in ends), ",".join(str(p) for _, p in ends)
        where = ",".join(f"{h}:{p}" for h, p in ends)
        # A standby site's R/W port reaches its standby leader, read-only until it is promoted.
        extra["target_session_attrs"] = ("prefer-standby" if read_only else
                                         "any" if spec.standby_of is not None or any_role else "read-write")
    try:
        return psycopg.connect(host=host, port=ports, user=SUPERUSER, password=secrets.superuser,
                               dbname=dbname, connect_timeout=timeout, autocommit=autocommit,
                               application_name=application_name, **server_auth_params(spec), **extra)
    except psycopg.Error as exc:
        # psycopg's message names host/port/user, never the password.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PostgresError(f"{where}: {first}") from None


@dataclass(frozen=True)
class EndpointProbe:
    port: int
    in_recovery: bool


def probe(spec: ClusterSpec, secrets: Secrets, read_only: bool) -> EndpointProbe:
    with connect(spec, secrets, read_only=read_only) as conn:
        row = conn.execute("select pg_is_in_recovery()").fetchone()
    return EndpointProbe(spec.ports.ro if read_only else spec.ports.rw, bool(row and row[0]))


def wait_writable(spec: ClusterSpec, secrets: Secrets, timeout: float) -> float:
    """Wait until a new connection on the R/W port reaches a primary out of recovery; seconds waited.

    Polled every 50 ms with a fresh connection each time (what a pooler's new server
    connection or a reconnecting client gets), so it ends as soon as writes can succeed.
    """
    started = time.monotonic()

    def attempt() -> EndpointProbe:
        with connect(spec, secrets, timeout=1) as conn:
            row = conn.execute("select pg_is_in_recovery()").fetchone()
        return EndpointProbe(spec.ports.rw, bool(row and row[0]))

    wait_for(f"R/W port {spec.ports.rw} to reach a writable primary", attempt, lambda p: not p.in_recovery,
             timeout=timeout, interval=0.05)
    return time.monotonic() - started


@task(name="wait-endpoints")
def wait_endpoints(spec: ClusterSpec, secrets: Secrets, timeout: float = 60) -> tuple[EndpointProbe, EndpointProbe | None]:
    """Wait until the R/W port reaches a writable primary (a standby cluster's: its standby leader,
    read-only until `pgha site promote`) and the R/O port a replica."""
    standby = spec.standby_of is not None
    rw = wait_for(f"R/W port {spec.ports.rw} to reach {'the standby leader' if standby else 'a writable primary'}",
                  lambda: probe(spec, secrets, read_only=False), lambda p: p.in_recovery == standby,
                  timeout=timeout, interval=0.3)
    ro = None
    if spec.nodes > 1:
        ro = wait_for(f"R/O port {spec.ports.ro} to reach a replica",
                      lambda: probe(spec, secrets, read_only=True), lambda p: p.in_recovery,
                      timeout=timeout, interval=0.3)
    return rw, ro


AUDIT_STATEMENT_TIMEOUT = "5s"  # an audit query must never hang on a lock or a sick node


@contextmanager
def _audit_connect(spec: ClusterSpec, secrets: Secrets, read_only: bool = False,
                   any_role: bool = False) -> Iterator[psycopg.Connection]:
    """A short-lived session through the cluster's port; a query that fails inside it (the node went
    away mid-query: a switchover, a demotion) is one PostgresError line, not psycopg's exception.
    A connection attempt that fails transiently (`stack.retry.classify`, libpq's connect timeout above
    all) is made once more: on a busy machine the TLS and SCRAM exchange through HAProxy can miss the
    3 s once, and the audit would report a critical that is not. A refusal is raised at once."""
    conn = with_retries(lambda: connect(spec, secrets, read_only=read_only, any_role=any_role), delays_s=(0.0,))
    try:
        with conn:
            conn.execute(f"set statement_timeout = '{AUDIT_STATEMENT_TIMEOUT}'")
            yield conn
    except psycopg.Error as exc:
        port = spec.ports.ro if read_only else spec.ports.rw
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PostgresError(f"the {'R/O' if read_only else 'R/W'} port {port}: {first}") from None


def _where(conn: psycopg.Connection) -> tuple[str | None, bool]:
    row = conn.execute("select host(inet_server_addr()), pg_is_in_recovery()").fetchone()
    return (str(row[0]) if row and row[0] else None), bool(row and row[1])


def endpoint_node(spec: ClusterSpec, secrets: Secrets, read_only: bool) -> tuple[str | None, bool]:
    """(address of the node the port reached, whether it is in recovery)."""
    with _audit_connect(spec, secrets, read_only=read_only) as conn:
        return _where(conn)


# The newest WAL position of the node: a standby cluster's leader (second site) is in recovery,
# where pg_current_wal_lsn() fails; its newest is what it received from the primary site.
CURRENT_LSN = ("(case when pg_is_in_recovery() then coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) "
               "else pg_current_wal_lsn() end)")


def replication_rows(spec: ClusterSpec, secrets: Secrets) -> list[ReplicationRow]:
    """pg_stat_replication on the primary (through the R/W port)."""
    sql = ("select application_name, state, sync_state, "  # noqa: S608 - CURRENT_LSN is a constant
           f"pg_wal_lsn_diff({CURRENT_LSN}, replay_lsn)::bigint, extract(epoch from replay_lag)::float8 "
           "from pg_stat_replication")  # noqa: S608 - a constant, no input
    with _audit_connect(spec, secrets) as conn:
        rows = conn.execute(sql).fetchall()
    return [ReplicationRow(name=str(r[0]), state=str(r[1]), sync_state=str(r[2]),
                           lag_bytes=None if r[3] is None else int(r[3]),
                           lag_s=0.0 if r[4] is None else float(r[4])) for r in rows]


def audit_stats(spec: ClusterSpec, secrets: Secrets) -> PostgresObs:
    """Connections, old transactions, inactive slots, XID age and checksums on the primary."""
    with _audit_connect(spec, secrets) as conn:
        one = conn.execute(
            "select (select count(*) from pg_stat_activity where backend_type = 'client backend'),"
            " current_setting('max_connections')::int,"
            " (select extract(epoch from max(now() - xact_start)) from pg_stat_activity"
            "   where xact_start is not null and pid <> pg_backend_pid() and backend_type = 'client backend'),"
            " (select extract(epoch from max(now() - state_change)) from pg_stat_activity"
            "   where state like 'idle in transaction%'),"
            " (select max(age(datfrozenxid)) from pg_database),"
            " current_setting('data_checksums') = 'on'").fetchone()
        slots = conn.execute(
            f"select slot_name, coalesce(pg_wal_lsn_diff({CURRENT_LSN}, restart_lsn), 0)::bigint"  # noqa: S608
            " from pg_replication_slots where not active").fetchall()  # noqa: S608 - a constant
    assert one is not None
    return PostgresObs(connections=int(one[0]), max_connections=int(one[1]),
                       oldest_xact_s=None if one[2] is None else float(one[2]),
                       oldest_idle_in_xact_s=None if one[3] is None else float(one[3]),
                       inactive_slots={str(s[0]): int(s[1]) for s in slots},
                       max_xid_age=int(one[4] or 0), data_checksums=bool(one[5]))


# ---- SQL on one member, over its Unix socket ----


def archiver_stats(spec: ClusterSpec, secrets: Secrets) -> ArchiverObs:
    """pg_stat_archiver of the primary (through the R/W port)."""
    with _audit_connect(spec, secrets) as conn:
        row = conn.execute("select archived_count, failed_count, last_archived_wal, last_archived_time, "
                           "last_failed_wal, last_failed_time from pg_stat_archiver").fetchone()
    if row is None:
        raise PostgresError("pg_stat_archiver returned no row")
    return ArchiverObs(int(row[0]), int(row[1]), row[2], row[3], row[4], row[5])


def major_and_read_only(spec: ClusterSpec, secrets: Secrets, timeout: int = 2) -> tuple[int, bool]:
    """Through the R/W port: the server's major version and whether it takes no writes. A session
    HAProxy closes under the query (a server going or coming) is a PostgresError, as a refused
    connection is: a caller waiting for the port counts it as not there yet."""
    try:
        with connect(spec, secrets, timeout=timeout) as conn:
            row = conn.execute("select current_setting('server_version_num')::int / 10000, "
                               "pg_is_in_recovery() or current_setting('transaction_read_only') = 'on'").fetchone()
    except psycopg.Error as exc:
        raise PostgresError(f"the R/W port {spec.ports.rw}: {(str(exc).splitlines() or [''])[0]}") from None
    if row is None:
        raise PostgresError(f"the R/W port {spec.ports.rw}: no answer to the version query")
    return int(row[0]), bool(row[1])


def literal(value: str) -> str:
    """A SQL string literal (quotes doubled) for the few statements psql cannot parameterise."""
    return "'" + value.replace("'", "''") + "'"


def node_sql(spec: ClusterSpec, member: str, sql: str, timeout: int = 15, read: bool = False,
             dbname: str = "postgres") -> str:
    """Run SQL as postgres on `member`'s socket (peer auth); returns unaligned, tuples-only output.
    `read`: a query without effects, asked again when the engine cut its output short."""
    r = node(spec, member).run(["psql", "-X", "-q", "-A", "-t", "-h", SOCKET_DIR, "-d", dbname,
                                "-v", "ON_ERROR_STOP=1", "-c", sql], user="postgres", timeout=timeout,
                               retries_if_lost=2 if read else 0)
    if not r.ok:
        raise PostgresError(f"{member}: {r.tail(1)}")
    return r.out.strip()


def scram_secrets(spec: ClusterSpec, member: str, roles: tuple[str, ...]) -> dict[str, str]:
    """The SCRAM secrets pg_authid stores for `roles` (those that have one), read on `member`.

    They go only into the pooler's 0600 auth_file; never logged, never in a message.
    """
    names = ",".join(literal(r) for r in roles)
    where = f"rolname in ({names}) and rolcanlogin and rolpassword like 'SCRAM-SHA-256$%'"
    out = node_sql(spec, member, f"select rolname || ' ' || rolpassword from pg_authid where {where}", read=True)  # noqa: S608
    found = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    if not found:
        raise PostgresError(f"{member}: none of {', '.join(roles)} has a SCRAM secret for the pooler")
    return found


def checkpoint(spec: ClusterSpec, member: str) -> None:
    """CHECKPOINT (a restartpoint on a replica): less WAL to replay when it starts again."""
    node_sql(spec, member, "CHECKPOINT", timeout=120)


def oldest_transaction_s(spec: ClusterSpec, member: str) -> float:
    out = node_sql(spec, member, "select coalesce(max(extract(epoch from now() - xact_start)), 0) "
                                 "from pg_stat_activity where xact_start is not null and pid <> pg_backend_pid() "
                                 "and backend_type = 'client backend'", read=True)
    return float(out or 0)


def show(spec: ClusterSpec, member: str, name: str) -> str:
    """A setting's current value on `member` ('' when the node does not answer)."""
    try:
        return node_sql(spec, member, f"select current_setting({literal(name)})", read=True)
    except PostgresError:
        return ""


def settings(spec: ClusterSpec, member: str, names: list[str]) -> dict[str, Setting]:
    """pg_settings rows of `names` (context, type, bounds, category, value) as the member knows them."""
    if not names:
        return {}
    cols = ("coalesce(json_agg(json_build_object('name', name, 'context', context, 'vartype', vartype, "
            "'min_val', min_val, 'max_val', max_val, 'enumvals', enumvals, 'category', category, "
            "'setting', setting)), '[]')")
    lst = ",".join(literal(n) for n in names)
    rows = json.loads(node_sql(spec, member, f"select {cols} from pg_settings where name in ({lst})", read=True) or "[]")  # noqa: S608
    return {r["name"]: Setting(name=r["name"], context=r["context"], vartype=r["vartype"], min_val=r["min_val"],
                               max_val=r["max_val"], enumvals=list(r["enumvals"] or []),
                               category=r["category"] or "", setting=r["setting"] or "") for r in rows}


def libraries(spec: ClusterSpec, member: str) -> set[str]:
    """The loadable libraries `member`'s server carries: "name" for $libdir/name.so, "plugins/name"
    for $libdir/plugins/name.so (what a preload list may name)."""
    sql = ("with d as (select setting as dir from pg_config where name = 'PKGLIBDIR') "
           "select f from d, pg_ls_dir(d.dir, true, false) f union all "
           "select 'plugins/' || f from d, pg_ls_dir(d.dir || '/plugins', true, false) f")
    out = node_sql(spec, member, sql, read=True)
    return {line.removesuffix(".so") for line in out.splitlines() if line.endswith(".so")}


def session_opens(spec: ClusterSpec, secrets: Secrets, timeout: int = 3) -> str | None:
    """None when a new session through the R/W port opens and answers, else the one-line reason."""
    try:
        with connect(spec, secrets, timeout=timeout, application_name="pgha-session-check") as conn:
            conn.execute("select 1").fetchone()
    except PostgresError as exc:
        return str(exc)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"127.0.0.1:{spec.ports.rw}: {first}"
    return None


# ---- the drill probes' table ----

PROBE_TABLE = "pgha_drill_probe"


def ensure_probe_table(spec: ClusterSpec, secrets: Secrets) -> None:
    with connect(spec, secrets) as conn:
        conn.execute(f"create table if not exists {PROBE_TABLE} (run text not null, id bigint not null, "  # noqa: S608
                     "at timestamptz not null default now(), primary key (run, id))")


def probe_ids(spec: ClusterSpec, secrets: Secrets, run: str, any_role: bool = False) -> set[int]:
    """Ids the probe of `run` finds committed in the cluster now (`any_role`: a standby site's too)."""
    with connect(spec, secrets, any_role=any_role) as conn:
        rows = conn.execute(f"select id from {PROBE_TABLE} where run = %s", (run,)).fetchall()  # noqa: S608
    return {int(r[0]) for r in rows}


def probe_insert(spec: ClusterSpec, secrets: Secrets, run: str, ids: list[int]) -> int:
    """Rows `ids` of `run` committed through the R/W port, one transaction each; how many committed."""
    done = 0
    with connect(spec, secrets) as conn:
        for i in ids:
            conn.execute(f"insert into {PROBE_TABLE} (run, id) values (%s, %s)", (run, i))  # noqa: S608
            done += 1
    return done


# ---- delayed replicas: replay pause and resume, a table's presence (stack/delayed.py) ----


def table_exists(spec: ClusterSpec, member: str, dbname: str, qualified: str) -> bool:
    """Whether `schema.table` exists in `dbname` on `member` (as that member has replayed it)."""
    sql = f"select to_regclass({literal(qualified)}) is not null"
    return node_sql(spec, member, sql, read=True, dbname=dbname) == "t"


def row_count(spec: ClusterSpec, member: str, dbname: str, qualified: str) -> int:
    """Rows of `schema.table` (a validated, plain qualified name) in `dbname` on `member`."""
    name = ".".join('"' + part.replace('"', '""') + '"' for part in qualified.split(".", 1))
    sql = f"select count(*) from {name}"  # noqa: S608 - each part a quoted identifier (and validated by stack.delayed)
    return int(node_sql(spec, member, sql, timeout=300, read=True, dbname=dbname))


def replay_pause(spec: ClusterSpec, member: str, timeout: float = 30) -> str:
    """Pause WAL replay on the standby `member`; its pause state once replay applies nothing more.

    A delayed standby waiting out `recovery_min_apply_delay` before a commit reports `pause
    requested` until that wait ends (an hour, with a 1h delay): PostgreSQL tests the pause again
    after the wait and before it applies the commit, so from the request on nothing more is
    applied but the one record being applied at that instant, if any. So either state will do;
    the caller checks what it needs (the table) after this returns.
    """
    node_sql(spec, member, "select pg_wal_replay_pause()", read=True)  # idempotent: asked again if cut short
    return wait_for(f"WAL replay to pause on {member}",
                    lambda: node_sql(spec, member, "select pg_get_wal_replay_pause_state()", read=True),
                    lambda state: state in ("paused", "pause requested"), timeout=timeout, interval=0.2)


def replay_resume(spec: ClusterSpec, member: str) -> None:
    node_sql(spec, member, "select pg_wal_replay_resume()", read=True)  # idempotent: asked again if cut short


def replay_paused(spec: ClusterSpec, member: str) -> bool:
    return node_sql(spec, member, "select pg_is_wal_replay_paused()", read=True) == "t"


# ---- a second site: the positions `pgha site status` compares (stack/site.py) ----


@dataclass(frozen=True)
class WalPosition:
    """Where the node behind a cluster's R/W port stands in the WAL."""

    in_recovery: bool
    current_lsn: str | None  # a primary's pg_current_wal_lsn()
    receive_lsn: str | None  # a standby's last WAL received
    replay_lsn: str | None  # a standby's last WAL replayed
    since_replay_s: float | None  # now - the last replayed transaction's commit time
    receiver: str | None  # the standby's WAL receiver status (streaming, ...), None without one


def wal_position(spec: ClusterSpec, secrets: Secrets) -> WalPosition:
    """The WAL position of the node the cluster's R/W port reaches (its primary or standby leader)."""
    sql = ("select pg_is_in_recovery(),"
           " case when pg_is_in_recovery() then null else pg_current_wal_lsn()::text end,"
           " pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,"
           " extract(epoch from now() - pg_last_xact_replay_timestamp())::float8,"
           " (select status from pg_stat_wal_receiver limit 1)")
    with _audit_connect(spec, secrets, any_role=True) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return WalPosition(in_recovery=bool(row[0]), current_lsn=row[1], receive_lsn=row[2], replay_lsn=row[3],
                       since_replay_s=None if row[4] is None else float(row[4]), receiver=row[5])
