"""Major upgrade benchmark: blue/green 15 -> 17 (cutover and rollback) vs an offline dump/restore.

One 2-node PostgreSQL 15 cluster (1 etcd member) with a pgbench database (scale >= 50). Each
round, under a write probe and a read probe (every 50 ms) on the clients' ports:
`major-upgrade` to 17 (green built, copied, cut over), then `--rollback` (green removed).
Baseline, the naive way: `pg_dump -Fc` of the same database on 15 and `pg_restore` into an
empty PostgreSQL 17 cluster, during which clients could not write (gap = its whole duration).
Prints each run, then medians: write gap at cutover and at rollback, the longest read gap,
writes lost, the whole upgrade's duration; the ratio naive / blue-green write gap.

    .venv/bin/python benchmarks/major_upgrade.py [--scale 50] [--runs 3]

The machine is shared (2 cores, other clusters running): figures are indicative.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("major")

from flows.bootstrap import bootstrap  # noqa: E402
from flows.major_upgrade import major_upgrade  # noqa: E402
from stack.major import Request, green_spec  # noqa: E402
from stack.spec import parse_spec  # noqa: E402
from tasks import patroni  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.host.secrets import load_or_create  # noqa: E402
from tasks.host.state import secrets_file  # noqa: E402
from tests.support.traffic import Traffic, measured  # noqa: E402

BLUE = parse_spec({"scope": "pgha-bench-mu", "nodes": 2, "etcd_members": 1, "postgres_version": 15,
                   "backup": {"enabled": False}, "postgres_parameters": {"wal_level": "logical"},
                   "ports": {"rw": 26150, "ro": 26151, "stats": 26152}, "pooler": {"enabled": False}})  # green: 26160-26162
NAIVE = parse_spec({"scope": "pgha-bench-mu-naive", "nodes": 2, "etcd_members": 1, "postgres_version": 17,
                    "backup": {"enabled": False}, "ports": {"rw": 26140, "ro": 26141, "stats": 26142}, "pooler": {"enabled": False}})


def leader_container(spec: object) -> str:
    lead = patroni.cluster_view(spec).leader()  # type: ignore[arg-type]
    assert lead is not None
    return spec.container(lead.name)  # type: ignore[attr-defined]


def sh(container: str, cmd: list[str], timeout: int = 3600) -> None:
    subprocess.run(["docker", "exec", "-u", "postgres", container, *cmd], check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL)


def naive_dump_restore() -> float:
    """Offline: pg_dump -Fc of bench on 15, copied, pg_restore into an empty 17; seconds."""
    src, dst = leader_container(BLUE), leader_container(NAIVE)
    sock = ["-h", "/var/run/postgresql"]
    sh(dst, ["psql", "-XAtq", *sock, "-c", "drop database if exists bench"])
    t = time.monotonic()
    sh(src, ["pg_dump", *sock, "-Fc", "-Z1", "-f", "/tmp/bench.dump", "bench"])  # noqa: S108 - in the container
    subprocess.run(f"docker cp {src}:/tmp/bench.dump - | docker cp - {dst}:/tmp/", shell=True, check=True)  # noqa: S602
    sh(dst, ["createdb", *sock, "bench"])
    sh(dst, ["pg_restore", *sock, "-j", "2", "-d", "bench", "/tmp/bench.dump"])  # noqa: S108
    took = time.monotonic() - t
    for c in (src, dst):
        subprocess.run(["docker", "exec", c, "rm", "-f", "/tmp/bench.dump"], check=False)  # noqa: S108
    return round(took, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    green = green_spec(BLUE, 17)
    cut: list[Traffic] = []
    back: list[Traffic] = []
    flow_gaps: list[tuple[float, float]] = []
    durations: list[float] = []
    naive: list[float] = []
    try:
        for s in (BLUE.scope, green.scope, NAIVE.scope):
            local_engine().remove_labelled(s, volumes=True)
        bootstrap(BLUE)
        bootstrap(NAIVE)
        lead = leader_container(BLUE)
        sh(lead, ["createdb", "-h", "/var/run/postgresql", "bench"])
        t = time.monotonic()
        sh(lead, ["pgbench", "-h", "/var/run/postgresql", "-i", "-q", "-s", str(args.scale), "bench"])
        print(f"pgbench scale {args.scale} loaded in {time.monotonic() - t:.0f}s", flush=True)
        secrets = load_or_create(secrets_file(BLUE.scope))
        for i in range(args.runs):
            t = time.monotonic()
            with measured(BLUE, secrets) as up:
                r1 = major_upgrade(BLUE, target=17, request=Request.UPGRADE, replica_identity_full=True)
            durations.append(round(time.monotonic() - t, 1))
            with measured(BLUE, secrets) as down:
                r2 = major_upgrade(BLUE, target=17, request=Request.ROLLBACK)
            cut.append(up)
            back.append(down)
            flow_gaps.append((r1.write_gap_s or 0.0, r2.write_gap_s or 0.0))
            print(f"run {i + 1}: cutover {up} (flow: {r1.write_gap_s}s, {r1.bytes_copied} bytes, {r1.durations})",
                  flush=True)
            print(f"run {i + 1}: rollback {down} (flow: {r2.write_gap_s}s)", flush=True)
            naive.append(naive_dump_restore())
            print(f"run {i + 1}: naive dump/restore {naive[-1]}s", flush=True)
    finally:
        for s in (green.scope, BLUE.scope, NAIVE.scope):
            local_engine().remove_labelled(s, volumes=True)
    med = statistics.median
    print(f"\nmedians over {args.runs} runs, pgbench scale {args.scale} (shared 2-core machine; indicative):")
    print(f"{'':24}{'write gap s':>12}{'read gap s':>12}{'lost':>6}{'duration s':>12}")
    print(f"{'blue/green cutover':24}{med(x.write_gap_s for x in cut):12.2f}{med(x.read_gap_s for x in cut):12.2f}"
          f"{sum(len(x.lost) for x in cut):6d}{med(durations):12.1f}")
    print(f"{'blue/green rollback':24}{med(x.write_gap_s for x in back):12.2f}"
          f"{med(x.read_gap_s for x in back):12.2f}{sum(len(x.lost) for x in back):6d}{med(x.seconds for x in back):12.1f}")
    print(f"{'offline dump/restore':24}{med(naive):12.2f}{'':>12}{'':>6}{med(naive):12.1f}")
    print(f"flow-measured gaps (fence -> R/W port writable on the other side): cutover "
          f"{med(g[0] for g in flow_gaps):.2f}s, rollback {med(g[1] for g in flow_gaps):.2f}s")
    cg = med(x.write_gap_s for x in cut)
    if cg > 0:
        print(f"naive/blue-green write gap ratio: {med(naive) / cg:.1f}x")


if __name__ == "__main__":
    main()
