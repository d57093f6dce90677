"""More workers in the `pgha` pool as plain processes: `pgha worker start|stop --name`.

The local server and worker are containers the Docker engine supervises (tasks/control_plane.py).
A worker started here, on this machine or on another one for a remote server, is a process
group pgha started with its own session: its pid and log live in `<state>/server/`, and nothing
restarts it after a crash or a reboot (run it under the machine's own supervisor for that).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from stack.errors import StateError, UsageError
from tasks.prefect_auth import AUTH_FILE, basic_auth_header, read_auth_file
from tasks.prefect_processes import Proc, _group_alive  # noqa: F401 - _group_alive: the unit tests use it here
from tasks.prefect_server import POOL, ROOT, ServerError, env

WORKER_NAME_RE = r"^[a-z0-9][a-z0-9-]{0,40}$"


def _worker_proc(name: str) -> Proc:
    if not re.match(WORKER_NAME_RE, name):
        raise UsageError(f"worker name must be 1-41 lowercase letters, digits and dashes, not {name!r}")
    return Proc(f"worker-{name}")


def start_extra_worker(name: str, api: str | None, auth_path: Path | None) -> str:
    """One more worker in the `pgha` pool: on this machine for the local server, or for a remote one
    (`api`, with a copy of its auth file). Workers share the pool: a run goes to whichever polls first,
    so runs scheduled while one worker's machine is down are picked up by another."""
    proc = _worker_proc(name)
    if (pid := proc.pid()) is not None:
        return f"worker {name} already running (pid {pid})"
    e = env()
    if api:
        if not api.startswith(("http://", "https://")) or not api.rstrip("/").endswith("/api"):
            raise UsageError(f"--api-url must be the server's API URL (http[s]://HOST:PORT/api), not {api[:60]!r}")
        e.update(PREFECT_API_URL=api.rstrip("/"), PREFECT_UI_URL=api.rstrip("/").removesuffix("/api"))
        e.pop("PREFECT_API_AUTH_STRING", None)
    if auth_path is not None:
        e["PREFECT_API_AUTH_STRING"] = read_auth_file(auth_path)
    try:
        headers = basic_auth_header(e.get("PREFECT_API_AUTH_STRING"))
        r = httpx.post(f"{e['PREFECT_API_URL']}/work_pools/{POOL}/workers/filter", json={}, headers=headers,
                       timeout=10, trust_env=False)
    except httpx.HTTPError as exc:
        raise ServerError(f"the Prefect API {e['PREFECT_API_URL']} does not answer: {type(exc).__name__}") from None
    if r.status_code == 401:
        raise UsageError(f"the Prefect API {e['PREFECT_API_URL']} refused the credentials (401): pass --auth-file "
                         f"with a copy of the server's {AUTH_FILE}")
    if r.status_code == 404:
        raise StateError(f"work pool {POOL} does not exist on {e['PREFECT_API_URL']}; run `pgha server start` there")
    p = proc.start(["worker", "start", "--pool", POOL, "--type", "process", "--name", f"pgha-{name}"], environ=e, cwd=ROOT)
    return f"worker {name} started (pid {p.pid}) for {e['PREFECT_API_URL']}, log {proc.log_file}"


def stop_extra_worker(name: str) -> str:
    proc = _worker_proc(name)
    return f"worker {name} stopped" if proc.stop() else f"worker {name} was not running"


