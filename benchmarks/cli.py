"""CLI benchmark: how fast `pgha` answers, side by side with `patronictl list` in the same run.

Brings up a 2-node / 1-etcd cluster (scope pgha-bench-op) and a Prefect server (`pgha server
start`, 127.0.0.1:`--server-port`) in a temp state directory, then alternates, `--runs` times:
- `docker exec <node> patronictl list` (the baseline);
- `pgha status` (read-only, no flow: must not import Prefect);
- `pgha audit` (the health-audit flow) with the server running, found by the CLI itself;
- a no-op `pgha up` (nothing to change) with the server running;
- `pgha audit` and a no-op `pgha up` with PGHA_NO_SERVER=1 (the ephemeral API), every
  `--ephemeral-every` round (slow: for comparison only).
Prints every run, the medians and the ratios to `patronictl list`; removes the cluster and
stops the server.

    .venv/bin/python benchmarks/cli.py [--runs 5] [--ephemeral-every 5] [--server-port 26392] [--keep]

Goals: status <= 1.5x patronictl list; audit <= 3 s with the server; no-op up <= 5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCOPE = "pgha-bench-op"
SPEC = {"scope": SCOPE, "nodes": 2, "etcd_members": 1, "ports": {"rw": 26380, "ro": 26381, "stats": 26382}, "pooler": {"enabled": False}}


def timed(cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if r.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-400:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ephemeral-every", type=int, default=5)
    ap.add_argument("--server-port", type=int, default=26392)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pgha-cli-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PGHA_NO_SERVER", "PGHA_SPEC")}
    env.update(PGHA_STATE_DIR=str(work / "state"), PREFECT_HOME=str(work / "prefect"),
               PREFECT_LOCAL_STORAGE_PATH=str(work / "prefect" / "storage"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_LOGGING_LEVEL="WARNING", PGHA_SERVER_PORT=str(args.server_port))
    no_server = dict(env, PGHA_NO_SERVER="1")
    spec_file = work / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    pgha = [sys.executable, "-m", "cli"]
    patronictl = ["docker", "exec", f"{SCOPE}-pg-1", "patronictl", "-c", "/run/pgha/patroni.yml", "list"]
    rows: dict[str, list[float]] = {"patronictl list": [], "pgha status": [], "pgha audit (server)": [],
                                    "pgha up no-op (server)": [], "pgha audit (ephemeral)": [],
                                    "pgha up no-op (ephemeral)": []}
    try:
        print(f"server start: {timed([*pgha, 'server', 'start', '--no-alerts'], env):.1f} s", flush=True)
        print(f"up: {timed([*pgha, 'up', '--spec', str(spec_file)], env):.1f} s", flush=True)
        for i in range(args.runs):
            rows["patronictl list"].append(timed(patronictl, env))
            rows["pgha status"].append(timed([*pgha, "status", "--scope", SCOPE], env))
            rows["pgha audit (server)"].append(timed([*pgha, "audit", "--scope", SCOPE], env))
            rows["pgha up no-op (server)"].append(timed([*pgha, "up", "--spec", str(spec_file)], env))
            if i % args.ephemeral_every == 0:
                rows["pgha audit (ephemeral)"].append(timed([*pgha, "audit", "--scope", SCOPE], no_server))
                rows["pgha up no-op (ephemeral)"].append(timed([*pgha, "up", "--spec", str(spec_file)], no_server))
            print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in rows.items() if len(v) > 0), flush=True)
    finally:
        if not args.keep:
            subprocess.run([*pgha, "down", "--volumes", "--yes", "--purge-backups", "--spec", str(spec_file)],
                           cwd=ROOT, env=env, capture_output=True, check=False)
            subprocess.run([*pgha, "server", "stop"], cwd=ROOT, env=env, capture_output=True, check=False)
    base = statistics.median(rows["patronictl list"])
    print(f"\nmedians over {args.runs} runs (ephemeral every {args.ephemeral_every}); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for k, v in rows.items():
        if v:
            m = statistics.median(v)
            print(f"  {k:28} {m:6.2f} s   x{m / base:5.2f} patronictl list   (n={len(v)}, min {min(v):.2f})")


if __name__ == "__main__":
    main()
