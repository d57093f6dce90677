"""What the Prefect hardening costs: the global concurrency limit vs the host flock, and basic auth.

Starts a bare Prefect server with basic auth (no deployments: `prefect server start` with
PREFECT_SERVER_API_AUTH_STRING, 127.0.0.1:`--port`, temp PREFECT_HOME), then, `--runs` times
alternating:
- the host flock alone (`tasks.host.lock.mutating`: acquire + release), the baseline;
- the cluster guard with a server (`tasks.cluster_limit.cluster_limit` + the flock: acquire,
  holder variable set, release, variable unset);
- a refused second acquire of a held limit (what a second mutating run pays before its one line);
- one authenticated API read vs the same read on a server without auth (a second bare server),
  to show what basic auth adds per request.
Prints every run, the medians and the ratios; stops both servers.

    .venv/bin/python benchmarks/prefect_guard.py [--runs 9] [--port 26550]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SECRET = "pgha:bench-" + "x" * 32


def start(port: int, home: Path, auth: bool) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
    if auth:
        env["PREFECT_SERVER_API_AUTH_STRING"] = SECRET
    log = (home / "server.log").open("ab")
    p = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1",
                          "--port", str(port)], env=env, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2, trust_env=False).status_code == 200:
                return p
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server on {port} did not start; see {home / 'server.log'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--port", type=int, default=26550)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgha-guard-bench-"))
    (work / "a").mkdir()
    (work / "b").mkdir()
    servers = []
    try:
        t0 = time.perf_counter()
        servers.append(start(args.port, work / "a", auth=True))
        print(f"server (auth) up in {time.perf_counter() - t0:.1f} s", flush=True)
        servers.append(start(args.port + 1, work / "b", auth=False))
        os.environ.update(PGHA_STATE_DIR=str(work / "state"), PREFECT_API_URL=f"http://127.0.0.1:{args.port}/api",
                          PREFECT_API_AUTH_STRING=SECRET, PREFECT_HOME=str(work / "client"))
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
        from stack.errors import StateError
        from tasks.cluster_limit import cluster_limit, in_use
        from tasks.host.lock import mutating

        assert in_use()
        header = {"Authorization": "Basic " + base64.b64encode(SECRET.encode()).decode()}
        rows: dict[str, list[float]] = {"flock only": [], "limit + flock": [], "refused (limit held)": [],
                                        "API read, auth": [], "API read, no auth": []}
        with cluster_limit("pgha-bench-g", "warm-up"):
            pass
        with httpx.Client(trust_env=False, timeout=10) as http:
            for i in range(args.runs):
                t = time.perf_counter()
                with mutating("pgha-bench-g", "bench"):
                    pass
                rows["flock only"].append(time.perf_counter() - t)
                t = time.perf_counter()
                with cluster_limit("pgha-bench-g", "bench"), mutating("pgha-bench-g", "bench"):
                    pass
                rows["limit + flock"].append(time.perf_counter() - t)
                with cluster_limit("pgha-bench-h", "holder"):
                    t = time.perf_counter()
                    try:
                        with cluster_limit("pgha-bench-h", "second"):
                            raise SystemExit("the second acquire was not refused")
                    except StateError:
                        rows["refused (limit held)"].append(time.perf_counter() - t)
                print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1] * 1000:.1f} ms" for k, v in rows.items() if v),
                      flush=True)
            # Basic auth per request: both servers idle, interleaved, 5x the runs (single reads are noisy).
            for _ in range(5 * args.runs):
                t = time.perf_counter()
                assert http.post(f"http://127.0.0.1:{args.port}/api/flows/filter", json={},
                                 headers=header).status_code == 200
                rows["API read, auth"].append(time.perf_counter() - t)
                t = time.perf_counter()
                assert http.post(f"http://127.0.0.1:{args.port + 1}/api/flows/filter", json={}).status_code == 200
                rows["API read, no auth"].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in rows.items()}
        print("\nmedians (ms):")
        for k, v in med.items():
            print(f"  {k:24s} {v * 1000:8.1f}")
        print(f"\nlimit + flock / flock only:   {med['limit + flock'] / med['flock only']:.0f}x "
              f"(+{(med['limit + flock'] - med['flock only']) * 1000:.0f} ms per mutating flow)")
        print(f"API read auth / no auth:      {med['API read, auth'] / med['API read, no auth']:.2f}x")
    finally:
        for p in servers:
            try:
                os.killpg(p.pid, 15)
                p.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, 9)


if __name__ == "__main__":
    main()
