"""More workers in the `pgha` pool as plain processes: `pgha worker start|stop --name`.

The local server and worker are containers the Docker engine supervises (tasks/control_plane.py).
A worker started here, on this machine or on another one for a remote server, is a process
group pgha started with its own session: its pid and log live in `<state>/server/`, and nothing
restarts it after a crash or a reboot (run it under the machine's own supervisor for that).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from stack.errors import StateError, UsageError
from tasks.prefect_auth import AUTH_FILE, basic_auth_header, read_auth_file, server_dir
from tasks.prefect_server import POOL, ROOT, ServerError, env

WORKER_NAME_RE = r"^[a-z0-9][a-z0-9-]{0,40}$"


def prefect_bin() -> str:
    return str(Path(sys.executable).with_name("prefect"))


@dataclass(frozen=True)
class Proc:
    """One worker process group pgha started: its pid file and log."""

    name: str  # server | worker

    @property
    def pid_file(self) -> Path:
        return server_dir() / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return server_dir() / f"{self.name}.log"

    def pid(self) -> int | None:
        """The recorded pid if that process still runs and is a prefect process (not a reused pid)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
            cmdline = b""
            for _ in range(20):  # a process that is just exec'ing shows an empty cmdline for a moment
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if cmdline:
                    break
                time.sleep(0.05)
        except (OSError, ValueError, IndexError):
            return None
        # An argument naming the prefect script (not a directory that merely contains "prefect").
        return pid if any(Path(arg.decode(errors="replace")).name.startswith("prefect") for arg in cmdline.split(b"\0")) else None

    def start(self, args: list[str], environ: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        e = environ if environ is not None else env()
        with open(self.log_file, "ab") as log:
            p = subprocess.Popen([prefect_bin(), *args], cwd=ROOT, env=e, stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(f"{p.pid}\n")
        return p

    def stop(self, timeout: float = 30) -> bool:
        """SIGTERM the group, SIGKILL what is left after `timeout`; True when something was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pid):
                time.sleep(0.2)
            if not _group_alive(pid):
                break
        self.pid_file.unlink(missing_ok=True)
        return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader keeps the group "alive" until reaped; count only live members.
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False




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
    p = proc.start(["worker", "start", "--pool", POOL, "--type", "process", "--name", f"pgha-{name}"], environ=e)
    return f"worker {name} started (pid {p.pid}) for {e['PREFECT_API_URL']}, log {proc.log_file}"


def stop_extra_worker(name: str) -> str:
    proc = _worker_proc(name)
    return f"worker {name} stopped" if proc.stop() else f"worker {name} was not running"


