"""PostgreSQL logical replication between two pgha clusters (the major upgrade's blue and green).

SQL on one member's Unix socket as the postgres OS user (peer authentication), like
`tasks.postgres.node_sql`. A statement that carries a password (a subscription's connection
string) or a dump (role password hashes) travels as a 0600 file copied into the container and
removed after use: never in argv, a log line or an exception message.
"""

from __future__ import annotations

import json
import uuid

from stack import major, tls
from stack.errors import PostgresError
from stack.layout import DATA_MOUNT, PG_PORT, SOCKET_DIR, SUPERUSER
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from tasks.node_exec import node
from tasks.postgres import literal

WRITABLE = "set default_transaction_read_only = off"  # our own session, on a side made read-only


def sql(spec: ClusterSpec, member: str, statements: list[str], db: str = "postgres", timeout: int = 30) -> str:
    """Run `statements` in one session on `member` (each its own transaction); the last one's rows."""
    cmd = ["psql", "-X", "-q", "-A", "-t", "-h", SOCKET_DIR, "-d", db, "-v", "ON_ERROR_STOP=1"]
    for s in [WRITABLE, *statements]:
        cmd += ["-c", s]
    r = node(spec, member).run(cmd, user="postgres", timeout=timeout)
    if not r.ok:
        raise PostgresError(f"{spec.container(member)} ({db}): {r.tail(1)}")
    return r.out.strip()


def run_file(spec: ClusterSpec, member: str, text: str, db: str = "postgres", stop_on_error: bool = True,
             timeout: int = 300) -> str:
    """Run a SQL script on `member` from a private file (it may carry passwords); the file is removed.

    Two engine calls: the copy, then one exec (as root) that hands the file to postgres, runs
    psql as postgres and removes the file whatever psql did.
    """
    n = node(spec, member)
    path = f"/tmp/pgha-{uuid.uuid4().hex}.sql"  # noqa: S108 - inside the container, 0600, removed below
    n.put_file(path, text, 0o600)
    psql = ["psql", "-X", "-q", "-h", SOCKET_DIR, "-d", db, "-v", f"ON_ERROR_STOP={int(stop_on_error)}",
            "-c", WRITABLE, "-f", path]
    r = n.run(["sh", "-c", 'chown postgres "$1" && shift && runuser -u postgres -- "$@"; rc=$?; rm -f "$0"; exit $rc',
               path, path, *psql], user="root", timeout=timeout)
    if not r.ok:
        raise PostgresError(f"{spec.container(member)} ({db}): {r.tail(1)}")
    return r.out


def across(spec: ClusterSpec, member: str, steps: list[tuple[str, str]], timeout: int = 30) -> list[str]:
    """Run (database, statement) steps in order in ONE psql session (one engine call); output lines.

    The session reconnects (`\\connect`) when the database changes; inside a write gap every
    round trip counts.
    """
    cmd = ["psql", "-X", "-q", "-A", "-t", "-h", SOCKET_DIR, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", WRITABLE]
    at = "postgres"
    for db, stmt in steps:
        if db != at:
            cmd += ["-c", f"\\connect {quote_ident(db)}", "-c", WRITABLE]
            at = db
        cmd += ["-c", stmt]
    r = node(spec, member).run(cmd, user="postgres", timeout=timeout)
    if not r.ok:
        raise PostgresError(f"{spec.container(member)}: {r.tail(1)}")
    return [ln for ln in r.out.splitlines() if ln.strip()]


def databases(spec: ClusterSpec, member: str) -> list[str]:
    """Every database clients can use (templates excluded)."""
    out = sql(spec, member, ["select datname from pg_database where not datistemplate and datallowconn "
                             "order by datname"])
    return [ln for ln in out.splitlines() if ln]


def tables_without_key(spec: ClusterSpec, member: str, dbs: list[str]) -> list[str]:
    """`db.schema.table` of every user table with neither a primary key nor a usable replica identity."""
    q = ("select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
         "where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') "
         "and n.nspname not like 'pg_toast%' and (c.relreplident = 'n' or (c.relreplident = 'd' and not exists "
         "(select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary)) or (c.relreplident = 'i' and "
         "not exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisreplident))) order by 1")
    return [f"{db}.{t}" for db in dbs for t in sql(spec, member, [q], db).splitlines() if t]


def set_replica_identity_full(spec: ClusterSpec, member: str, qualified: list[str]) -> None:
    """REPLICA IDENTITY FULL on `db.schema.table` names as `tables_without_key` gives them."""
    for name in qualified:
        db, table = name.split(".", 1)
        sql(spec, member, [f"alter table {table} replica identity full"], db)


def large_objects(spec: ClusterSpec, member: str, dbs: list[str]) -> int:
    return sum(int(sql(spec, member, ["select count(*) from pg_largeobject_metadata"], db) or 0) for db in dbs)


def data_bytes(spec: ClusterSpec, member: str) -> int:
    return int(sql(spec, member, ["select sum(pg_database_size(datname))::bigint from pg_database"]) or 0)


def free_bytes(spec: ClusterSpec, member: str) -> int | None:
    r = node(spec, member).run(["df", "-PB1", DATA_MOUNT], timeout=5)
    try:
        return int(r.out.strip().splitlines()[-1].split()[3])
    except (IndexError, ValueError):
        return None


def wal_level(spec: ClusterSpec, member: str) -> str:
    return sql(spec, member, ["show wal_level"])


def server_major(spec: ClusterSpec, member: str) -> int:
    return int(sql(spec, member, ["show server_version_num"])) // 10000


# ---- copying roles and schema ----


def roles_dump(spec: ClusterSpec, member: str) -> str:
    """`pg_dumpall --roles-only` (password hashes included: handled as a secret)."""
    return node(spec, member).check(["pg_dumpall", "-h", SOCKET_DIR, "--roles-only"], "pg_dumpall --roles-only",
                                    user="postgres", timeout=60)


def schema_dump(spec: ClusterSpec, member: str, db: str) -> str:
    return node(spec, member).check(
        ["pg_dump", "-h", SOCKET_DIR, "--schema-only", "--no-publications", "--no-subscriptions", "-d", db],
        f"pg_dump --schema-only of {db}", user="postgres", timeout=300)


def ensure_database(spec: ClusterSpec, member: str, db: str) -> None:
    if not sql(spec, member, [f"select 1 from pg_database where datname = {literal(db)}"]):  # noqa: S608
        sql(spec, member, [f"create database {quote_ident(db)}"])


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ensure_marker_table(spec: ClusterSpec, member: str, db: str) -> None:
    sql(spec, member, [f"create table if not exists public.{major.MARKER_TABLE} "
                       "(token text primary key, at timestamptz not null default now())"], db)


# ---- publications and subscriptions ----


def conninfo(publisher: ClusterSpec, db: str, secrets: Secrets) -> str:
    """Any of the publisher's nodes, whichever is primary (libpq tries them in turn)."""
    hosts = ",".join(publisher.container(m) for m in publisher.node_names())
    return (f"host={hosts} port={PG_PORT} dbname={db} user={SUPERUSER} password={secrets.superuser} "
            "target_session_attrs=primary connect_timeout=5"
            # spec.tls: blue and green share one CA (tasks.host.tls.share_ca); the subscriber's node has it.
            + (f" sslmode=verify-full sslrootcert={tls.CA}" if publisher.tls.enabled else ""))


def ensure_publication(spec: ClusterSpec, member: str, db: str) -> None:
    if not sql(spec, member, [f"select 1 from pg_publication where pubname = {literal(major.PUBLICATION)}"], db):  # noqa: S608
        sql(spec, member, [f"create publication {major.PUBLICATION} for all tables"], db)


def drop_publication(spec: ClusterSpec, member: str, db: str) -> None:
    sql(spec, member, [f"drop publication if exists {major.PUBLICATION}"], db)


def slot_name(sub: str, index: int) -> str:
    return f"{sub}_{index}"


def has_subscription(spec: ClusterSpec, member: str, db: str, sub: str) -> bool:
    return bool(sql(spec, member, [f"select 1 from pg_subscription s join pg_database d on d.oid = s.subdbid "  # noqa: S608
                                   f"where s.subname = {literal(sub)} and d.datname = current_database()"], db))


def drop_subscription(spec: ClusterSpec, member: str, db: str, sub: str) -> None:
    """Drop the subscription and its slot on the publisher (the publisher must answer)."""
    if has_subscription(spec, member, db, sub):
        sql(spec, member, [f"drop subscription {sub}"], db, timeout=60)


def detach_subscriptions(spec: ClusterSpec, member: str, dbs: list[str], sub: str) -> None:
    """Drop `sub` in each database without touching its slot on the publisher (which is going away).

    Local only, one round trip: used inside a write gap and when the publisher may be gone.
    """
    across(spec, member, [(db, f"do $$ begin if exists (select 1 from pg_subscription where subname = {literal(sub)} "  # noqa: S608
                               "and subdbid = (select oid from pg_database where datname = current_database())) then "
                               f"alter subscription {sub} disable; alter subscription {sub} set (slot_name = none); "
                               f"drop subscription {sub}; end if; end $$") for db in dbs])


def drop_slots(spec: ClusterSpec, member: str, prefix: str) -> int:
    """Drop the inactive logical slots a removed subscriber left (they would keep WAL forever);
    how many with that prefix remain (still held by a walsender that is ending)."""
    like = literal(prefix + "%")
    out = sql(spec, member, [f"select count(pg_drop_replication_slot(slot_name)) from pg_replication_slots "  # noqa: S608
                             f"where slot_name like {like} and not active",
                             f"select count(*) from pg_replication_slots where slot_name like {like}"])  # noqa: S608
    return int(out.splitlines()[-1] or 0)


def sync_progress(spec: ClusterSpec, member: str, db: str) -> tuple[int, int]:
    """(tables copied and streaming, tables in the subscription) on the subscriber."""
    out = sql(spec, member, ["select count(*) filter (where srsubstate in ('r', 's')), count(*) "
                             "from pg_subscription_rel"], db)
    done, total = (int(x) for x in out.split("|"))
    return done, total


def slot_lag_bytes(spec: ClusterSpec, member: str, slot_prefix: str) -> int | None:
    """How far the publisher's logical slots of the upgrade trail its current WAL (None: no slot)."""
    out = sql(spec, member, ["select max(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn))::bigint "  # noqa: S608
                             f"from pg_replication_slots where slot_name like {literal(slot_prefix + '%')}"])
    return int(out) if out else None


def database_bytes(spec: ClusterSpec, member: str, dbs: list[str]) -> int:
    lst = ",".join(literal(d) for d in dbs)
    return int(sql(spec, member, [f"select coalesce(sum(pg_database_size(datname)), 0)::bigint from pg_database "  # noqa: S608
                                  f"where datname in ({lst})"]) or 0)


# ---- cutover (each call one engine round trip: they run inside the write gap) ----


def set_read_only(spec: ClusterSpec, member: str, dbs: list[str], on: bool) -> None:
    """New sessions of every database start read-only (or no longer). Logical apply is not affected."""
    across(spec, member, [("postgres", _read_only_stmt(db, on)) for db in dbs])


def _read_only_stmt(db: str, on: bool) -> str:
    return (f"alter database {quote_ident(db)} set default_transaction_read_only = on" if on
            else f"alter database {quote_ident(db)} reset default_transaction_read_only")


def fence(spec: ClusterSpec, member: str, dbs: list[str], token: str) -> int:
    """Every database read-only for new sessions, every client session ended, then a marker row
    in each database (committed after everything clients committed); the sessions ended."""
    steps = [("postgres", _read_only_stmt(db, True)) for db in dbs]
    steps.append(("postgres", "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                              "where backend_type = 'client backend' and pid <> pg_backend_pid()"))
    steps += [(db, f"insert into public.{major.MARKER_TABLE} (token) values ({literal(token)}) "  # noqa: S608
                   "on conflict do nothing") for db in dbs]
    out = across(spec, member, steps)
    return int(out[0]) if out else 0


def terminate_clients(spec: ClusterSpec, member: str) -> int:
    """End every client session on `member` (replication and background workers are kept)."""
    out = sql(spec, member, ["select count(pg_terminate_backend(pid)) from pg_stat_activity "
                             "where backend_type = 'client backend' and pid <> pg_backend_pid()"])
    return int(out or 0)


def markers_seen(spec: ClusterSpec, member: str, dbs: list[str], token: str) -> dict[str, bool]:
    out = across(spec, member, [(db, f"select count(*) from public.{major.MARKER_TABLE} where token = "  # noqa: S608
                                     f"{literal(token)}") for db in dbs])
    return {db: v == "1" for db, v in zip(dbs, out, strict=False)}


def sequence_values(spec: ClusterSpec, member: str, dbs: list[str]) -> dict[str, dict[str, int]]:
    """db -> `schema.name` (quoted) -> last value of every sequence that has handed one out."""
    out = across(spec, member, [(db, "select coalesce(json_object_agg(format('%I.%I', schemaname, sequencename), "
                                     "last_value), '{}') from pg_sequences where last_value is not null")
                                for db in dbs])
    return {db: {k: int(v) for k, v in json.loads(line).items()} for db, line in zip(dbs, out, strict=False)}


def set_sequences(spec: ClusterSpec, member: str, values: dict[str, dict[str, int]]) -> None:
    lines: list[str] = []
    for db, vals in values.items():
        if vals:
            lines += [f"\\connect {quote_ident(db)}", WRITABLE + ";", *(s + ";" for s in major.setval_statements(vals))]
    if lines:
        run_file(spec, member, "\n".join(lines) + "\n", timeout=120)


def subscriptions(spec: ClusterSpec, member: str, sub: str) -> set[str]:
    """Databases of `member` that have the subscription `sub` (pg_subscription is shared)."""
    return set(sql(spec, member, [f"select d.datname from pg_subscription s join pg_database d on d.oid = s.subdbid "  # noqa: S608
                                  f"where s.subname = {literal(sub)}"]).splitlines()) - {""}


def drop_subscriptions(spec: ClusterSpec, member: str, dbs: list[str], sub: str) -> None:
    """Drop `sub` in each database (and its slot on the publisher, which must answer)."""
    across(spec, member, [(db, f"drop subscription if exists {sub}") for db in dbs], timeout=60)


def create_subscriptions(spec: ClusterSpec, member: str, dbs: list[str], sub: str, publisher: ClusterSpec,
                         secrets: Secrets, copy_data: bool) -> None:
    """Subscribe each database (that has not yet) to the publisher's; slot names `<sub>_<index>`."""
    have = subscriptions(spec, member, sub)
    lines: list[str] = []
    for i, db in enumerate(dbs):
        if db in have:
            continue
        lines += [f"\\connect {quote_ident(db)}", WRITABLE + ";",
                  f"create subscription {sub} connection {literal(conninfo(publisher, db, secrets))} "
                  f"publication {major.PUBLICATION} with (copy_data = {str(copy_data).lower()}, "
                  f"slot_name = {literal(slot_name(sub, i))});"]
    if lines:
        run_file(spec, member, "\n".join(lines) + "\n", timeout=120)


def drop_marker_table(spec: ClusterSpec, member: str, db: str) -> None:
    sql(spec, member, [f"drop table if exists public.{major.MARKER_TABLE}"], db)
