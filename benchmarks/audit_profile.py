"""Where one `pgha audit` process spends its time: its phases (wall and CPU) and every API request.

Runs `pgha audit --scope S` once in this process, as a user's run does (the CLI's own `main`),
against the Prefect API of the environment (export PREFECT_API_URL for a running server; the
cluster must be up from this PGHA_STATE_DIR). Prints, in order: when the CLI was imported, the
flow module imported, the flow body entered and left (with the gathering, the artifacts and the
events inside it) and the process done, each with the CPU seconds used so far (user + sys, all
threads); then every HTTP request sent through httpx (Prefect's client, HAProxy's stats page:
the Docker engine and PostgreSQL are not HTTP through httpx and are not listed) with its start,
duration and thread.

    PREFECT_API_URL=http://127.0.0.1:PORT/api .venv/bin/python benchmarks/audit_profile.py --scope S
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
T0 = time.perf_counter()


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


PHASES: list[tuple[float, float, str]] = []
REQUESTS: list[tuple[float, float, str, str, str]] = []


def mark(what: str) -> None:
    PHASES.append((time.perf_counter() - T0, cpu(), what))


def log_requests() -> None:
    import httpx

    send, asend = httpx.Client.send, httpx.AsyncClient.send

    def note(t: float, request: Any) -> None:
        REQUESTS.append((t - T0, time.perf_counter() - t, request.method, request.url.path,
                         threading.current_thread().name))

    def sync_send(self: Any, request: Any, *a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return send(self, request, *a, **k)
        finally:
            note(t, request)

    async def async_send(self: Any, request: Any, *a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return await asend(self, request, *a, **k)
        finally:
            note(t, request)

    httpx.Client.send = sync_send  # type: ignore[method-assign]
    httpx.AsyncClient.send = async_send  # type: ignore[method-assign]


def around(module: Any, name: str) -> None:
    fn: Callable[..., Any] = getattr(module, name)

    def wrapped(*a: Any, **k: Any) -> Any:
        mark(f"> {name}")
        try:
            return fn(*a, **k)
        finally:
            mark(f"< {name}")

    setattr(module, name, wrapped)


def report() -> None:
    mark("Prefect's exit handlers done (events and logs sent)")
    print("\nphases (seconds since start; CPU so far, all threads):", file=sys.stderr)
    for t, c, what in PHASES:
        print(f"  {t:6.2f} s  CPU {c:5.2f} s  {what}", file=sys.stderr)
    print(f"\n{len(REQUESTS)} HTTP requests through httpx ({sum(r[1] for r in REQUESTS):.2f} s summed):", file=sys.stderr)
    for start, took, method, path, thread in sorted(REQUESTS):
        print(f"  {start:6.2f} s  {took * 1000:5.0f} ms  {method:5} {path}  [{thread}]", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scope", required=True)
    args = ap.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        print("note: PREFECT_API_URL is unset: the run uses pgha's server if one runs, else an ephemeral API",
              file=sys.stderr)
    import atexit

    atexit.register(report)  # registered first: runs last, after Prefect drained its events and logs
    log_requests()
    mark("start (httpx imported)")
    import cli.app
    import cli.core

    mark("CLI imported")
    run_flow = cli.core.run_flow

    def run(*a: Any, **k: Any) -> Any:
        import flows.audit as fa

        mark("flow module imported")
        for name in ("_audit", "gather", "_artifacts", "leader_changed"):
            around(fa, name)
        try:
            return run_flow(*a, **k)
        finally:
            mark("flow run ended")

    import cli.drill

    cli.drill.run_flow = run  # type: ignore[attr-defined]
    sys.argv = ["pgha", "audit", "--scope", args.scope, "--json"]
    devnull = open(os.devnull, "w")  # noqa: SIM115 - the report is not the point
    sys.stdout = devnull
    try:
        cli.app.main()
    except SystemExit as exc:
        sys.stdout = sys.__stdout__
        mark(f"exit {exc.code}")


if __name__ == "__main__":
    main()
