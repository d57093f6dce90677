"""A dropped table back from a 1-hour-delayed replica (`recover-from-delayed`), against the bare copy
of the same table between two nodes (the baseline), on the same machine in the same run.

One cluster: 1 etcd member, 3 Patroni nodes, backups and fencing off. Tables `bench_1..N` of
`--rows` rows are created first, then `pgha up` converges the cluster to a spec where pg-3 is
delayed by `--delay` (1h): the tables are on the delayed node as they were, and no later write
reaches it for an hour. Each round, alternating:
- baseline: `pg_dump -Fc -t` of bench_i on the undelayed replica pg-2, copied to the primary,
  `pg_restore` into a scratch database there (the copy alone: no pause, no maintenance mode);
- pgha: a row written into bench_i (not on the delayed node), `DROP TABLE bench_i` on the
  primary, then the `recover-from-delayed` flow, timed from its call to its return; the
  restored table's rows are checked (the row written after the delay is not among them).
Prints every figure, then medians and the ratio pgha / baseline.

    .venv/bin/python benchmarks/delayed.py [--rounds 3] [--rows 100000] [--delay 1h] [--keep] [--lab]

`--lab`: the cluster over 3 lab hosts (`pgha lab`: containers running an engine of their own), one
node and one etcd member on each, so the dump is copied between two hosts' engines; the lab is made
first (ports 127.0.0.1:21100 on) and removed at the end (unless --keep).

The flow runs on a temporary local Prefect API started once before the rounds (as the
other benchmarks); `pgha recover-from-delayed` on the command line adds that API's start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("delayed")

import psycopg  # noqa: E402
from _lab import bounded, lab_clusters  # noqa: E402

from flows.bootstrap import bootstrap  # noqa: E402
from flows.recover_delayed import recover_from_delayed  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from tasks import docker_lab, images, patroni, pgdump, postgres  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.host.secrets import cluster_secrets  # noqa: E402

BASE = {"scope": "pgha-it-dbench", "nodes": 3, "etcd_members": 1, "fencing": False,
        "backup": {"enabled": False}, "pooler": {"enabled": False}, "ports": {"rw": 23410, "ro": 23411, "stats": 23412}}
LAB, LAB_PORT_BASE, LAB_SCOPE = "sitelab-delayed", 21100, "pgha-bench-sitelab-delayed"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _connect(spec: ClusterSpec, dbname: str = "postgres") -> psycopg.Connection:
    host, port = spec.client_endpoints()[0]
    return psycopg.connect(host=host, port=port, user="postgres", password=cluster_secrets(spec.scope).superuser,
                           dbname=dbname, connect_timeout=5, autocommit=True)


def baseline(spec: ClusterSpec, table: str, leader: str) -> float:
    """The bare copy: pg_dump -t on the undelayed replica, copied, pg_restore into `scratch` on the primary."""
    t = time.monotonic()
    path = pgdump.dump_table(spec, "pg-2", "postgres", table, f"{table}-baseline.dump")
    pgdump.copy_dump(spec, "pg-2", leader, path)
    pgdump.restore_table(spec, leader, "scratch", path)
    took = time.monotonic() - t
    for m in ("pg-2", leader):
        pgdump.remove_dump(spec, m, path)
    with _connect(spec, "scratch") as c:
        c.execute(f"drop table {table}")  # noqa: S608 - bench_N, made here
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=100_000, help="rows of each table")
    ap.add_argument("--delay", default="1h", help="the delayed node's delay")
    ap.add_argument("--keep", action="store_true", help="leave the cluster (and the lab) up at the end")
    ap.add_argument("--lab", action="store_true", help="the cluster over 3 lab hosts (`pgha lab`)")
    ap.add_argument("--max-minutes", type=float, default=30, help="stop after this long (cleaned up)")
    args = ap.parse_args()
    print(f"load at start: {load()}", flush=True)
    base: list[float] = []
    ours: list[float] = []
    paused: list[float] = []
    try:
        with bounded(args.max_minutes):
            _rounds(args, base, ours, paused)
    finally:
        if not args.keep:
            if args.lab:
                docker_lab.down(LAB)
            else:
                local_engine().remove_labelled(BASE["scope"], volumes=True)
    print(f"load at end: {load()}")
    mb, mo = statistics.median(base), statistics.median(ours)
    where = "3 lab hosts" if args.lab else "one engine"
    print(f"\nmedians over {len(ours)} rounds ({args.rows} rows a table, delay {args.delay}, {where}):")
    print(f"  baseline copy {mb:6.2f} s   recover-from-delayed {mo:6.2f} s   x{mo / mb:.2f}   "
          f"replay paused {statistics.median(paused):.1f} s")


def _rounds(args: argparse.Namespace, base: list[float], ours: list[float], paused: list[float]) -> None:
    if args.lab:
        st, (data,), took = lab_clusters(LAB, LAB_PORT_BASE, [(LAB_SCOPE, 3)])
        print(f"lab {LAB}: {len(st.hosts)} hosts made in {took:.1f} s; the cluster's nodes pg-1..pg-3 on "
              f"{', '.join(h.name for h in st.hosts)}", flush=True)
    else:
        data = BASE
        local_engine().remove_labelled(BASE["scope"], volumes=True)
    plain = parse_spec(data)
    delayed = parse_spec({**data, "delayed": [{"name": "pg-3", "delay": args.delay}]})
    images.ensure_image(plain)
    t = time.monotonic()
    bootstrap(plain)
    print(f"bootstrap (3 nodes, none delayed) {time.monotonic() - t:6.1f} s", flush=True)
    with _connect(plain) as c:
        c.execute("create database scratch")
        for i in range(1, args.rounds + 1):
            c.execute(f"create table public.bench_{i} (id bigint primary key, note text not null)")
            c.execute(f"insert into public.bench_{i} select g, md5(g::text) from generate_series(1, %s) g",  # noqa: S608
                      (args.rows,))
    t = time.monotonic()
    bootstrap(delayed)
    print(f"up with pg-3 delayed {args.delay}: {time.monotonic() - t:6.1f} s; pg-3 "
          f"recovery_min_apply_delay = {postgres.show(delayed, 'pg-3', 'recovery_min_apply_delay')}", flush=True)
    for i in range(1, args.rounds + 1):
        table = f"public.bench_{i}"
        lead = patroni.cluster_view(delayed).leader()
        assert lead is not None
        b = baseline(delayed, table, lead.name)
        base.append(b)
        with _connect(delayed) as c:
            c.execute(f"insert into {table} values (0, 'after the delay')")  # noqa: S608
            c.execute(f"drop table {table}")
        t = time.monotonic()
        r = recover_from_delayed(delayed, table=table)
        x = time.monotonic() - t
        ours.append(x)
        paused.append(r.replay_paused_s)
        with _connect(delayed) as c:
            row = c.execute(f"select count(*), min(id) from {table}").fetchone()  # noqa: S608
        assert row == (args.rows, 1), f"{table}: restored {row}, expected ({args.rows}, 1)"
        print(f"round {i}: baseline copy {b:6.2f} s   recover-from-delayed {x:6.2f} s "
              f"(replay paused {r.replay_paused_s} s) rows {row[0]}", flush=True)


if __name__ == "__main__":
    main()
