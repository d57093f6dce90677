"""Upgrade benchmark: rolling minor upgrade (15.18 -> 15.20) vs a naive restart-all of the same change.

One 3-node PostgreSQL 15 cluster (1 etcd member). Each round: from the bookworm main image
(15.18), `upgrade` rolls it to the bookworm-security image (15.20) under a write probe and a
read probe (every 50 ms) and a sampler of HAProxy's R/O pool; then the cluster goes back to
15.18 (rolling, not measured), and the naive way does the same change: every node container
stopped and recreated on the new image at once, as `docker compose up` with a new tag would.
Prints each run, then medians side by side: longest write gap, longest read gap, fewest
replicas UP in the R/O pool, writes lost.

    .venv/bin/python benchmarks/upgrade.py [--runs 2]

The machine is shared (2 cores, other clusters running): figures are indicative.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("upgrade")

from flows.bootstrap import bootstrap  # noqa: E402
from flows.upgrade import upgrade  # noqa: E402
from stack import topology  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from stack.wait import wait_for  # noqa: E402
from tasks import images, patroni  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.host.secrets import load_or_create  # noqa: E402
from tasks.host.state import config_dir, secrets_file  # noqa: E402
from tests.support.traffic import Traffic, measured  # noqa: E402

SPEC = parse_spec({"scope": "pgha-bench-up", "nodes": 3, "etcd_members": 1, "postgres_version": 15,
                   "ports": {"rw": 25540, "ro": 25541, "stats": 28540}, "pooler": {"enabled": False}})


def naive_restart_all(spec: ClusterSpec, image: str) -> None:
    """Every node stopped and recreated on `image` at the same time; wait until whole again."""
    secrets = load_or_create(secrets_file(spec.scope))
    subnet, _ = local_engine().ensure_network(spec.scope, spec.network)

    def one(member: str) -> None:
        planned = topology.patroni_node(spec, member, image, subnet, secrets, str(config_dir(spec.scope, member)))
        local_engine().stop(spec.container(member), timeout=60)
        local_engine().ensure_container(planned.container)

    with ThreadPoolExecutor(len(spec.node_names())) as pool:
        list(pool.map(one, spec.node_names()))
    patroni.wait_whole.fn(spec, timeout=300)  # raw baseline: no Prefect task run
    from tasks.cluster_health import cluster_status

    wait_for("healthy", lambda: cluster_status(spec), lambda s: s.healthy, timeout=120, interval=0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    old, _ = images.ensure_image(SPEC)
    new, _ = images.ensure_image(SPEC, "security")
    print(f"images: {old} (bookworm main) -> {new} (bookworm-security)", flush=True)
    results: dict[str, list[Traffic]] = {"rolling": [], "naive": []}
    try:
        local_engine().remove_labelled(SPEC.scope, volumes=True)
        bootstrap(SPEC)
        secrets = load_or_create(secrets_file(SPEC.scope))
        for i in range(args.runs):
            with measured(SPEC, secrets) as t:
                upgrade(SPEC, image=new)
            results["rolling"].append(t)
            print(f"run {i + 1} rolling: {t}", flush=True)
            upgrade(SPEC, image=old)  # back to 15.18, not measured
            time.sleep(2)
            with measured(SPEC, secrets) as t:
                naive_restart_all(SPEC, new)
            results["naive"].append(t)
            print(f"run {i + 1} naive  : {t}", flush=True)
            upgrade(SPEC, image=old)
    finally:
        local_engine().remove_labelled(SPEC.scope, volumes=True)
    print("\nmedians over", args.runs, "runs (shared 2-core machine; indicative):")
    print(f"{'':10}{'write gap s':>12}{'read gap s':>12}{'min R/O up':>12}{'lost':>6}{'duration s':>12}")
    med: dict[str, float] = {}
    for name, rs in results.items():
        wg = statistics.median(r.write_gap_s for r in rs)
        med[name] = wg
        print(f"{name:10}{wg:12.2f}{statistics.median(r.read_gap_s for r in rs):12.2f}"
              f"{min(r.min_ro_up for r in rs):12d}{sum(len(r.lost) for r in rs):6d}"
              f"{statistics.median(r.seconds for r in rs):12.1f}")
    if med["rolling"] > 0:
        print(f"naive/rolling write gap ratio: {med['naive'] / med['rolling']:.1f}x")


if __name__ == "__main__":
    main()
