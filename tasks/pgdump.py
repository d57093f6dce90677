"""Logical dumps: `pg_dump -Fc` of every database, run in a node into the repository volume.

Commands run through `NodeExec` as the postgres OS user over the local socket (peer
authentication, no password). Dump sets are directories named by UTC timestamp under
`stack.backup.dump_dir`, so they sort in time and retention is a pure decision.
"""

from __future__ import annotations

import time

from prefect import task

from stack import backup as bk
from stack import backup_decisions as bkd
from stack import layout
from stack.results import DumpFile
from stack.spec import ClusterSpec
from tasks._prefect import ONCE, SIDE_EFFECT
from tasks.node_exec import node
from tasks.pgbackrest import BackupError

LIST_DATABASES = "select datname from pg_database where datallowconn and not datistemplate order by 1"


def databases(spec: ClusterSpec, member: str) -> list[str]:
    """The databases a dump covers (connectable, not templates), read over the node's socket."""
    r = node(spec, member).run(["psql", "-h", layout.SOCKET_DIR, "-XAtq", "-c", LIST_DATABASES],
                               user="postgres", timeout=30)
    if not r.ok:
        raise BackupError(f"cannot list databases on {member}: {r.tail()}")
    return [d for d in r.out.split() if d]


@task(name="pg-dump-set", **ONCE)
def dump_set(spec: ClusterSpec, member: str, target: str) -> list[DumpFile]:
    """`pg_dump -Fc` of every database into the directory `target`; removed again on any failure."""
    n = node(spec, member)
    n.check(["install", "-d", "-m", "0750", target], "creating the dump directory", user="postgres")
    rows: list[DumpFile] = []
    for db in databases(spec, member):
        path = f"{target}/{db}.dump"
        t0 = time.monotonic()
        r = n.run(["pg_dump", "-h", layout.SOCKET_DIR, "-Fc", "-d", db, "-f", path], user="postgres",
                  timeout=6 * 3600)
        if not r.ok:
            n.run(["rm", "-rf", target], user="postgres", timeout=300)
            raise BackupError(f"pg_dump of {db} failed: {r.tail()}")
        size = n.run(["stat", "-c", "%s", path], user="postgres").out.strip()
        rows.append(DumpFile(database=db, file=path, size_mb=round(int(size or 0) / 1e6, 2),
                             duration_s=round(time.monotonic() - t0, 1)))
    return rows


@task(name="pg-dump-prune", **ONCE)
def prune(spec: ClusterSpec, member: str, keep: int) -> list[str]:
    """Remove dump sets beyond the newest `keep`; the names removed."""
    n = node(spec, member)
    listing = n.run(["ls", "-1", bk.dump_dir(spec)], user="postgres").out
    removed = bkd.dump_sets_to_remove(listing.split(), keep)
    for old in removed:
        n.check(["rm", "-rf", f"{bk.dump_dir(spec)}/{old}"], f"removing dump set {old}", user="postgres", timeout=300)
    return removed


# ---- one table, from a delayed replica into the primary (flows/recover_delayed.py) ----

RECOVER_DIR = f"{layout.DATA_MOUNT}/pgha-recover"  # the data volume, outside PGDATA (the root is read-only)


@task(name="pg-dump-table", **SIDE_EFFECT)  # rewrites the same file: safe to run again
def dump_table(spec: ClusterSpec, member: str, dbname: str, qualified: str, name: str) -> str:
    """`pg_dump -Fc -t` of one table (with its indexes, constraints and owned sequences) on `member`;
    the dump's path there."""
    n = node(spec, member)
    n.check(["install", "-d", "-m", "0700", RECOVER_DIR], "creating the recovery directory", user="postgres")
    path = f"{RECOVER_DIR}/{name}"
    r = n.run(["pg_dump", "-h", layout.SOCKET_DIR, "-Fc", "-d", dbname, "-t", qualified, "-f", path],
              user="postgres", timeout=6 * 3600)
    if not r.ok:
        n.run(["rm", "-f", path], user="postgres", timeout=60)
        raise BackupError(f"pg_dump of {qualified} on {member} failed: {r.tail()}")
    return path


@task(name="copy-dump", **SIDE_EFFECT)  # overwrites the same file: safe to run again
def copy_dump(spec: ClusterSpec, source: str, target: str, path: str) -> None:
    """The dump file from `source` into the same directory of `target`."""
    t = node(spec, target)
    t.check(["install", "-d", "-m", "0700", RECOVER_DIR], "creating the recovery directory", user="postgres")
    node(spec, source).copy_to(t, path, RECOVER_DIR)


@task(name="pg-restore-table", **ONCE)
def restore_table(spec: ClusterSpec, member: str, dbname: str, path: str) -> None:
    """`pg_restore` of a table dump into `dbname` on `member`, in one transaction: all of it or nothing."""
    r = node(spec, member).run(["pg_restore", "-h", layout.SOCKET_DIR, "-d", dbname, "--single-transaction",
                                "--exit-on-error", path], user="postgres", timeout=6 * 3600)
    if not r.ok:
        raise BackupError(f"pg_restore into {dbname} on {member} failed (nothing restored): {r.tail()}")


def remove_dump(spec: ClusterSpec, member: str, path: str) -> None:
    """Best effort: a dump left behind is only disk space, named in the result."""
    node(spec, member).run(["rm", "-f", path], user="postgres", timeout=60)
