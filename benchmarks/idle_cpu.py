"""Idle CPU: what an idle cluster costs the machine, with its health checks every 15 s (pgha now)
against every 5 s (pgha before), in the same run.

One cluster at a time (the engine's CPU cannot be split between two clusters running at once), in
alternating rounds:
- `15s`: the cluster as pgha makes it (`stack.layout.HEALTH_INTERVAL_S`);
- `5s`: the same cluster with the interval patched to 5 s before it is made.
Each cluster idles `--settle` seconds (past the health checks' 30 s grace), then its CPU is read over
`--seconds`: its containers' cgroups (every process in them, the health checks' commands too) and
the engine's processes (`dockerd`, `containerd`, the shims, with the `runc` runs they reaped), so a
neighbour's load on a shared machine is not counted. Prints every window, the medians in
CPU-seconds per minute and % of one core, and the ratio 15s / 5s.

    .venv/bin/python benchmarks/idle_cpu.py [--runs 2] [--seconds 40] [--settle 35] [--nodes 2] [--etcd 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _cpu import engine_processes
from _env import private_env

WORK = private_env("idle-cpu")

from flows.bootstrap import bootstrap  # noqa: E402
from stack import layout  # noqa: E402
from stack.spec import parse_spec  # noqa: E402
from tasks import docker_engine  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402

SCOPE = "pgha-bench-idle"
PORTS = {"rw": 26690, "ro": 26691, "stats": 26692, "pool": 26693}


def container_cpu_s(ids: list[str]) -> float:
    """CPU-seconds used so far by the containers' cgroups (v1 cpuacct or v2 cpu.stat)."""
    total = 0.0
    for cid in ids:
        v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage")
        v2 = Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat")
        if v1.exists():
            total += int(v1.read_text()) / 1e9
        elif v2.exists():
            total += int(v2.read_text().split("usage_usec ")[1].split()[0]) / 1e6
        else:
            raise SystemExit(f"no cgroup CPU counter for container {cid[:12]}")
    return total


def engine_cpu_s() -> dict[tuple[str, str], float]:
    """Each engine process's CPU so far, its reaped children's included, by (pid, start time)."""
    return {k: cpu for k, (cpu, _) in engine_processes().items()}


def window(ids: list[str], seconds: float) -> tuple[float, float]:
    """(containers, engine) CPU-seconds per minute over `seconds`."""
    c0, e0, t = container_cpu_s(ids), engine_cpu_s(), time.monotonic()
    time.sleep(seconds)
    c1, e1, dt = container_cpu_s(ids), engine_cpu_s(), time.monotonic() - t
    eng = sum(v - e0.get(k, 0.0) for k, v in e1.items())
    return (c1 - c0) * 60 / dt, eng * 60 / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--settle", type=float, default=35)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--etcd", type=int, default=1)
    args = ap.parse_args()
    spec = parse_spec({"scope": SCOPE, "nodes": args.nodes, "etcd_members": args.etcd, "ports": PORTS}, "(bench)")
    eng = local_engine()
    seen: dict[str, list[tuple[float, float]]] = {"15s": [], "5s": []}
    try:
        for i in range(args.runs):
            order = (("15s", layout.HEALTH_INTERVAL_S), ("5s", 5))
            for name, interval in order if i % 2 == 0 else order[::-1]:
                eng.remove_labelled(SCOPE, volumes=True)
                docker_engine.HEALTH_INTERVAL_S = interval  # what the containers are created with
                bootstrap(spec)
                time.sleep(args.settle)
                ids = [str(c.id) for c in eng.client.containers.list(filters={"label": f"pgha.cluster={SCOPE}"})]
                seen[name].append(window(ids, args.seconds))
                cs, es = seen[name][-1]
                print(f"run {i + 1} {name:>4}: containers {cs:5.2f} + engine {es:5.2f} = {cs + es:5.2f} CPU-s/min "
                      f"({len(ids)} containers)", flush=True)
    finally:
        eng.remove_labelled(SCOPE, volumes=True)
    med = {k: (statistics.median(c for c, _ in v), statistics.median(e for _, e in v)) for k, v in seen.items()}
    print(f"\nidle {args.etcd} etcd / {args.nodes} nodes (defaults: pooler, fencing, backups), medians of {args.runs}:")
    for k, (c, e) in med.items():
        print(f"  health checks every {k:>3}: containers {c:5.2f} + engine {e:5.2f} = {c + e:5.2f} CPU-s per minute "
              f"= {(c + e) / 60 * 100:4.1f} % of one core")
    print(f"  ratio 15s / 5s: {sum(med['15s']) / sum(med['5s']):.2f}x")


if __name__ == "__main__":
    main()
