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

`--lab`: the same rounds with every cluster on lab hosts (`pgha lab`: containers running an engine
of their own, on one lab network): site A on lab hosts of its own, site B on others, the baseline
on two more (1 etcd / 2 nodes over 2 hosts). `--hosts-per-site N`: each site spans N lab hosts (a
node on each, 1 etcd member), so a lab of 2N + 2 hosts. The lab is made first and removed at the
end (unless --keep); its ports are 127.0.0.1:21000 on (4 a host). Fencing is off in the lab's
clusters, so the in-site hard kill there is Patroni's own failover as on one engine.

    .venv/bin/python benchmarks/site.py [--runs 3] [--keep] [--lab [--hosts-per-site 1|2]] [--max-minutes 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("site")

from _lab import OutOfTime, bounded, lab_clusters  # noqa: E402

from flows.bootstrap import bootstrap  # noqa: E402
from flows.drill import drill  # noqa: E402
from stack.drill import DrillKind  # noqa: E402
from stack.results import DrillResult  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from tasks import docker_lab, images  # noqa: E402
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
# --lab: one lab for the three clusters, each on lab hosts of its own.
LAB, LAB_PORT_BASE = "sitelab", 21000
LAB_A, LAB_B, LAB_BASE = "pgha-bench-sitelab-a", "pgha-bench-sitelab-b", "pgha-bench-sitelab-base"
BASE_HOSTS = 2


@dataclass(frozen=True)
class Sites:
    """The run's three clusters (site A, its standby site B, the in-site baseline) and where they run."""

    a: ClusterSpec
    b: ClusterSpec
    base: ClusterSpec
    lab: str | None = None  # the lab they run in (None: this machine's engine)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def one_engine() -> Sites:
    images.ensure_image(SITE_A)
    return Sites(SITE_A, SITE_B, BASE)


def in_lab(hosts_per_site: int) -> Sites:
    """A lab of 2 * hosts_per_site + 2 hosts: site A on the first hosts, site B on the next, the
    baseline on the last two; the three specs cut from it."""
    st, (a, b, base), took = lab_clusters(LAB, LAB_PORT_BASE, [(LAB_A, hosts_per_site), (LAB_B, hosts_per_site),
                                                               (LAB_BASE, BASE_HOSTS)])
    b["standby_of"] = {"scope": LAB_A}
    sites = Sites(parse_spec(a, "(lab site A)"), parse_spec(b, "(lab site B)"), parse_spec(base, "(lab baseline)"),
                  LAB)

    def on(spec: ClusterSpec) -> str:
        return ", ".join(f"{h.name} ({h.address}, R/W 127.0.0.1:{h.rw_port})" for h in spec.hosts or [])

    print(f"lab {LAB}: {len(st.hosts)} hosts made in {took:.1f} s (node image loaded into each); "
          f"load {load()}", flush=True)
    for label, spec in (("site A", sites.a), ("site B", sites.b), ("baseline", sites.base)):
        print(f"  {label:<8} {spec.scope}: {spec.nodes} node(s), {spec.etcd_members} etcd on {on(spec)}", flush=True)
    return sites


def standby(sites: Sites) -> ClusterSpec:
    """Whichever site runs as the standby now (its stored spec has standby_of)."""
    for scope in (sites.a.scope, sites.b.scope):
        spec = stored_spec(scope)
        if spec.standby_of is not None:
            return spec
    raise SystemExit("neither site is a standby: the previous drill left them broken")


def clear(sites: Sites | None, lab: bool) -> None:
    """Remove whatever a run of this mode left: the lab (by its label), or the three clusters on this engine."""
    if lab:
        docker_lab.down(LAB)
        return
    eng = local_engine()
    specs = (SITE_B, SITE_A, BASE) if sites is None else (sites.b, sites.a, sites.base)
    for spec in specs:  # containers first: a site's nodes sit on the other's network
        for ct in eng.cluster_containers(spec.scope):
            eng.remove_container(ct.name)
    for spec in specs:
        eng.remove_labelled(spec.scope, volumes=True)


def unfenced_hard_kill(base: ClusterSpec) -> DrillResult:
    """A hard kill of the baseline's leader with no fencing watcher acting (stopped for the drill
    on one engine; the lab's clusters run none)."""
    if base.hosts is not None or not base.fencing:
        return drill(base, DrillKind.HARD_KILL)
    eng = local_engine()
    fencer = base.container(base.fencer_member)
    running = eng.running(fencer)
    if running:
        eng.stop(fencer, timeout=5)
    try:
        return drill(base, DrillKind.HARD_KILL)
    finally:
        if running:
            eng.start(fencer)


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="leave the three clusters (and the lab) running")
    ap.add_argument("--lab", action="store_true", help="every cluster on lab hosts of its own (`pgha lab`)")
    ap.add_argument("--hosts-per-site", type=int, choices=(1, 2), default=1,
                    help="with --lab: the lab hosts each site spans (a node on each)")
    ap.add_argument("--max-minutes", type=float, default=60,
                    help="stop the rounds after this long (what was measured is printed, then cleaned up)")
    args = ap.parse_args()
    if args.hosts_per_site != 1 and not args.lab:
        raise SystemExit("--hosts-per-site needs --lab")
    where = (f"lab {LAB}: each site on {args.hosts_per_site} lab host(s), the baseline on {BASE_HOSTS}" if args.lab
             else "this machine's engine")
    print(f"site drills on {where}; load at start: {load()}", flush=True)
    started = time.monotonic()
    figs: dict[str, list[float]] = {}
    lost: dict[str, int] = {}
    failed: list[str] = []

    def record(name: str, value: float | None) -> None:
        if value is not None:
            figs.setdefault(name, []).append(value)

    def gap_run(i: int, label: str, r: DrillResult, took: float, extra: str = "") -> None:
        """One drill whose figure is its write gap: recorded, its lost writes counted, a line printed."""
        record(f"{label} gap", r.write_gap_s)
        lost[label] = lost.get(label, 0) + len(r.lost_writes)
        print(f"run {i + 1} {label:<20} write gap {r.write_gap_s:6.2f} s  lost {len(r.lost_writes)}  "
              f"{extra}(drill {took:.0f} s)  load {load()}", flush=True)

    def timed(label: str, i: int, run: Any) -> tuple[DrillResult | None, float]:
        """The drill `run()` and its wall time; a failed drill is printed and counted, not raised."""
        t = time.monotonic()
        try:
            return run(), time.monotonic() - t
        except Exception as exc:  # noqa: BLE001 - a benchmark reports the failure and goes on (or stops below)
            if isinstance(exc, OutOfTime):
                raise
            failed.append(f"run {i + 1} {label}: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}")
            print(f"run {i + 1} {label:<20} FAILED after {time.monotonic() - t:.0f} s: {failed[-1]}  "
                  f"load {load()}", flush=True)
            return None, time.monotonic() - t

    sites: Sites | None = None
    try:
        with bounded(args.max_minutes):
            clear(None, args.lab)
            sites = in_lab(args.hosts_per_site) if args.lab else one_engine()
            for spec in (sites.a, sites.b, sites.base):
                t = time.monotonic()
                bootstrap(spec)
                print(f"up {spec.scope} in {time.monotonic() - t:.1f} s  load {load()}", flush=True)
            s = sites
            for i in range(args.runs):
                r, took = timed("in-site switchover", i, lambda: drill(s.base, DrillKind.SWITCHOVER))
                if r:
                    gap_run(i, "in-site switchover", r, took)
                r, took = timed("site switchover", i, lambda: drill(standby(s), DrillKind.SITE_SWITCHOVER))
                if r is None:
                    break  # the sites may be left half switched: no more site drills on them
                gap_run(i, "site switchover", r, took, f"{r.old_site} -> {r.new_site}  ")
                r, took = timed("in-site hard kill", i, lambda: unfenced_hard_kill(s.base))
                if r:
                    gap_run(i, "in-site hard kill", r, took, "(no fencing watcher)  ")
                r, took = timed("site-loss", i, lambda: drill(standby(s), DrillKind.SITE_LOSS))
                if r is None:
                    break
                record("site loss RTO", r.rto_s)
                record("site loss failover", r.failover_s)
                record("site loss RPO s", r.rpo_s)
                record("site loss RPO writes", float(len(r.lost_writes)))
                record("site loss write gap", r.write_gap_s)
                print(f"run {i + 1} site-loss            RTO {r.rto_s} s  failover {r.failover_s} s  RPO "
                      f"{len(r.lost_writes)} writes / {r.rpo_s} s  write gap {r.write_gap_s:.2f} s  "
                      f"{r.old_site} -> {r.new_site} ({r.rejoin})  (drill {took:.0f} s)  load {load()}", flush=True)
    except OutOfTime as exc:
        failed.append(str(exc))
        print(f"\n{exc}", flush=True)
    finally:
        if not args.keep:
            clear(sites, args.lab)
    print(f"\nin all {time.monotonic() - started:.0f} s on {where}")
    for f in failed:
        print(f"FAILED {f}")
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
