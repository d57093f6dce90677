"""Site rebuild benchmark: the old primary site rewound (its data kept) against cloned afresh.

Two sites on the local engine (1 etcd / 1 node each, the second a standby cluster of the first),
loaded with `pgbench -i -s SCALE` on the primary site (run inside its node), then streamed to the
standby. Each round: a site failover to the standby (the primary site's node stopped, some pgbench
writes on the promoted site), then `site rebuild` of the old site, rewound; a site failover back,
then `site rebuild --clone` of the other site. Both sites hold the same data, so the two rebuilds
differ only in method. Prints each rebuild's time (flow in all, and from the rewind's or the
clone's start to streaming), the commits the rewind discarded, and the load average.

    .venv/bin/python benchmarks/site_rebuild.py [--scale 1] [--runs 1] [--keep]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("site-rebuild")

from flows.bootstrap import bootstrap  # noqa: E402
from flows.site import site_failover, site_rebuild  # noqa: E402
from stack.results import SiteRebuildResult  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from tasks import images  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.host.generations import stored_spec  # noqa: E402

SCOPE_A, SCOPE_B = "pgha-it-rewind-bench-a", "pgha-it-rewind-bench-b"
OFF = {"backup": {"enabled": False}, "pooler": {"enabled": False}}
SITE_A = parse_spec({"scope": SCOPE_A, "nodes": 1, "etcd_members": 1,
                     "ports": {"rw": 21900, "ro": 21901, "stats": 21902}, **OFF})
SITE_B = parse_spec({"scope": SCOPE_B, "nodes": 1, "etcd_members": 1, "standby_of": {"scope": SCOPE_A},
                     "ports": {"rw": 21910, "ro": 21911, "stats": 21912}, **OFF})


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def clear() -> None:
    eng = local_engine()
    for scope in (SCOPE_B, SCOPE_A):  # containers first: a site's nodes sit on the other's network
        for ct in eng.cluster_containers(scope):
            eng.remove_container(ct.name)
    for scope in (SCOPE_B, SCOPE_A):
        eng.remove_labelled(scope, volumes=True)


def pgbench(spec: ClusterSpec, *args: str) -> None:
    """pgbench inside the site's node, on its socket (the leader: one node per site)."""
    from tasks.node_exec import node

    r = node(spec, "pg-1").run([f"/usr/lib/postgresql/{spec.postgres_version}/bin/pgbench", "-h", "/var/run/postgresql", *args, "postgres"], user="postgres",
                               timeout=3600)
    if not r.ok:
        raise SystemExit(f"pgbench {' '.join(args)}: {r.tail(3)}")


def checkpoint(spec: ClusterSpec) -> None:
    """A checkpoint now: a clone's pg_basebackup starts with a spread checkpoint (Patroni's default),
    which after a bulk load takes up to checkpoint_completion_target x checkpoint_timeout."""
    from tasks.postgres import node_sql

    node_sql(spec, "pg-1", "checkpoint", timeout=600)


def rebuild(old: str, new: str, clone: bool) -> SiteRebuildResult:
    new_spec = stored_spec(new)
    site_failover(new_spec, yes=True)
    pgbench(stored_spec(new), "-n", "-c", "2", "-T", "10")  # the promoted site diverges from the old one
    checkpoint(stored_spec(new))
    t0 = time.monotonic()
    r = site_rebuild(stored_spec(old), standby_of=new, yes=True, clone=clone)
    print(f"{'clone ' if clone else 'rewind'} {old} <- {new}: {r.method} ({r.why}); flow {r.elapsed_s:.1f} s, "
          f"rebuild {r.rebuild_s} s, wall {time.monotonic() - t0:.1f} s; streaming {r.streaming}; "
          f"discarded {r.discarded_commits} commits ({r.discarded_lsn}); load {load()}", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="leave both sites running")
    args = ap.parse_args()
    print(f"load at start: {load()}", flush=True)
    figs: dict[str, list[float]] = {}
    try:
        clear()
        images.ensure_image(SITE_A)
        bootstrap(SITE_A)
        t0 = time.monotonic()
        pgbench(SITE_A, "-i", "-s", str(args.scale), "-q")
        checkpoint(SITE_A)
        print(f"pgbench -i -s {args.scale}: {time.monotonic() - t0:.1f} s", flush=True)
        t0 = time.monotonic()
        bootstrap(SITE_B)
        print(f"standby site up (its first clone): {time.monotonic() - t0:.1f} s; load {load()}", flush=True)
        for _ in range(args.runs):
            for old, new, clone in ((SCOPE_A, SCOPE_B, False), (SCOPE_B, SCOPE_A, True)):
                r = rebuild(old, new, clone)
                key = "clone" if clone else "rewind"
                figs.setdefault(f"{key} flow", []).append(r.elapsed_s)
                figs.setdefault(f"{key} to streaming", []).append(r.rebuild_s or float("nan"))
    finally:
        if not args.keep:
            clear()
    print(f"\nload at end: {load()}")
    for name, xs in figs.items():
        print(f"  {name}: median {statistics.median(xs):.1f} s ({', '.join(f'{x:.1f}' for x in xs)})")


if __name__ == "__main__":
    main()
