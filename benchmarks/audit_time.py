"""How long `pgha audit` and `pgha status` take, beside `patronictl list`, in the same run.

Brings up a small cluster (scope pgha-bench-at: 1 etcd, 2 nodes, pooler off) unless `--scope`
names one already running from this state directory, starts a Prefect server of its own
(`prefect server start` on 127.0.0.1:`--server-port`; 0: none), then alternates, `--runs` times:
- `patronictl list` through `docker exec` in a node (the baseline);
- `pgha status` as a user runs it (a fresh process);
- `pgha audit` as a user runs it, with the server running (PREFECT_API_URL exported) and,
  with `--ephemeral`, without one (the CLI starts its own API for the run);
then prints every round, the medians and their ratio to `patronictl list`, and where the
snapshot's time goes (each part of one in-process `tasks.observe.observe`).
Removes what it brought up.

`--compare DIR` also times `pgha audit` (server running) from another checkout, e.g. the main
branch's, in the same rounds: a before/after on the same machine at the same load.

    .venv/bin/python benchmarks/audit_time.py [--runs 5] [--server-port 23620] [--port-base 23620] [--ephemeral]
                                              [--scope S] [--compare DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _env import ROOT, private_env  # first: sets the env before pgha is imported

SCOPE = "pgha-bench-at"


def spec_yaml(scope: str, base: int) -> str:
    return f"""scope: {scope}
nodes: 2
etcd_members: 1
ports: {{rw: {base + 1}, ro: {base + 2}, stats: {base + 3}}}
pooler: {{enabled: false}}
"""


AUDIT_CODES = (0, 1)  # 1: a critical finding (a timeout on a loaded machine): the run is complete all the same
CPU: dict[str, list[float]] = {}  # what -> CPU seconds (user + system) of each run: steadier than wall time on a shared machine


def timed(cmd: list[str], env: dict[str, str], ok: str = "", cwd: Path = ROOT, what: str = "",
          codes: tuple[int, ...] = (0,)) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if what:
        CPU.setdefault(what, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if r.returncode not in codes or ok not in r.stdout:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-400:]}")
    return took


def start_server(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    import httpx

    with log.open("ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], env=dict(env, PREFECT_UI_ENABLED="0"), stdout=fh, stderr=fh,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the Prefect server exited: {log.read_text()[-800:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("the Prefect server did not answer within 300 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--server-port", type=int, default=23620, help="Prefect server port (0: no server)")
    ap.add_argument("--port-base", type=int, default=23620,
                    help="the cluster's ports are the next three (R/W, R/O, stats); another base also names the scope")
    ap.add_argument("--ephemeral", action="store_true", help="also time `pgha audit` without a server")
    ap.add_argument("--scope", default="", help="a cluster already up from this PGHA_STATE_DIR (not removed)")
    ap.add_argument("--compare", type=Path, default=None, help="another checkout whose `pgha audit` is timed too")
    args = ap.parse_args()
    if args.scope:
        scope = args.scope  # the caller's state directory and Prefect home: keep the environment as it is
    else:
        work = private_env("audit-time")
        scope = SCOPE if args.port_base == 23620 else f"{SCOPE}-{args.port_base}"
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    cli = [sys.executable, "-m", "cli"]
    from stack.spec import load_spec
    from tasks.host.generations import stored_spec_file

    spec_file: Path | None = None
    if not args.scope:
        spec_file = work / "spec.yaml"
        spec_file.write_text(spec_yaml(scope, args.port_base))
        print(f"bringing up {scope} ...", flush=True)
        timed([*cli, "up", "--spec", str(spec_file)], env)
    spec = load_spec(stored_spec_file(scope))
    server = None
    times: dict[str, list[float]] = {"patronictl list": [], "pgha status": []}
    try:
        if args.server_port:
            home = Path(env.get("PREFECT_HOME") or Path.home() / ".prefect")
            server = start_server(args.server_port, env, home / "bench-server.log")
            times["pgha audit (server running)"] = []
            if args.compare:
                times[f"pgha audit (server), {args.compare.name}"] = []
        if args.ephemeral or not args.server_port:
            times["pgha audit (no server)"] = []
        server_env = dict(env, PREFECT_API_URL=f"http://127.0.0.1:{args.server_port}/api")
        # Warm-up: the first audit takes the baseline, the first run of each kind fills caches.
        timed([*cli, "audit", "--scope", scope], server_env if server else env, codes=AUDIT_CODES)
        for i in range(args.runs):
            now = {"patronictl list": timed(["docker", "exec", spec.container("pg-1"), "patronictl", "-c",
                                             "/run/pgha/patroni.yml", "list"], env, "Leader"),
                   "pgha status": timed([*cli, "status", "--scope", scope], env, what="pgha status")}
            if server:
                k = "pgha audit (server running)"
                now[k] = timed([*cli, "audit", "--scope", scope, "--json"], server_env, what=k, codes=AUDIT_CODES)
                if args.compare:
                    k = f"pgha audit (server), {args.compare.name}"
                    now[k] = timed([*cli, "audit", "--scope", scope, "--json"], server_env, cwd=args.compare.resolve(),
                                   what=k, codes=AUDIT_CODES)
            if "pgha audit (no server)" in times:
                k = "pgha audit (no server)"
                now[k] = timed([*cli, "audit", "--scope", scope, "--json"], env, what=k, codes=AUDIT_CODES)
            for k, v in now.items():
                times[k].append(v)
            print(f"round {i + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in now.items()), flush=True)
        from tasks.host.generations import deployed
        from tasks.observe import AUDIT_PARTS, STATUS_PARTS, observe

        audit_snap = observe(deployed(spec), AUDIT_PARTS, deep=True)
        status_snap = observe(deployed(spec), STATUS_PARTS, deep=False)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if spec_file is not None:
            subprocess.run([*cli, "down", "--volumes", "--yes", "--purge-backups", "--spec", str(spec_file)],
                           cwd=ROOT, env=env, capture_output=True, check=False)
    base = statistics.median(times["patronictl list"])
    print(f"\n{scope}: 1 etcd, 2 nodes, pooler off; medians of {args.runs} runs; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}\n")
    print(f"| {'what':32} | median | min-max | ratio to patronictl list | CPU (user+sys), median |")
    print(f"|{'-' * 34}|--------|---------|--------------------------|------------------------|")
    for k, v in times.items():
        if v:
            med = statistics.median(v)
            cpu = f"{statistics.median(CPU[k]):.2f} s" if CPU.get(k) else ""
            print(f"| {k:32} | {med:5.2f} s | {min(v):.2f}-{max(v):.2f} | {med / base:24.1f} | {cpu:>22} |")
    for name, snap in (("audit", audit_snap), ("status", status_snap)):
        parts = ", ".join(f"{p} {t:.2f}" for p, t in sorted(snap.took_s.items(), key=lambda x: -x[1]))
        print(f"\n{name} snapshot, in-process: {snap.elapsed_s:.2f} s (parts side by side, slowest first: {parts})")


if __name__ == "__main__":
    main()
