"""The default pooler's cost: PgBouncer's memory and CPU, and pgbench TPS through it vs the R/W port.

One 2-node / 1-etcd cluster in the default shape (the pooler on by default, TLS on: clients
speak TLS to HAProxy's R/W port and to the pooler alike). In the same run, alternating:

* pgbench TPC-B-like, 20 clients, `--seconds` each, persistent connections: direct (R/W port)
  vs pooled (`ports.pool`);
* the same with one connection per transaction (`-C`): every transaction pays a TLS and SCRAM
  handshake with the server it connects to (PostgreSQL through HAProxy, or PgBouncer);
* the pooler container's memory (cgroup usage less page cache) idle after start-up, and its
  memory and CPU (% of one core) sampled every second while the pooled runs load it.

Medians of `--runs` (>= 3). Bounded: each pgbench run lasts `--seconds`. The host's pgbench is
used (127.0.0.1 ports only).

    .venv/bin/python benchmarks/pooler_cost.py [--runs 3] [--seconds 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import threading
import time

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("poolcost")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")

import _pgbench  # noqa: E402

from flows.bootstrap import bootstrap  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from tasks import images  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402

# `pooler` left out: the default (on, without hosts).
SPEC = parse_spec({"scope": "pgha-bench-poolcost", "nodes": 2, "etcd_members": 1, "backup": {"enabled": False},
                   "ports": {"rw": 23200, "ro": 23201, "stats": 23202, "pool": 23203}})
PGBENCH = _pgbench.PGBENCH


def pgbench(spec: ClusterSpec, pooled: bool, seconds: int, *extra: str) -> float:
    """TPS of one pgbench run on the pooler's or the direct R/W port, TLS verify-full on both."""
    return _pgbench.tps(spec, WORK, pooled, seconds, *extra, verify_full=True)


def sample(container: str) -> tuple[float, float]:
    """(memory MiB: usage less page cache, CPU % of one core over the engine's ~1 s window)."""
    st = local_engine().client.containers.get(container).stats(stream=False)
    mem = st.get("memory_stats") or {}
    stats = mem.get("stats") or {}
    cache = stats.get("inactive_file", stats.get("cache", 0)) or 0
    cpu, pre = st.get("cpu_stats") or {}, st.get("precpu_stats") or {}
    d_cpu = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get("total_usage", 0)
    d_sys = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    ncpu = cpu.get("online_cpus") or 1
    pct = 100.0 * d_cpu / d_sys * ncpu if d_sys > 0 else 0.0
    return (int(mem.get("usage") or 0) - int(cache)) / 1048576, pct


class Sampler(threading.Thread):
    """Samples the container's memory and CPU until stopped."""

    def __init__(self, container: str) -> None:
        super().__init__(daemon=True)
        self.container, self.done = container, threading.Event()
        self.mem: list[float] = []
        self.cpu: list[float] = []

    def run(self) -> None:
        while not self.done.is_set():
            m, c = sample(self.container)
            self.mem.append(m)
            self.cpu.append(c)

    def stop(self) -> None:
        self.done.set()
        self.join(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=15, help="length of each pgbench run")
    ap.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    args = ap.parse_args()
    if PGBENCH is None:
        raise SystemExit("this benchmark needs pgbench on the host (Debian: postgresql-client)")
    spec = SPEC
    pooler = spec.container(spec.pooler_member)
    tps: dict[str, list[float]] = {}
    load_mem: list[float] = []
    load_cpu: list[float] = []
    try:
        local_engine().remove_labelled(spec.scope, volumes=True)
        images.ensure_image(spec)
        t0 = time.monotonic()
        bootstrap(spec)
        print(f"cluster up in {time.monotonic() - t0:.1f}s", flush=True)
        time.sleep(5)
        idle = [sample(pooler)[0] for _ in range(3)]
        print(f"pooler idle memory {statistics.median(idle):.1f} MiB", flush=True)
        pgbench(spec, False, 60, "-i", "-q", "-s", "1")
        for i in range(args.runs):
            for name, pooled, extra in (("persistent direct", False, ()), ("persistent pooled", True, ()),
                                        ("per-transaction direct", False, ("-C",)),
                                        ("per-transaction pooled", True, ("-C",))):
                s = Sampler(pooler) if pooled else None
                if s:
                    s.start()
                v = pgbench(spec, pooled, args.seconds, "-c", "20", "-j", "2", "-T", str(args.seconds), *extra)
                if s:
                    s.stop()
                    load_mem.append(max(s.mem, default=0.0))
                    load_cpu.append(statistics.mean(s.cpu) if s.cpu else 0.0)
                tps.setdefault(name, []).append(v)
                print(f"run {i + 1} pgbench {name:24} {v:8.1f} tps"
                      + (f"   pooler: peak {load_mem[-1]:.1f} MiB, mean CPU {load_cpu[-1]:.0f}%" if s else ""),
                      flush=True)
    finally:
        if not args.keep:
            local_engine().remove_labelled(spec.scope, volumes=True)
            shutil.rmtree(WORK, ignore_errors=True)

    print()
    print(f"pooler memory: idle {statistics.median(idle):.1f} MiB, under load (median of the runs' peaks) "
          f"{statistics.median(load_mem):.1f} MiB; CPU under load (median of the runs' means) "
          f"{statistics.median(load_cpu):.0f}% of one core")
    print()
    # The load of a shared machine swings between runs: the same run's ratio says the most.
    print("| pgbench TPC-B, 20 clients, TLS verify-full (median TPS) | direct (R/W port) | pooled "
          "| median of the runs' ratios pooled/direct |")
    print("|---|---|---|---|")
    for kind in ("persistent", "per-transaction"):
        d, p = statistics.median(tps[f"{kind} direct"]), statistics.median(tps[f"{kind} pooled"])
        ratio = statistics.median(b / a for a, b in zip(tps[f"{kind} direct"], tps[f"{kind} pooled"], strict=True))
        print(f"| {kind} connections | {d:.1f} | {p:.1f} | {ratio:.2f} |")
    print(f"\n{args.runs} runs; pgbench {args.seconds}s each")


if __name__ == "__main__":
    main()
