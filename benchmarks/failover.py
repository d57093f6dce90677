"""Failover benchmark: switchover, graceful-stop and hard-kill drills, fast profile vs Patroni defaults.

Two clusters run side by side (same machine, same moment): one with pgha's default `fast`
profile, one with `profile: patroni-defaults`. Each round runs every drill kind on both,
alternating. Prints every run, then medians of the write gap, the ratio fast/defaults, and
the acknowledged writes lost (which must be 0).

    .venv/bin/python benchmarks/failover.py [--runs 3] [--kinds switchover,graceful-stop,hard-kill]

`--suite fencing` measures the limits instead, on one 3-node / 3-etcd cluster: hard-kill with
the fencing watcher vs without it (the fencer container stopped), alternating, `--runs` each;
`freeze` of the leader for ttl + 5 s (`--freeze-runs`); and `etcd-quorum-loss` of
`--outage` seconds with failsafe_mode on vs off (`--quorum-runs` each); `--planned-runs` rounds of
graceful-stop and switchover with the watcher running vs stopped (its HAProxy runtime-API
calls must not slow a planned failover). Prints every run and min / median / max of the write
gap, the ratio fenced/unfenced, the writes lost, and for each fenced hard kill when the
watcher took the dead node out of HAProxy and routed the new leader (from its log).

    .venv/bin/python benchmarks/failover.py --suite fencing [--runs 5] [--freeze-runs 3] [--quorum-runs 1]
        [--outage 60] [--planned-runs 0] [--scope pgha-bench-fence] [--port-base 26050]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("failover")

from flows.bootstrap import bootstrap  # noqa: E402
from flows.drill import drill  # noqa: E402
from stack.drill import DrillKind  # noqa: E402
from stack.results import DrillResult  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from tasks import images  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.node_exec import node  # noqa: E402

PROFILES = {
    "fast": parse_spec({"scope": "pgha-bench-fast", "ports": {"rw": 35442, "ro": 35443, "stats": 38414}, "pooler": {"enabled": False}}),
    "patroni-defaults": parse_spec({"scope": "pgha-bench-dflt", "profile": "patroni-defaults",
                                    "ports": {"rw": 35452, "ro": 35453, "stats": 38424}, "pooler": {"enabled": False}}),
}


def fence_spec(scope: str = "pgha-bench-fence", port_base: int = 26050) -> ClusterSpec:
    return parse_spec({"scope": scope, "ports": {"rw": port_base, "ro": port_base + 1, "stats": port_base + 2}, "pooler": {"enabled": False}})


def fencer_timing(spec: ClusterSpec, since: float) -> str:
    """When the watcher acted after the death: HAProxy take-out and leader routing (its JSON log)."""
    text = node(spec, spec.fencer_member).logs(tail=200, since=since)
    rows = [json.loads(ln) for ln in text.splitlines() if ln.strip().startswith("{")]
    fenced = next((r for r in rows if r.get("outcome") == "fenced"), None)
    if fenced is None:
        return "not fenced"
    died = fenced["t"] - (fenced["event_age_ms"] + fenced["total_ms"]) / 1000
    routed = next((r for r in rows if r.get("msg") == "routed the leader" and r["t"] >= fenced["t"]), None)
    out_s = (fenced["event_age_ms"] + fenced.get("haproxy_ms", 0)) / 1000
    out = (f"event seen +{fenced['event_age_ms'] / 1000:.2f} s, HAProxy out +{out_s:.2f} s "
           f"({fenced.get('haproxy', 'no socket')}), key deleted +{fenced['t'] - died:.2f} s")
    if routed is not None:
        out += f", {routed['leader']} routed +{routed['t'] - died:.2f} s ({routed['haproxy']})"
    return out


def _dist(xs: list[float]) -> str:
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f} s" if xs else "-"


def fencing_suite(runs: int, freeze_runs: int, quorum_runs: int, outage: int, planned_runs: int = 0,
                  scope: str = "pgha-bench-fence", port_base: int = 26050) -> None:
    """Hard-kill fenced vs unfenced, freeze, etcd-quorum-loss failsafe on vs off, on one cluster."""
    FENCE = fence_spec(scope, port_base)  # noqa: N806 - the suite's one cluster
    eng = local_engine()
    fencer = FENCE.container(FENCE.fencer_member)
    gaps: dict[str, list[float]] = {}
    lost: dict[str, int] = {}

    def record(name: str, r: DrillResult, i: int) -> None:
        gaps.setdefault(name, []).append(r.write_gap_s)
        lost[name] = lost.get(name, 0) + len(r.lost_writes)
        print(f"run {i + 1} {name:32} write gap {r.write_gap_s:6.2f} s  lost {len(r.lost_writes)}  "
              f"acked {r.writes_acked}  whole after {r.whole_s} s", flush=True)

    try:
        eng.remove_labelled(FENCE.scope, volumes=True)
        images.ensure_image(FENCE)
        bootstrap(FENCE)
        for i in range(runs):
            since = time.time()
            r = drill(FENCE, DrillKind.HARD_KILL)
            record("hard-kill, fenced", r, i)
            print(f"      watcher: {fencer_timing(FENCE, since)}", flush=True)
            print("      " + next((ln for ln in r.timeline.splitlines() if ln.startswith("writes")), ""), flush=True)
            eng.stop(fencer, timeout=5)
            try:
                record("hard-kill, unfenced (ttl)", drill(FENCE, DrillKind.HARD_KILL), i)
            finally:
                eng.start(fencer)
        for i in range(planned_runs):  # the watcher's runtime-API calls must not slow a planned failover
            for kind in (DrillKind.GRACEFUL_STOP, DrillKind.SWITCHOVER):
                record(f"{kind.value}, watcher running", drill(FENCE, kind), i)
                eng.stop(fencer, timeout=5)
                try:
                    record(f"{kind.value}, watcher stopped", drill(FENCE, kind), i)
                finally:
                    eng.start(fencer)
        for i in range(freeze_runs):
            record(f"freeze {FENCE.timing.ttl + 5}s", drill(FENCE, DrillKind.FREEZE), i)
        off = FENCE.model_copy(update={"failsafe_mode": False})
        for i in range(quorum_runs):
            record(f"etcd-quorum-loss {outage}s, failsafe on", drill(FENCE, DrillKind.ETCD_QUORUM_LOSS, seconds=outage), i)
            bootstrap(off)
            try:
                record(f"etcd-quorum-loss {outage}s, failsafe off",
                       drill(off, DrillKind.ETCD_QUORUM_LOSS, seconds=outage), i)
            finally:
                bootstrap(FENCE)
    finally:
        eng.remove_labelled(FENCE.scope, volumes=True)
    print()
    print("| drill | write gap min / median / max | runs | lost writes (all runs) |")
    print("|---|---|---|---|")
    for name, xs in gaps.items():
        print(f"| {name} | {_dist(xs)} | {len(xs)} | {lost[name]} |")
    f, u = gaps.get("hard-kill, fenced"), gaps.get("hard-kill, unfenced (ttl)")
    if f and u:
        print(f"\nratio fenced/unfenced (medians): {statistics.median(f) / statistics.median(u):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kinds", default="switchover,graceful-stop,hard-kill")
    ap.add_argument("--suite", choices=["profiles", "fencing"], default="profiles")
    ap.add_argument("--freeze-runs", type=int, default=3)
    ap.add_argument("--quorum-runs", type=int, default=1)
    ap.add_argument("--outage", type=int, default=60, help="etcd-quorum-loss seconds")
    ap.add_argument("--planned-runs", type=int, default=0, help="graceful-stop and switchover, watcher on vs off")
    ap.add_argument("--scope", default="pgha-bench-fence", help="the fencing suite's cluster scope")
    ap.add_argument("--port-base", type=int, default=26050, help="its R/W port; R/O and stats the next two")
    args = ap.parse_args()
    if args.suite == "fencing":
        fencing_suite(args.runs, args.freeze_runs, args.quorum_runs, args.outage, args.planned_runs,
                      args.scope, args.port_base)
        return
    kinds = [DrillKind(k) for k in args.kinds.split(",")]
    gaps: dict[tuple[str, str], list[float]] = {}
    lost: dict[tuple[str, str], int] = {}
    try:
        for spec in PROFILES.values():
            local_engine().remove_labelled(spec.scope, volumes=True)
            images.ensure_image(spec)
            bootstrap(spec)
        for i in range(args.runs):
            for kind in kinds:
                for name, spec in PROFILES.items():
                    r = drill(spec, kind)
                    gaps.setdefault((kind.value, name), []).append(r.write_gap_s)
                    lost[(kind.value, name)] = lost.get((kind.value, name), 0) + len(r.lost_writes)
                    print(f"run {i + 1} {kind.value:14} {name:17} write gap {r.write_gap_s:6.2f} s  "
                          f"read gap {r.read_gap_s:5.2f} s  lost {len(r.lost_writes)}  "
                          f"whole after {r.whole_s} s", flush=True)
    finally:
        for spec in PROFILES.values():
            local_engine().remove_labelled(spec.scope, volumes=True)
    print()
    print("| drill | fast: median write gap | Patroni defaults: median write gap | ratio fast/defaults "
          "| lost writes (all runs) | runs |")
    print("|---|---|---|---|---|---|")
    for kind in kinds:
        f, d = statistics.median(gaps[(kind.value, "fast")]), statistics.median(gaps[(kind.value, "patroni-defaults")])
        total_lost = lost[(kind.value, "fast")] + lost[(kind.value, "patroni-defaults")]
        print(f"| {kind.value} | {f:.2f} s | {d:.2f} s | {f / d:.2f} | {total_lost} | {args.runs} |")


if __name__ == "__main__":
    main()
