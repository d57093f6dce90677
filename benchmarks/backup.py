"""Backup benchmark: pgha full backup (pgBackRest from a replica) vs raw pg_basebackup of the same replica.

One 2-node / 1-etcd cluster with a pgbench database. Each round runs, alternating, a pgha
full backup (pgBackRest backup-standby, zstd level 3, spec.backup.process_max processes) and a
`pg_basebackup` of the same replica with server-side zstd level 3, both writing to the same
repository volume. Both throughputs use the same numerator (the database size pgBackRest
reports). Then the newest backup is restored and verified in a scratch container
(verify-restore) and its time is compared with the backup's.

The nightly backup against the full (backup.block_incremental, on by default): after each
full, 1 % of pgbench_accounts' rows (a contiguous range of aid, about 1 % of its pages) is
updated and a diff backup (the nightly schedule's type) is taken; its time, stored bytes and the
bytes of changed files it read (pgBackRest's `delta`) are compared with the full's. An incr with
nothing changed since gives a backup's fixed cost; the time of a `pgbackrest check` is printed
beside it (the backup flow ran one before every backup until its own archive check was relied
on). Each round ends with verified restores of its diff (the chain: the full's blocks and the
diff's) and of its full, in alternating order; the flows' whole times are printed too.

    .venv/bin/python benchmarks/backup.py [--scale 150] [--runs 3] [--process-max 2]

The machine may be shared: figures printed are what this run saw, noisy by nature.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("backup")

from flows.backup import backup  # noqa: E402
from flows.bootstrap import bootstrap  # noqa: E402
from flows.verify import verify_restore  # noqa: E402
from stack.backup_decisions import BackupType  # noqa: E402
from stack.layout import CONFIG_MOUNT, REPLICATION_USER, REPO_MOUNT, SOCKET_DIR  # noqa: E402
from stack.results import VerifyResult  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from tasks import images, patroni  # noqa: E402
from tasks import pgbackrest as pbr  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.host.secrets import cluster_secrets  # noqa: E402
from tasks.host.state import config_dir, write_private  # noqa: E402
from tasks.node_exec import node  # noqa: E402

SCOPE = "pgha-bench-bk1"
T = TypeVar("T")


def sh(spec: ClusterSpec, member: str, cmd: list[str], user: str = "postgres", timeout: int = 3600) -> str:
    r = node(spec, member).run(cmd, user=user, timeout=timeout)
    if not r.ok:
        raise SystemExit(f"{' '.join(cmd)[:80]} failed in {member}: {(r.out + r.err).strip()[-400:]}")
    return r.out


def replica(spec: ClusterSpec) -> str:
    view = patroni.cluster_view(spec)
    return next(m.name for m in view.members if not m.is_leader)


def put_pgpass(spec: ClusterSpec, member: str) -> str:
    """A 0600 pgpass for the replication user inside the replica (never in env or argv).

    Written to the member's config directory (mounted read-only at CONFIG_MOUNT) and installed
    into /run/pgha, a tmpfs that `docker cp` cannot write into."""
    pw = cluster_secrets(spec.scope).replication
    write_private(config_dir(spec.scope, member) / "bench-pgpass", f"*:*:*:{REPLICATION_USER}:{pw}\n")
    sh(spec, member, ["install", "-o", "postgres", "-g", "postgres", "-m", "0600", f"{CONFIG_MOUNT}/bench-pgpass",
                      "/run/pgha/bench-pgpass"], user="root")
    return "/run/pgha/bench-pgpass"


def basebackup(spec: ClusterSpec, member: str, process_max: int) -> float:
    target = f"{REPO_MOUNT}/bench-basebackup"
    pgpass = put_pgpass(spec, member)
    sh(spec, member, ["rm", "-rf", target])
    t0 = time.monotonic()
    sh(spec, member, ["env", f"PGPASSFILE={pgpass}", "pg_basebackup", "-h", "127.0.0.1", "-U", REPLICATION_USER,
              "-D", target, "-Ft", "-X", "stream", "-c", "fast", "--no-manifest",
              f"--compress=server-zstd:level=3,workers={process_max}"])
    elapsed = time.monotonic() - t0
    sh(spec, member, ["rm", "-rf", target, pgpass])
    (config_dir(spec.scope, member) / "bench-pgpass").unlink(missing_ok=True)
    return elapsed


def set_read_mb(spec: ClusterSpec, label: str) -> float:
    """What a set read and stored before compression (pgBackRest's `info.delta`): its changed files, whole."""
    for st in pbr.info_payload(pbr.info_text(spec, pbr.reader(spec))):
        for b in st.get("backup", []) if st.get("name") == spec.scope else []:
            if b.get("label") == label:
                return round(int((b.get("info") or {}).get("delta") or 0) / 1e6, 1)
    return 0.0


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=150, help="pgbench scale (about 15 MB each)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--process-max", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = ap.parse_args()
    spec = parse_spec({"scope": SCOPE, "nodes": 2, "etcd_members": 1,
                       "ports": {"rw": 29910, "ro": 29911, "stats": 29912},
                       "backup": {"process_max": args.process_max, "retention_full": 2}, "pooler": {"enabled": False}})
    pgha_s: list[float] = []
    raw_s: list[float] = []
    full_mb: list[float] = []
    full_flow_s: list[float] = []
    diff_s: list[float] = []
    diff_mb: list[float] = []
    diff_read_mb: list[float] = []
    diff_flow_s: list[float] = []
    idle_s: list[float] = []
    check_s: list[float] = []
    vfull: list[VerifyResult] = []
    vchain: list[VerifyResult] = []
    loads: list[float] = []
    size_mb = 0.0
    try:
        local_engine().remove_labelled(spec.scope, volumes=True)
        images.ensure_image(spec)
        bootstrap(spec)
        leader = next(m.name for m in patroni.cluster_view(spec).members if m.is_leader)
        t0 = time.monotonic()
        sh(spec, leader, ["pgbench", "-h", SOCKET_DIR, "-i", "-q", "-s", str(args.scale), "postgres"])
        print(f"pgbench -i -s {args.scale}: {time.monotonic() - t0:.0f} s", flush=True)
        patroni.wait_whole(spec, timeout=600)
        rows = args.scale * 100000
        for i in range(args.runs):
            loads.append(os.getloadavg()[0])
            r, wall = timed(lambda: backup(spec, BackupType.FULL, verify=False))
            size_mb = r.size_mb
            pgha_s.append(r.duration_s)
            full_mb.append(r.stored_mb)
            full_flow_s.append(wall)
            raw_s.append(basebackup(spec, replica(spec), args.process_max))
            # What `pgbackrest check` costs (a WAL switch archived): the backup flow ran it before
            # every backup until pgBackRest's own start-of-backup archive check was relied on.
            check_s.append(timed(lambda: pbr.check(spec, replica(spec)))[1])
            lo = 1 + (i * rows // args.runs) % (rows - rows // 100)
            change = f"update pgbench_accounts set abalance = abalance + 1 where aid between {lo} and {lo + rows // 100 - 1}"  # noqa: E501, S608 - integers
            sh(spec, leader, ["psql", "-h", SOCKET_DIR, "-XAtqc", change])
            d, wall = timed(lambda: backup(spec, BackupType.DIFF, verify=False))
            diff_s.append(d.duration_s)
            diff_mb.append(d.stored_mb)
            diff_flow_s.append(wall)
            diff_read_mb.append(set_read_mb(spec, d.label))
            # An incr with nothing changed since the diff: a backup's fixed cost (checkpoints,
            # replay wait, manifest, stop segment archived), with no changed file to read.
            idle = backup(spec, BackupType.INCR, verify=False)
            idle_s.append(idle.duration_s)
            # Verified restores of the chain (the diff: the full's blocks and its own) and of the
            # full, the order alternated between rounds (the machine is shared).
            pair = [(vchain, d.label), (vfull, r.label)]
            for into, label in pair if i % 2 == 0 else pair[::-1]:
                into.append(verify_restore(spec, label))
            print(f"run {i + 1} (load {loads[-1]:.1f}): full {r.duration_s:.1f} s ({r.stored_mb} MB stored; flow "
                  f"{wall:.1f} s), pg_basebackup {raw_s[-1]:.1f} s, database {size_mb:.0f} MB; after 1 % of the rows: "
                  f"diff {d.duration_s:.1f} s ({d.stored_mb} MB stored, {diff_read_mb[-1]:.0f} MB of changed files "
                  f"read; flow {diff_flow_s[-1]:.1f} s); incr with nothing changed {idle.duration_s:.1f} s; "
                  f"pgbackrest check {check_s[-1]:.1f} s; verified restore chain {vchain[-1].duration_s} s "
                  f"(restore {vchain[-1].restore_s} s), full {vfull[-1].duration_s} s (restore {vfull[-1].restore_s} s)",
                  flush=True)
        loads.append(os.getloadavg()[0])
        pm, rm = med(pgha_s), med(raw_s)
        print(f"\ndatabase {size_mb:.0f} MB (pgbench scale {args.scale}), {args.runs} runs, medians; "
              f"2 shared CPU cores, load average {min(loads):.1f}-{max(loads):.1f}")
        print(f"pgha full backup (pgBackRest, backup-standby, zstd-3, process-max {args.process_max}): "
              f"{pm:.1f} s = {size_mb / pm:.1f} MB/s (the whole flow: {med(full_flow_s):.1f} s)")
        print(f"raw pg_basebackup (same replica, server-zstd-3, workers {args.process_max}):       "
              f"{rm:.1f} s = {size_mb / rm:.1f} MB/s")
        print(f"throughput ratio pgha / raw: {rm / pm:.2f}x")
        dm, dmb, fmb = med(diff_s), med(diff_mb), med(full_mb)
        print(f"nightly diff after 1 % of pgbench_accounts' rows changed (block incremental "
              f"{'on' if spec.backup.block_incremental else 'off'}): {dm:.1f} s, {dmb} MB stored, "
              f"{med(diff_read_mb):.0f} MB of changed files read ({med(diff_read_mb) / size_mb:.2f} of the database); "
              f"the whole flow {med(diff_flow_s):.1f} s")
        print(f"fixed cost (an incr with nothing changed): {med(idle_s):.1f} s; `pgbackrest check` (no longer run "
              f"by the backup flow): {med(check_s):.1f} s")
        print(f"diff / full: time {dm / pm:.3f}x (goal <= 0.10), stored bytes {dmb / fmb:.3f}x (goal <= 0.10); "
              f"whole flows {med(diff_flow_s) / med(full_flow_s):.3f}x")
        vc, vf = med([v.duration_s for v in vchain]), med([v.duration_s for v in vfull])
        rc = med([v.restore_s or 0 for v in vchain])
        rf = med([v.restore_s or 0 for v in vfull])
        print(f"verified restore (medians of {len(vchain)}): chain {vc:.1f} s (restore {rc:.1f} s), full {vf:.1f} s "
              f"(restore {rf:.1f} s); chain / full: {vc / vf:.2f}x (goal <= 1.20), restore alone {rc / rf:.2f}x")
        print(f"verified restore of the full / its backup: {vf / pm:.2f}x")
    finally:
        if not args.keep:
            local_engine().remove_labelled(spec.scope, volumes=True)


if __name__ == "__main__":
    main()
