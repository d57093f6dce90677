"""Pooler benchmark: planned switchovers and TPS, pooled (PgBouncer) vs direct (HAProxy R/W), one cluster.

One 2-node / 1-etcd cluster with the pooler. Everything runs against it in the same run:

* Switchovers, alternating two ways of doing them, each with two write probes at once (one
  commit every 50 ms through the pooler, one through the direct R/W port):
  - `pgha`: the pooler-aware switchover (PAUSE, Patroni switchover, HAProxy routed through
    its runtime API the moment the candidate leads, RESUME) — what `pgha switchover` runs;
  - `baseline`: a plain Patroni switchover with routing left to HAProxy's health checks
    (what every switchover did before; the pooler is not paused).
  Figures: the longest stall of the pooled probe (a commit's send-to-commit time, or the
  time between two commits), its failed transactions, the direct probe's write gap and its
  failed transactions.
* pgbench TPS (TPC-B-like, 20 clients, `--seconds` each): persistent connections direct vs
  pooled, and one connection per transaction (`-C`) direct vs pooled, alternating.

Medians of `--runs` (>= 3). Bounded: each pgbench run lasts `--seconds`, each switchover waits
at most `upgrade.node_timeout_s`. The host's pgbench is used (127.0.0.1 ports only).

    .venv/bin/python benchmarks/pooler.py [--runs 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
import uuid

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("pooler")
# A loaded machine starts the ephemeral API slowly; the default 20 s is not always enough.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import _pgbench  # noqa: E402

from flows.bootstrap import bootstrap  # noqa: E402
from stack.cluster import led_by  # noqa: E402
from stack.drill import longest_gap  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from stack.switchover import plan_switchover  # noqa: E402
from stack.wait import wait_for  # noqa: E402
from tasks import images, patroni  # noqa: E402
from tasks.cluster_health import wait_healthy  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.host.secrets import cluster_secrets  # noqa: E402
from tasks.postgres import ensure_probe_table  # noqa: E402
from tasks.postgres_probe import Probe  # noqa: E402
from tasks.switchover import hand_over  # noqa: E402

SPEC = parse_spec({"scope": "pgha-bench-pool", "nodes": 2, "etcd_members": 1, "backup": {"enabled": False},
                   "ports": {"rw": 26272, "ro": 26273, "stats": 26274, "pool": 26275},
                   "pooler": {"enabled": True}})
PGBENCH = _pgbench.PGBENCH


def pgbench(spec: ClusterSpec, pooled: bool, seconds: int, *extra: str) -> float:
    """TPS of one pgbench run (20 clients, 2 threads) on the pooler's or the direct R/W port."""
    return _pgbench.tps(spec, WORK, pooled, seconds, *extra)


def plain_switchover(spec: ClusterSpec, leader: str, candidate: str) -> None:
    """The baseline: Patroni's switchover alone; HAProxy's health checks find the new primary."""
    patroni.switchover(spec, leader, candidate)


def one_switchover(spec: ClusterSpec, way: str) -> dict[str, float]:
    secrets = cluster_secrets(spec.scope)
    run = "pool-" + uuid.uuid4().hex[:8]
    pooled = Probe(spec, secrets, run + "p", write=True, pooled=True, max_seconds=300)
    direct = Probe(spec, secrets, run + "d", write=True, max_seconds=300)
    for p in (pooled, direct):
        p.start()
    wait_for("the probes to warm up", lambda: min(len(pooled.log.ok), len(direct.log.ok)), lambda n: n >= 10,
             timeout=30, interval=0.1)
    plan = plan_switchover(patroni.cluster_view(spec), spec, None)
    start = time.monotonic()
    times = None
    if way == "pgha":
        times = hand_over(spec, plan.leader, plan.candidate, spec.upgrade.node_timeout_s)
    else:
        plain_switchover(spec, plan.leader, plan.candidate)
    wait_for("both probes to commit on the new primary", lambda: min(pooled.log.ok[-1], direct.log.ok[-1]),
             lambda t: t > time.monotonic() - 0.2, timeout=60, interval=0.1)
    time.sleep(1.0)
    end = time.monotonic()
    for p in (pooled, direct):
        p.stop()
        p.join(10)
    wait_for(f"{plan.candidate} to lead and {plan.leader} to replicate", lambda: patroni.cluster_view(spec),
             lambda v: led_by(v, spec, plan.candidate), timeout=spec.upgrade.node_timeout_s, interval=0.5)
    wait_healthy.fn(spec, spec.upgrade.node_timeout_s, stable_s=1.0)
    in_window = [s for t, s in zip(pooled.log.ok, pooled.log.stalls, strict=False) if start <= t <= end]
    return {
        "pooled_stall": max(longest_gap(pooled.log.ok, start, end), *in_window, 0.0),
        "pooled_failed": float(sum(1 for t, _ in pooled.log.errors if start <= t <= end)),
        "direct_gap": longest_gap(direct.log.ok, start, end),
        "direct_failed": float(sum(1 for t, _ in direct.log.errors if start <= t <= end)),
        # pgha only: PAUSE's own time, and request -> writable primary routed (Patroni's demote + promote)
        "paused": times.paused_s or 0.0 if times else float("nan"),
        "routed": times.routed_s or 0.0 if times else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10, help="length of each pgbench run")
    ap.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    args = ap.parse_args()
    if PGBENCH is None:
        raise SystemExit("this benchmark needs pgbench on the host (Debian: postgresql-client)")
    spec = SPEC
    sw: dict[str, list[dict[str, float]]] = {"pgha": [], "baseline": []}
    tps: dict[str, list[float]] = {}
    try:
        local_engine().remove_labelled(spec.scope, volumes=True)
        images.ensure_image(spec)
        t0 = time.monotonic()
        bootstrap(spec)
        print(f"cluster up in {time.monotonic() - t0:.1f}s", flush=True)
        ensure_probe_table(spec, cluster_secrets(spec.scope))
        pgbench(spec, False, 60, "-i", "-q", "-s", "1")
        for i in range(args.runs):
            for way in ("pgha", "baseline"):
                r = one_switchover(spec, way)
                sw[way].append(r)
                print(f"run {i + 1} switchover {way:8}  pooled: longest stall {r['pooled_stall']:.2f}s, "
                      f"{r['pooled_failed']:.0f} failed   direct: write gap {r['direct_gap']:.2f}s, "
                      f"{r['direct_failed']:.0f} failed"
                      + (f"   (PAUSE {r['paused']:.2f}s, request->routed {r['routed']:.2f}s)" if way == "pgha" else ""),
                      flush=True)
            for name, pooled, extra in (("persistent direct", False, ()), ("persistent pooled", True, ()),
                                        ("per-transaction direct", False, ("-C",)),
                                        ("per-transaction pooled", True, ("-C",))):
                v = pgbench(spec, pooled, args.seconds, "-c", "20", "-j", "2", "-T", str(args.seconds), *extra)
                tps.setdefault(name, []).append(v)
                print(f"run {i + 1} pgbench {name:24} {v:8.1f} tps", flush=True)
    finally:
        if not args.keep:
            local_engine().remove_labelled(spec.scope, volumes=True)
            shutil.rmtree(WORK, ignore_errors=True)

    def med(way: str, key: str) -> float:
        return statistics.median(r[key] for r in sw[way])

    print()
    print("| planned switchover (median) | pooled: longest stall | pooled: failed tx | direct: write gap "
          "| direct: failed tx |")
    print("|---|---|---|---|---|")
    for way in ("pgha", "baseline"):
        print(f"| {way} | {med(way, 'pooled_stall'):.2f} s | {med(way, 'pooled_failed'):.0f} "
              f"| {med(way, 'direct_gap'):.2f} s | {med(way, 'direct_failed'):.0f} |")
    print(f"| ratio pgha/baseline | {med('pgha', 'pooled_stall') / med('baseline', 'pooled_stall'):.2f} | "
          f"| {med('pgha', 'direct_gap') / med('baseline', 'direct_gap'):.2f} | |")
    print()
    print("| pgbench, 20 clients (median TPS) | direct | pooled | ratio pooled/direct |")
    print("|---|---|---|---|")
    for kind in ("persistent", "per-transaction"):
        d, p = statistics.median(tps[f"{kind} direct"]), statistics.median(tps[f"{kind} pooled"])
        print(f"| {kind} connections | {d:.1f} | {p:.1f} | {p / d:.2f} |")
    print(f"\n{args.runs} runs; pgbench {args.seconds}s each")


if __name__ == "__main__":
    main()
