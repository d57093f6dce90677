"""Site benchmark: site switchover and site loss under a 50 ms write probe, against in-site baselines.

Two sites on the local engine (1 etcd / 1 node each, the second a standby cluster of the first)
and a baseline cluster (1 etcd / 2 nodes) beside them, same machine, same moment. Each round:

- an in-site `switchover` drill on the baseline (what `pgha switchover` costs clients), then a
  `site-switchover` drill: its write gap and the acknowledged writes lost (goal: 0 lost, gap
  <= 10 s);
- an in-site `hard-kill` drill on the baseline with its fencing watcher stopped (Patroni's own
  failover after the leader lock expires), then a `site-loss` drill: every container of the
  primary site killed, the site failover, the dead site rebuilt. Its RTO (failover command to the
  first write the promoted site takes; goal <= 30 s) against the hard kill's write gap, and its
  RPO (acknowledged writes missing, as a count and as seconds of writes; goal <= 1 s).

Each drill swaps the sites' roles; the next runs on whichever is the standby then. Prints every
run, then medians and ratios, with the load average at the start and the end.

    .venv/bin/python benchmarks/site.py [--runs 3] [--keep]
"""

from __future__ import annotations

import argparse
import os
import statistics

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("site")

from flows.bootstrap import bootstrap  # noqa: E402
from flows.drill import drill  # noqa: E402
from stack.drill import DrillKind  # noqa: E402
from stack.results import DrillResult  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from tasks import images  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.host.generations import stored_spec  # noqa: E402

SCOPE_A, SCOPE_B, SCOPE_BASE = "pgha-bench-site-a", "pgha-bench-site-b", "pgha-bench-site-base"
OFF = {"backup": {"enabled": False}, "pooler": {"enabled": False}}
SITE_A = parse_spec({"scope": SCOPE_A, "nodes": 1, "etcd_members": 1,
                     "ports": {"rw": 29800, "ro": 29801, "stats": 29802}, **OFF})
SITE_B = parse_spec({"scope": SCOPE_B, "nodes": 1, "etcd_members": 1, "standby_of": {"scope": SCOPE_A},
                     "ports": {"rw": 29810, "ro": 29811, "stats": 29812}, **OFF})
BASE = parse_spec({"scope": SCOPE_BASE, "nodes": 2, "etcd_members": 1,
                   "ports": {"rw": 29820, "ro": 29821, "stats": 29822}, **OFF})


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def standby() -> ClusterSpec:
    """Whichever site runs as the standby now (its stored spec has standby_of)."""
    for scope in (SCOPE_A, SCOPE_B):
        spec = stored_spec(scope)
        if spec.standby_of is not None:
            return spec
    raise SystemExit("neither site is a standby: the previous drill left them broken")


def clear() -> None:
    eng = local_engine()
    for scope in (SCOPE_B, SCOPE_A, SCOPE_BASE):  # containers first: a site's nodes sit on the other's network
        for ct in eng.cluster_containers(scope):
            eng.remove_container(ct.name)
    for scope in (SCOPE_B, SCOPE_A, SCOPE_BASE):
        eng.remove_labelled(scope, volumes=True)


def unfenced_hard_kill() -> DrillResult:
    eng = local_engine()
    fencer = BASE.container(BASE.fencer_member)
    running = eng.running(fencer)
    if running:
        eng.stop(fencer, timeout=5)
    try:
        return drill(BASE, DrillKind.HARD_KILL)
    finally:
        if running:
            eng.start(fencer)


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="leave the three clusters running")
    args = ap.parse_args()
    print(f"load at start: {load()}", flush=True)
    figs: dict[str, list[float]] = {}
    lost: dict[str, int] = {}

    def record(name: str, value: float | None) -> None:
        if value is not None:
            figs.setdefault(name, []).append(value)

    def gap_run(i: int, label: str, r: DrillResult, extra: str = "") -> None:
        """One drill whose figure is its write gap: recorded, its lost writes counted, a line printed."""
        record(f"{label} gap", r.write_gap_s)
        lost[label] = lost.get(label, 0) + len(r.lost_writes)
        print(f"run {i + 1} {label:<20} write gap {r.write_gap_s:6.2f} s  lost {len(r.lost_writes)}  "
              f"{extra}load {load()}", flush=True)

    try:
        clear()
        images.ensure_image(SITE_A)
        bootstrap(SITE_A)
        bootstrap(SITE_B)
        bootstrap(BASE)
        for i in range(args.runs):
            gap_run(i, "in-site switchover", drill(BASE, DrillKind.SWITCHOVER))
            r = drill(standby(), DrillKind.SITE_SWITCHOVER)
            gap_run(i, "site switchover", r, f"{r.old_site} -> {r.new_site}  ")
            gap_run(i, "in-site hard kill", unfenced_hard_kill(), "(fencing watcher stopped)  ")
            r = drill(standby(), DrillKind.SITE_LOSS)
            record("site loss RTO", r.rto_s)
            record("site loss failover", r.failover_s)
            record("site loss RPO s", r.rpo_s)
            record("site loss RPO writes", float(len(r.lost_writes)))
            record("site loss write gap", r.write_gap_s)
            print(f"run {i + 1} site-loss            RTO {r.rto_s} s  failover {r.failover_s} s  RPO "
                  f"{len(r.lost_writes)} writes / {r.rpo_s} s  write gap {r.write_gap_s:.2f} s  "
                  f"{r.old_site} -> {r.new_site} ({r.rejoin})  load {load()}", flush=True)
    finally:
        if not args.keep:
            clear()
    print(f"\nload at end: {load()}")
    print("\n| figure | median | baseline (in-site) median | ratio | goal | lost writes (all runs) | runs |")
    print("|---|---|---|---|---|---|---|")
    sw, base_sw = _med(figs.get("site switchover gap", [])), _med(figs.get("in-site switchover gap", []))
    print(f"| site switchover write gap | {sw:.2f} s | {base_sw:.2f} s (`switchover`) | {sw / base_sw:.2f} | "
          f"0 lost, <= 10 s | {lost.get('site switchover', 0)} (in-site {lost.get('in-site switchover', 0)}) | "
          f"{len(figs.get('site switchover gap', []))} |")
    rto, kill = _med(figs.get("site loss RTO", [])), _med(figs.get("in-site hard kill gap", []))
    print(f"| site loss RTO (failover command -> first write) | {rto:.2f} s | {kill:.2f} s (unfenced `hard-kill`) | "
          f"{rto / kill:.2f} | <= 30 s | - | {len(figs.get('site loss RTO', []))} |")
    gap = _med(figs.get("site loss write gap", []))
    print(f"| site loss write gap (kill -> first write, failover started at once) | {gap:.2f} s | {kill:.2f} s "
          f"(unfenced `hard-kill`) | {gap / kill:.2f} | | - | {len(figs.get('site loss write gap', []))} |")
    print(f"| site loss failover (flow: fence, promote, writable) | {_med(figs.get('site loss failover', [])):.2f} s "
          f"| | | | | |")
    print(f"| site loss RPO | {_med(figs.get('site loss RPO writes', [])):.0f} writes, "
          f"{_med(figs.get('site loss RPO s', [])):.2f} s of writes | 0 (in-site hard kill lost "
          f"{lost.get('in-site hard kill', 0)}) | | <= 1 s | - | {len(figs.get('site loss RPO s', []))} |")
    for name, xs in figs.items():
        print(f"  {name}: {', '.join(f'{x:.2f}' for x in xs)}")


if __name__ == "__main__":
    main()
