"""What repository encryption costs: backup + verified restore with aes-256-cbc vs without, same run.

Two 2-node / 1-etcd clusters side by side with the same pgbench database: one with
`backup.encrypt: true` (the default: pgBackRest aes-256-cbc), one with `encrypt: false`.
Each round runs, alternating, a full backup followed by its verified restore (pgbackrest
verify, restore into a scratch container, recovery, pg_amcheck) on each; medians of the
rounds and the ratio encrypted / plain.

    .venv/bin/python benchmarks/backup_cipher.py [--scale 20] [--runs 3]

The machine may be shared: figures printed are what this run saw, noisy by nature.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("cipher")

from flows.backup import backup  # noqa: E402
from flows.bootstrap import bootstrap  # noqa: E402
from stack.backup_decisions import BackupType  # noqa: E402
from stack.layout import SOCKET_DIR  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from tasks import images, patroni  # noqa: E402
from tasks import pgbackrest as pbr  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.node_exec import node  # noqa: E402


def make(scope: str, port: int, encrypt: bool) -> ClusterSpec:
    return parse_spec({"scope": scope, "nodes": 2, "etcd_members": 1,
                       "ports": {"rw": port, "ro": port + 1, "stats": port + 2},
                       "backup": {"encrypt": encrypt, "retention_full": 1}, "pooler": {"enabled": False}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=20, help="pgbench scale (about 15 MB each)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    specs = {"aes-256-cbc": make("pgha-bench-bhc", 26820, True), "none": make("pgha-bench-bhp", 26830, False)}
    took: dict[str, list[float]] = {k: [] for k in specs}
    backup_s: dict[str, list[float]] = {k: [] for k in specs}
    size_mb = 0.0
    try:
        for spec in specs.values():
            local_engine().remove_labelled(spec.scope, volumes=True)
        images.ensure_image(next(iter(specs.values())))
        for want, spec in specs.items():
            bootstrap(spec)
            leader = next(m.name for m in patroni.cluster_view(spec).members if m.is_leader)
            r = node(spec, leader).run(["pgbench", "-h", SOCKET_DIR, "-i", "-q", "-s", str(args.scale), "postgres"],
                                       user="postgres", timeout=1800)
            if not r.ok:
                raise SystemExit(f"pgbench -i failed: {r.tail()}")
            patroni.wait_whole(spec, timeout=600)
            got = pbr.repo_cipher(spec, pbr.running_nodes(spec)[0])
            if got != want:
                raise SystemExit(f"{spec.scope}: pgbackrest info reports cipher {got}, expected {want}")
        for i in range(args.runs):
            for name, spec in (specs.items() if i % 2 == 0 else reversed(list(specs.items()))):
                t = time.monotonic()
                res = backup(spec, BackupType.FULL, verify=True)
                took[name].append(time.monotonic() - t)
                backup_s[name].append(res.duration_s)  # the backup alone (its verification is timed apart)
                size_mb = res.size_mb
                if not (res.verification and res.verification.ok):
                    raise SystemExit(f"{spec.scope}: the verified restore failed")
                print(f"run {i + 1} {name:12}: backup + verify {took[name][-1]:.1f} s "
                      f"(backup {res.duration_s:.1f} s, verify {res.verification.duration_s:.1f} s)", flush=True)
        enc, plain = (statistics.median(took[k]) for k in ("aes-256-cbc", "none"))
        be, bp = (statistics.median(backup_s[k]) for k in ("aes-256-cbc", "none"))
        print(f"\ndatabase {size_mb:.0f} MB (pgbench scale {args.scale}), {args.runs} runs, medians; "
              "2 shared CPU cores, other work running on the machine")
        print(f"full backup + verified restore, aes-256-cbc: {enc:.1f} s (backup part {be:.1f} s)")
        print(f"full backup + verified restore, no cipher:   {plain:.1f} s (backup part {bp:.1f} s)")
        print(f"ratio encrypted / plain: {enc / plain:.2f}x (backup part {be / bp:.2f}x)")
    finally:
        for spec in specs.values():
            local_engine().remove_labelled(spec.scope, volumes=True)


if __name__ == "__main__":
    main()
