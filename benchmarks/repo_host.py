"""The repository host (backup.repo_host) over 2 lab hosts, side by side with a single-engine cluster
whose repository is the shared volume (the baseline), on the same machine.

Both clusters: 2 Patroni nodes, 1 etcd member, encrypted repository, a small pgbench-free
table. Measured on each, alternating:
- WAL archiving latency: `pg_switch_wal()` after a small write, until `pg_stat_archiver`
  reports that segment archived (the primary's `archive-push` into the volume, or over TLS to
  the repository host on the other lab host);
- a full backup (`backup` flow without verification: its duration), then the verified
  restore of that set (`verify_restore`: its duration).
Prints every figure, then medians and the ratio lab/single.

    .venv/bin/python benchmarks/repo_host.py [--rounds 10] [--backups 2] [--keep]

The machine may be shared: figures are what this run saw, noisy by nature. archive_timeout
and the archiver's own 1 s wake-up bound the latency from below on both sides.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("repo")

import psycopg  # noqa: E402
import yaml  # noqa: E402

from flows.backup import backup  # noqa: E402
from flows.bootstrap import bootstrap  # noqa: E402
from flows.teardown import teardown  # noqa: E402
from flows.verify import verify_restore  # noqa: E402
from stack.backup_decisions import BackupType  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from tasks import docker_lab, images  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.host.secrets import cluster_secrets  # noqa: E402

LAB, LAB_SCOPE, PORT_BASE = "itrepobench", "pgha-it-rbench-lab", 26850
SINGLE = parse_spec({"scope": "pgha-it-rbench-one", "nodes": 2, "etcd_members": 1, "fencing": False,
                     "ports": {"rw": 26860, "ro": 26861, "stats": 26862}, "pooler": {"enabled": False}})


def _connect(spec: ClusterSpec) -> psycopg.Connection:
    host, port = spec.client_endpoints()[0]
    return psycopg.connect(host=host, port=port, user="postgres", password=cluster_secrets(spec.scope).superuser,
                           dbname="postgres", connect_timeout=5, autocommit=True)


def archive_latency(spec: ClusterSpec) -> float:
    """Seconds from a WAL switch to pg_stat_archiver reporting that segment archived."""
    with _connect(spec) as c:
        c.execute("create table if not exists bench_wal (v bigint)")
        c.execute("insert into bench_wal select generate_series(1, 1000)")
        row = c.execute("select pg_walfile_name(pg_switch_wal())").fetchone()
        seg = str(row[0]) if row else ""
        t = time.monotonic()
        while time.monotonic() - t < 120:
            got = c.execute("select last_archived_wal from pg_stat_archiver").fetchone()
            if got and got[0] and str(got[0]) >= seg:
                return time.monotonic() - t
            time.sleep(0.05)
    raise SystemExit(f"{spec.scope}: segment {seg} not archived within 120 s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10, help="WAL switches per cluster")
    ap.add_argument("--backups", type=int, default=2, help="full backups (+ verified restore) per cluster")
    ap.add_argument("--keep", action="store_true", help="leave the lab and clusters up at the end")
    args = ap.parse_args()
    docker_lab.down(LAB)
    local_engine().remove_labelled(SINGLE.scope, volumes=True)
    images.ensure_image(SINGLE)
    st = docker_lab.up(LAB, 2, PORT_BASE, LAB_SCOPE)
    data = yaml.safe_load(Path(st.spec).read_text())
    data["backup"] = {"enabled": True, "repo_host": "h2"}
    lab = parse_spec(data)
    names = {SINGLE.scope: "single engine, volume", lab.scope: "2 hosts, repository host"}
    lat: dict[str, list[float]] = {}
    bk: dict[str, list[float]] = {}
    vr: dict[str, list[float]] = {}
    try:
        for spec in (SINGLE, lab):
            t = time.monotonic()
            bootstrap(spec)
            print(f"bootstrap {names[spec.scope]:26} {time.monotonic() - t:6.1f} s", flush=True)
        for i in range(args.rounds):
            for spec in (SINGLE, lab):
                x = archive_latency(spec)
                lat.setdefault(spec.scope, []).append(x)
                print(f"round {i + 1:2} archive {names[spec.scope]:26} {x:6.2f} s", flush=True)
        for i in range(args.backups):
            for spec in (SINGLE, lab):
                r = backup(spec, BackupType.FULL, verify=False)
                bk.setdefault(spec.scope, []).append(r.duration_s)
                v = verify_restore(spec, label=r.label)
                vr.setdefault(spec.scope, []).append(v.duration_s)
                print(f"backup {i + 1} {names[spec.scope]:26} {r.size_mb:7.1f} MB in {r.duration_s:6.1f} s; "
                      f"verified restore {v.duration_s:6.1f} s ({'ok' if v.ok else 'FAILED'})", flush=True)
    finally:
        if not args.keep:
            for spec in (SINGLE, lab):
                try:
                    teardown(spec, volumes=True, confirm=spec.scope, purge_backups=True)
                except Exception as exc:  # noqa: BLE001 - the lab goes anyway
                    print(f"teardown of {spec.scope}: {exc}", flush=True)
            docker_lab.down(LAB)
            local_engine().remove_labelled(SINGLE.scope, volumes=True)
    print("\nmedians (ratio: repository host / single-engine volume):")
    for what, xs in (("WAL archiving latency", lat), ("full backup", bk), ("verified restore", vr)):
        one, two = statistics.median(xs[SINGLE.scope]), statistics.median(xs[lab.scope])
        print(f"  {what:24} single {one:6.2f} s   repository host {two:6.2f} s   x{two / one:.2f}")


if __name__ == "__main__":
    main()
