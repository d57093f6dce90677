"""The Prefect server pgha runs on: start, deploy, worker, stop — each step idempotent.

`make server` (`pgha server start`) builds the control image if missing (tasks/control_image.py),
starts the Prefect server and the worker as containers the Docker engine supervises
(tasks/control_plane.py: restart policy, health checks, the database on a volume), creates the
`process` work pool, deploys everything in prefect.yaml (skipped when nothing changed since the
last deploy), applies deployments/alerts.yaml (tasks/prefect_alerts.py). The API's auth secret is
tasks/prefect_auth.py; more workers as processes, on this machine or others, tasks/prefect_workers.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from stack import alerts as alerts_mod
from stack import server as server_mod
from stack.errors import StateError, UsageError
from tasks.host.state import state_root
from tasks.prefect_auth import auth_file, auth_string, server_dir
from tasks.prefect_endpoint import (  # noqa: F401 - re-exported: the server's address is part of this API
    DEFAULT_PORT,
    PORT_ENV,
    ServerError,
    api_url,
    healthy,
    port,
    ui_url,
)

ROOT = Path(__file__).resolve().parent.parent
POOL = "pgha"
START_TIMEOUT = 180.0  # a fresh database's migrations take a minute on a loaded 2-core machine


def prefect_bin() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def history_days() -> int:
    """Days of run history the server keeps ($PGHA_HISTORY_RETENTION_DAYS, default 30), checked
    against prefect.yaml's schedules: a bad value is refused in one line before anything starts."""
    return server_mod.retention_days(os.environ.get(server_mod.RETENTION_ENV),
                                     server_mod.schedule_crons((ROOT / "prefect.yaml").read_text()))


def env() -> dict[str, str]:
    """What the CLI's own `prefect` calls (and a worker started by `pgha worker start`) see."""
    e = dict(os.environ)
    if (auth := auth_string()) is not None:
        e["PREFECT_API_AUTH_STRING"] = auth  # the client side, in this process's environment only
    e.update(
        PREFECT_API_URL=api_url(),
        PREFECT_UI_URL=ui_url(),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PGHA_HOME=str(ROOT),  # prefect.yaml's pull step: flows run from this checkout
        PGHA_STATE_DIR=str(state_root()),  # the worker's flows see the same clusters as the CLI
    )
    return e


def served_history_days() -> float | None:
    """Days of flow-run history the running server keeps (its effective settings, read from
    /api/admin/settings); None when it keeps them forever (flow-run vacuum off) or does not answer."""
    auth = auth_string()
    try:
        r = httpx.get(f"{api_url()}/admin/settings", timeout=5, trust_env=False,
                      auth=tuple(auth.split(":", 1)) if auth else None)  # type: ignore[arg-type]
        vac = r.json()["server"]["services"]["db_vacuum"]
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, KeyError, TypeError):
        return None
    return server_mod.served_retention_days(vac)


def plane(image: str = "") -> Any:
    """This state directory's control plane (tasks/control_plane.ControlPlane); `image` only matters to start it."""
    from tasks import control_plane as cp

    return cp.ControlPlane(
        state_dir=state_root().resolve(), home=ROOT, port=port(), image=image, auth_file=auth_file(), pool=POOL,
        worker_name=f"pgha-{os.uname().nodename}",
        # bounded history (Prefect keeps runs forever by default), after the caller's own server settings
        server_env={**cp.environ_passthrough(cp.SERVER_ROLE), **server_mod.vacuum_settings(history_days())},
        worker_env=cp.environ_passthrough(cp.WORKER_ROLE),
    )


def _prefect(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([prefect_bin(), *args], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


URL_FILE = "server.url"


def recorded_url() -> str | None:
    """The UI URL of the server `start_server` started for this state directory, when it answers.

    What every `pgha` verb uses to find the server by itself (no PREFECT_API_URL to export).
    Before any credential is sent to it, the engine is asked whether the server's container holds
    that port (`control_plane.server_holds_port`); when something else answers there, refused.
    """
    path = state_root() / "server" / URL_FILE
    try:
        url = path.read_text().strip()
    except OSError:
        return None
    try:
        ok = httpx.get(f"{url}/api/health", timeout=2, trust_env=False).status_code == 200
    except (httpx.HTTPError, httpx.InvalidURL):
        return None
    if not ok:
        return None
    from tasks import control_plane as cp

    if not cp.server_holds_port(plane()):
        raise StateError(f"something answers on {url} but it is not the Prefect server pgha started (its "
                         f"container does not hold the port): pgha sends it no credentials; stop what listens "
                         f"there and run `pgha server start`, or set PGHA_NO_SERVER=1")
    return url


def start_server(image: str) -> str:
    """The server's container running and answering; one that cannot start is removed, with its log's tail."""
    from tasks import control_plane as cp

    pl = plane(image)
    if not cp.running(pl, cp.SERVER_ROLE):
        if healthy():
            raise StateError(f"a Prefect server that pgha did not start answers on {ui_url()}; stop it or set {PORT_ENV}")
        from tasks.docker_hosts import port_is_free  # the host's loopback, not an engine

        if not port_is_free(port()):
            raise StateError(f"port {port()} is in use on 127.0.0.1; set {PORT_ENV} to a free port")
    auth_string(create=True)  # before the server starts: its entrypoint reads the mounted file
    what, c = cp.ensure(pl, cp.SERVER_ROLE)
    deadline = time.monotonic() + START_TIMEOUT
    while not healthy():
        now = cp.describe(pl, cp.SERVER_ROLE)
        if now is None or now.state == "exited" and now.restart_count >= 3 or time.monotonic() > deadline:
            tail = cp.logs_tail(c.container, 3).strip().replace("\n", " | ")
            cp.remove(pl)
            raise ServerError(f"the Prefect server did not answer within {START_TIMEOUT:.0f}s: {tail[:300]}")
        time.sleep(1)
    # Publishes the listening socket's inode now (the health check does so every 10 s): the worker's
    # guard connects only to that socket.
    cp.server_holds_port(pl)
    (server_dir() / URL_FILE).write_text(ui_url() + "\n")
    if what == "started":
        return f"server started (container {c.container}, restart {cp.RESTART_POLICY}) on {ui_url()}"
    return f"server already {what} (container {c.container}) on {ui_url()}"


def ensure_pool() -> str:
    """The process work pool `POOL`, created when missing (with the process worker's default job
    template, what `prefect work-pool create --type process` gives), through the API client: two
    `prefect` processes cost about 5 s of CPU here."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound, PrefectHTTPStatusError
    from prefect.workers.process import ProcessWorker

    with _client() as client:
        try:
            client.read_work_pool(POOL)
            return f"work pool {POOL} exists"
        except ObjectNotFound:
            pass
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot read work pool {POOL}: the server at {api_url()} did not answer "
                              f"({type(exc).__name__})") from None
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process",
                                                   base_job_template=ProcessWorker.get_default_base_job_template()))
        except ObjectAlreadyExists:
            return f"work pool {POOL} exists"
        except PrefectHTTPStatusError as exc:
            raise ServerError(f"cannot create work pool {POOL}: HTTP {exc.response.status_code} "
                              f"{exc.response.text[:200]}") from None
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot create work pool {POOL}: the server at {api_url()} did not answer "
                              f"({type(exc).__name__})") from None
    return f"work pool {POOL} created"


@contextmanager
def _client() -> Iterator[Any]:
    """A synchronous Prefect client of this server (its URL and basic auth), for the calls `start_all` makes."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    auth = auth_string()
    updates: dict[Any, Any] = {PREFECT_API_URL: api_url(), **({PREFECT_API_AUTH_STRING: auth} if auth else {})}
    with temporary_settings(updates=updates), get_client(sync_client=True) as client:
        yield client


def deploy() -> str:
    """`prefect deploy --all` from this checkout: creates or updates every deployment in prefect.yaml."""
    r = _prefect("--no-prompt", "deploy", "--all", timeout=600)
    out = (r.stdout or "") + (r.stderr or "")
    if r.returncode != 0:
        raise ServerError(f"prefect deploy failed: {out.strip()[-400:]}")
    n = out.count("Deployment '")
    return f"deployed prefect.yaml ({n} deployments, {seal_schemas()} parameter schemas closed)"


def seal_schemas() -> int:
    """Close the parameter schema of every deployment of pgha's entry flows (`stack.deployed.sealed_schema`):
    the server then refuses a run with a parameter its flow does not take (a `spec` above all)."""
    from stack.deployed import ENTRY_MODULE, sealed_schema

    n = 0
    with _client() as client:
        for dep in client.read_deployments():
            if not (dep.entrypoint or "").startswith(f"{ENTRY_MODULE}:"):
                continue
            schema = dict(dep.parameter_openapi_schema or {})
            if schema.get("additionalProperties") is not False:
                r = client.request("PATCH", "/deployments/{id}", path_params={"id": dep.id},  # type: ignore[arg-type]
                                   json={"parameter_openapi_schema": sealed_schema(schema)})
                if r.status_code >= 300:
                    raise ServerError(f"cannot close the parameter schema of deployment {dep.name}: "
                                      f"HTTP {r.status_code} {r.text[:200]}")
            n += 1
    return n


def start_worker(image: str) -> str:
    from tasks import control_plane as cp

    what, c = cp.ensure(plane(image), cp.WORKER_ROLE)
    if what == "started":
        return f"worker started (container {c.container}, restart {cp.RESTART_POLICY})"
    return f"worker already {what} (container {c.container})"


def fingerprint(with_alerts: bool) -> str:
    """What the pool, deployments and alerts were made from: the server's container and database
    volume, prefect.yaml, the flows' code (their parameter forms), the alerts file and its settings
    (hashed, never stored)."""
    import hashlib

    from tasks import control_plane as cp

    server = cp.describe(plane(), cp.SERVER_ROLE)
    h = hashlib.sha256(f"{server.container if server else None}|{cp.volume_path(plane())}|{port()}|{with_alerts}|{ROOT}".encode())
    files = [ROOT / "prefect.yaml", alerts_mod.ALERTS_FILE, *sorted((ROOT / "flows").rglob("*.py")),
             *sorted((ROOT / "stack").glob("*.py"))]
    for f in files:
        h.update(f.read_bytes() if f.exists() else b"-")
    for key in sorted(k for k in os.environ if k.startswith("PGHA_ALERT_")):
        h.update(f"{key}={os.environ[key]}".encode())
    return h.hexdigest()


def _alerts() -> list[str]:
    from tasks.prefect_alerts import apply_alerts

    try:
        return apply_alerts()
    except UsageError as exc:
        return [f"alerts not applied: {exc}"]


def _stop_legacy_processes() -> list[str]:
    """A server and worker an older pgha started as processes (`server.pid`, `worker.pid`) hold the port
    and would run schedules twice: end them (only if the recorded pid is still a prefect process)."""
    from tasks.prefect_processes import Proc

    done = []
    for name in ("worker", "server"):
        if Proc(name).stop():
            done.append(f"{name} process started by an older pgha stopped (now a container)")
    return done


def start_all(with_alerts: bool = True) -> list[str]:
    """Everything up; a second call with nothing changed only checks (seconds: `make up` runs it each time)."""
    from tasks import control_plane as cp
    from tasks.control_image import ensure_control_image

    wanted = history_days()  # a bad retention is refused before anything starts
    port()  # so is a bad PGHA_SERVER_PORT, before the engine is asked anything
    image, built = ensure_control_image()
    pl = plane(image)
    note = []
    if cp.running(pl, cp.SERVER_ROLE) and healthy() and (served := served_history_days()) != wanted:
        # The vacuum's settings are read when the server starts: say so rather than restart it here
        # (a restart would cut every run in flight).
        note = [f"history: the running server keeps {server_mod.describe_days(served)}; "
                f"{wanted} days apply after `pgha server stop` and `pgha server start`"]
    stamp = server_dir() / "deployed.sha256"
    steps = [*built, *_stop_legacy_processes(), start_server(image)]
    try:
        current = stamp.read_text().strip() == fingerprint(with_alerts)
    except OSError:
        current = False
    if current and cp.running(pl, cp.WORKER_ROLE):
        # The slow steps (pool, `prefect deploy`) are skipped; alerts re-applied (quick).
        steps += ["work pool, deployments and automation as deployed: nothing changed"]
        steps += _alerts() if with_alerts else []
        return [*steps, start_worker(image), *note]
    stamp.unlink(missing_ok=True)
    from tasks.prefect_alerts import apply_follow_up

    steps += [ensure_pool(), deploy(), apply_follow_up()]
    steps += _alerts() if with_alerts else []
    steps.append(start_worker(image))
    stamp.write_text(fingerprint(with_alerts) + "\n")
    return [*steps, *note] if note else [*steps, f"history: flow runs older than {wanted} days are deleted"]


def stop_all(volume: bool = False) -> list[str]:
    """Stop and remove the worker's and the server's containers; the database volume only with `volume`."""
    from tasks import control_plane as cp

    (server_dir() / URL_FILE).unlink(missing_ok=True)
    (server_dir() / "deployed.sha256").unlink(missing_ok=True)
    return cp.remove(plane(), volume=volume)


def status() -> dict[str, object]:
    from tasks import control_plane as cp

    pl = plane()
    server, worker = cp.describe(pl, cp.SERVER_ROLE), cp.describe(pl, cp.WORKER_ROLE)
    ok = healthy()
    return {"ui": ui_url(), "api": api_url(), "supervisor": f"docker (restart {cp.RESTART_POLICY})",
            "server": cp.supervision(server), "worker": cp.supervision(worker),
            "server_pid": server.pid if server else None, "server_healthy": ok,
            "worker_pid": worker.pid if worker else None,
            "database": {"volume": pl.volume, "path": cp.volume_path(pl)},
            "logs": cp.logs_hint(pl),
            "history": server_mod.describe_days(served_history_days()) if ok else
            f"{history_days()} days once started"}
