"""Audit benchmark: the health-audit flow vs `patronictl list`, side by side on one healthy cluster.

Brings up a 3-node / 3-etcd cluster (scope pgha-bench-au1), then alternates, `--runs` times:
- `patronictl list` through `docker exec` in a node (the baseline: one view of Patroni only);
- the `health-audit` flow called in-process (Prefect's API already warm; every check, ~45 rows);
- `pgha audit` as a user runs it (a fresh process: Python and Prefect start-up, the ephemeral
  API, the flow), every `--cli-every` round;
- the same against a running Prefect server (started here on 127.0.0.1:`--server-port`, stopped
  at the end), as after `make server` with PREFECT_API_URL exported.
Prints every run, the medians and the ratio to `patronictl list`; removes the cluster.

    .venv/bin/python benchmarks/audit.py [--runs 5] [--cli-every 2] [--server-port 24201] [--keep]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from _env import ROOT, private_env  # first: sets the env before pgha is imported

WORK = private_env("audit")

from flows.audit import audit  # noqa: E402
from flows.bootstrap import bootstrap  # noqa: E402
from stack.results import AuditReport  # noqa: E402
from stack.spec import parse_spec  # noqa: E402
from tasks import images  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402

SPEC = parse_spec({"scope": "pgha-bench-au1", "nodes": 3, "etcd_members": 3,
                   "ports": {"rw": 25480, "ro": 25481, "stats": 28480}, "pooler": {"enabled": False}})


def patronictl_list() -> float:
    t0 = time.perf_counter()
    r = subprocess.run(["docker", "exec", SPEC.container("pg-1"), "patronictl", "-c", "/run/pgha/patroni.yml", "list"],
                       capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if r.returncode != 0 or "Leader" not in r.stdout:
        raise SystemExit(f"patronictl list failed: {r.stderr.strip()[:300]}")
    return took


def audit_flow() -> tuple[float, int]:
    t0 = time.perf_counter()
    state = audit(SPEC, return_state=True)
    took = time.perf_counter() - t0
    report = state.result(raise_on_failure=False)
    if not isinstance(report, AuditReport) or report.status == "critical":
        raise SystemExit(f"audit of a healthy cluster was not ok: {getattr(state, 'message', report)}")
    return took, len(report.findings)


def audit_cli(api_url: str | None = None) -> float:
    env = dict(os.environ, **({"PREFECT_API_URL": api_url} if api_url else {}))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cli", "audit", "--scope", SPEC.scope, "--json"], cwd=ROOT,
                       env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"pgha audit failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cli-every", type=int, default=2, help="run `pgha audit` every N rounds (0: never)")
    ap.add_argument("--server-port", type=int, default=24201, help="Prefect server port (0: no server runs)")
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = ap.parse_args()
    times: dict[str, list[float]] = {"patronictl list": [], "health-audit flow (in-process)": [],
                                     "pgha audit (CLI, ephemeral API)": [], "pgha audit (CLI, server)": []}
    rows = 0
    api_url = None
    if args.server_port:
        os.environ["PGHA_SERVER_PORT"] = str(args.server_port)
        from tasks import prefect_server
        from tasks.control_image import ensure_control_image

        print(prefect_server.start_server(ensure_control_image()[0]), flush=True)
        api_url = prefect_server.api_url()
    try:
        local_engine().remove_labelled(SPEC.scope, volumes=True)
        images.ensure_image(SPEC)
        bootstrap(SPEC)
        audit_flow()  # warm-up: starts the ephemeral API and takes the first baseline
        for i in range(args.runs):
            now: dict[str, float] = {"patronictl list": patronictl_list()}
            now["health-audit flow (in-process)"], rows = audit_flow()
            if args.cli_every and i % args.cli_every == 0:
                now["pgha audit (CLI, ephemeral API)"] = audit_cli()
                if api_url:
                    now["pgha audit (CLI, server)"] = audit_cli(api_url)
            for k, v in now.items():
                times[k].append(v)
            print(f"round {i + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in now.items()), flush=True)
    finally:
        if not args.keep:
            local_engine().remove_labelled(SPEC.scope, volumes=True)
        if api_url:
            from tasks import prefect_server

            prefect_server.stop_all()
    base = statistics.median(times["patronictl list"])
    print(f"\nhealthy 3-node / 3-etcd cluster, {rows} audit findings, medians of {args.runs} "
          f"(CLI: {len(times['pgha audit (CLI, ephemeral API)'])}), shared 2-core machine:\n")
    print(f"| {'what':34} | median | ratio to patronictl list |")
    print(f"|{'-' * 36}|--------|--------------------------|")
    for k, v in times.items():
        if v:
            med = statistics.median(v)
            print(f"| {k:34} | {med:5.2f} s | {med / base:24.1f} |")


if __name__ == "__main__":
    main()
