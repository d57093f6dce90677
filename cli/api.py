"""Which Prefect API a pgha process uses: the running pgha server, else an ephemeral one.

When `PREFECT_API_URL` is unset and `pgha server start` (`make up`, `make server`) left a
server running for this state directory (`<state>/server/server.url`, its pid alive, /health
answering), every flow-running verb publishes that server's API and UI URLs and runs there:
its runs, logs and artifacts show in the UI, and no ephemeral API is started (seconds saved
per command). `PGHA_NO_SERVER=1` ignores it.

Otherwise: Prefect's ephemeral API, started at most once, always stopped.

Without `PREFECT_API_URL`, Prefect starts a private API server (uvicorn in a subprocess)
the first time anything needs it, through `SubprocessASGIServer().start()`. That method is
not safe against two threads (both can pass its `if not self.running` and spawn a server;
`stop()` at exit ends only the last one), and a start that times out leaves its process
running and lets the next call spawn another. An orphan inherits the caller's stdout and
stderr, so a test's `subprocess.run(capture_output=True)` waits for it until its timeout.

So pgha starts that server itself, once per process under a lock, and publishes its address
as `PREFECT_API_URL` at once: from then on no Prefect code path in this process starts a
server of its own. The server process:
- never holds the caller's pipes (its output goes to a log file under PREFECT_HOME);
- is stopped by `stop()` on every exit path of a command (the CLI calls it in a `finally`),
  and at interpreter exit as a backstop;
- dies with pgha even when pgha is SIGKILLed (Linux parent-death signal);
- asks for an auth string made for this process only (basic auth, `PREFECT_SERVER_API_AUTH_STRING`
  in its environment, `PREFECT_API_AUTH_STRING` in this process's): nobody else on the host can
  use the API while it runs.
"""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from stack.errors import PghaError

# The child sets its parent-death signal before anything else (PR_SET_PDEATHSIG = 1), then
# checks its parent is still the one that spawned it (it may have died before prctl), then
# runs uvicorn exactly as Prefect's SubprocessASGIServer does.
_CHILD = (
    "import ctypes, os, runpy, signal, sys\n"
    "if sys.platform == 'linux':\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "    if os.getppid() != int(sys.argv[1]):\n"
    "        sys.exit(0)\n"
    "sys.argv = ['uvicorn', *sys.argv[2:]]\n"
    "runpy.run_module('uvicorn', run_name='__main__', alter_sys=True)\n"
)
_PORT_IN_USE = 3  # uvicorn's exit code when it cannot bind
MIN_START_TIMEOUT_S = 60.0  # Prefect's default (20 s) is short on a loaded 2-core machine


def spawn_api(server_env: dict[str, str], port: int, auth: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Prefect's API app on 127.0.0.1:`port` (uvicorn, ephemeral services, UI off, basic auth
    `auth` given in the environment, never argv), dying with this process (`_CHILD`).

    `server_env`: the server's environment without the client's PREFECT_API_* (the server must
    not see them). The CLI's ephemeral API and the integration suite's shared one both start here.
    """
    import importlib.util

    origin = importlib.util.find_spec("prefect").origin  # type: ignore[union-attr]
    assert origin is not None
    env = {**server_env, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_API_AUTH_STRING": auth}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(os.getpid()), "--app-dir", str(Path(origin).parent.parent),
         "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "error", "--lifespan", "on"],
        env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True)


class EphemeralApi:
    """One ephemeral Prefect API server for this process; `start` and `stop` are idempotent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._port = 0
        self._ready = False
        self._published: dict[str, str | None] = {}
        self._auth = f"pgha:{secrets.token_urlsafe(32)}"  # the spawned API's basic auth (see _spawn)
        atexit.register(self.stop)

    @property
    def running(self) -> bool:
        return self._proc is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/api"

    def start(self) -> None:
        """Use the running pgha server, else spawn an API unless PREFECT_API_URL is set; returns at once.

        A spawned API becomes ready while the caller runs its preflight checks; `wait_ready()`
        before the first flow.
        """
        with self._lock:
            if self._proc is not None or self._published:
                return
            if os.environ.get("PREFECT_API_URL"):
                self._authenticate(os.environ["PREFECT_API_URL"])
                return
            if found := running_server():
                self._publish({"PREFECT_API_URL": f"{found}/api", "PREFECT_UI_URL": found, **_server_auth()})
                return
            if _configured_api_url():
                return
            self._spawn()

    def _authenticate(self, url: str) -> None:
        """PREFECT_API_URL names pgha's own server (this state directory's): use its credentials
        unless PREFECT_API_AUTH_STRING is given."""
        if os.environ.get("PREFECT_API_AUTH_STRING"):
            return
        found = running_server()
        if found and url.rstrip("/") == f"{found}/api" and (auth := _server_auth()):
            self._publish(auth)

    def wait_ready(self) -> None:
        """Block until the server answers /health; no-op when pgha did not start one."""
        with self._lock:
            if self._proc is None or self._ready:
                return
            deadline = time.monotonic() + self._timeout()
            while time.monotonic() < deadline:
                code = self._proc.poll()
                if code == _PORT_IN_USE:  # another process took the port between probe and bind
                    self._spawn()
                    continue
                if code is not None:
                    self._stop_locked()
                    raise PghaError(f"Prefect's ephemeral API exited with code {code} before it was ready; "
                                    f"see {self._log_path()}")
                if self._healthy():
                    self._ready = True
                    return
                time.sleep(0.1)
            self._stop_locked()
            raise PghaError(f"Prefect's ephemeral API did not answer within {self._timeout():.0f} s; "
                            f"see {self._log_path()}")

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL after 5 s) and forget its address."""
        with self._lock:
            self._stop_locked()

    # ---- internals (called with the lock held) ----

    def _spawn(self) -> None:
        if self._proc is not None:
            self._kill(self._proc)
        from prefect.settings import get_current_settings

        # Prefect's own environment for the server: the current settings, UI off, ephemeral
        # services only. Built before PREFECT_API_URL is published (the server must not see it).
        env = {k: v for k, v in os.environ.items() if k not in self._published}
        env.update(get_current_settings().to_environment_variables(exclude_unset=True))
        for key in self._published:
            env.pop(key, None)
        self._port = _free_port()
        if self._log is None:
            path = self._log_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log = path.open("ab")
        # Its own auth string, made for this process and never written down: another local user
        # who finds the port cannot start, read or pause this process's runs (the server answers
        # 401 to every call but /health without it). Given in the environment, never argv.
        self._proc = spawn_api(env, self._port, self._auth, self._log)
        self._ready = False
        self._publish({"PREFECT_API_URL": self.url,
                       "PREFECT_API_AUTH_STRING": self._auth,
                       # One process, nothing to exclude across machines: mutating flows keep to
                       # the host flock (tasks/cluster_limit.py skips the global limit).
                       "PGHA_EPHEMERAL_API": "1",
                       # The UI URL would otherwise be inferred from the API URL: a link to a
                       # server that has no UI and is gone when pgha exits.
                       "PREFECT_UI_URL": os.environ.get("PREFECT_UI_URL", "")})

    def _stop_locked(self) -> None:
        if self._proc is not None:
            if self._ready:
                _drain_prefect_workers()
            self._kill(self._proc)
            self._proc = None
        self._ready = False
        if self._log is not None:
            self._log.close()
            self._log = None
        self._publish(None)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _publish(self, values: dict[str, str] | None) -> None:
        """Point this process's Prefect at the server (or back to what it was before)."""
        if values is None:
            if not self._published:
                return  # nothing of ours to take back
            for key, old in self._published.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old
            self._published = {}
        else:
            for key, value in values.items():
                self._published.setdefault(key, os.environ.get(key))
                os.environ[key] = value
        if "prefect.context" in sys.modules:
            # Prefect reads its settings from the environment once, at import.
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()

    def _healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @staticmethod
    def _timeout() -> float:
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        return max(float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()), MIN_START_TIMEOUT_S)

    @staticmethod
    def _log_path() -> Path:
        from prefect.settings import PREFECT_HOME

        return Path(PREFECT_HOME.value()) / "pgha-ephemeral-api.log"


def _drain_prefect_workers() -> None:
    """Send the logs and events Prefect still queues while their server is up (it would drain them at exit, too late)."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
        EventsWorker.drain_all(timeout=5)
    except Exception:  # noqa: BLE001, S110 - best effort: losing a late log line must not fail the verb
        pass


def _configured_api_url() -> str:
    """The API URL from the environment, else from the Prefect profile ('' when unset)."""
    if "PREFECT_API_URL" in os.environ:  # Prefect's settings keep what the environment said at import
        return os.environ["PREFECT_API_URL"]
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value() or "")


def running_server() -> str | None:
    """The UI URL of the Prefect server `pgha server start` runs for this state directory, if it answers."""
    if os.environ.get("PGHA_NO_SERVER", "") not in ("", "0"):
        return None
    from tasks import prefect_server

    return prefect_server.recorded_url()


def _server_auth() -> dict[str, str]:
    """PREFECT_API_AUTH_STRING for pgha's server, from its 0600 file in the state directory (empty without)."""
    if os.environ.get("PREFECT_API_AUTH_STRING"):
        return {}
    from tasks.prefect_auth import auth_string

    auth = auth_string()
    return {"PREFECT_API_AUTH_STRING": auth} if auth else {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


API = EphemeralApi()
