"""The Prefect server pgha runs on: start, deploy, alerts, worker, stop — each step idempotent.

`make server` (`pgha server start`) starts a local Prefect server (SQLite, analytics off, UI on
127.0.0.1:$PGHA_SERVER_PORT, default 4200, PREFECT_UI_URL set so run links work), creates the
`process` work pool, deploys everything in prefect.yaml, applies deployments/alerts.yaml and
starts a worker. Pids and logs live in `<state>/server/`; `make server-stop` ends exactly the
process groups it started (each started with its own session, as a non-interactive `cmd &`
would ignore its first SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from stack import alerts as alerts_mod
from stack import server as server_mod
from stack.errors import PghaError, StateError, UsageError
from tasks.host.prune import rotate_log
from tasks.host.state import state_root

ROOT = Path(__file__).resolve().parent.parent
POOL = "pgha"
PORT_ENV = "PGHA_SERVER_PORT"
DEFAULT_PORT = 4200
START_TIMEOUT = 120.0


class ServerError(PghaError):
    """The Prefect server or worker could not be started, reached or configured."""


def port() -> int:
    raw = os.environ.get(PORT_ENV, str(DEFAULT_PORT))
    if not raw.isdigit() or not 1024 <= int(raw) <= 65535:
        raise UsageError(f"{PORT_ENV} must be a port number 1024-65535, not {raw!r}")
    return int(raw)


def ui_url() -> str:
    return f"http://127.0.0.1:{port()}"


def api_url() -> str:
    return f"{ui_url()}/api"


def server_dir() -> Path:
    d = state_root() / "server"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def prefect_bin() -> str:
    return str(Path(sys.executable).with_name("prefect"))


# ---- API authentication (issue 12): Prefect 3's self-hosted basic auth -------------------------
AUTH_FILE = "api-auth"  # "pgha:<token>", 0600 in the state directory's server/ dir
AUTH_USER = "pgha"


def auth_file() -> Path:
    return server_dir() / AUTH_FILE


def auth_string(create: bool = False) -> str | None:
    """The server's basic-auth string ("pgha:<token>") from its 0600 file; made once when `create`.

    The file is the only place it is stored. It reaches the server, the CLI's `prefect` calls
    and the worker (hence its flow runs) as PREFECT_SERVER_API_AUTH_STRING /
    PREFECT_API_AUTH_STRING in their environment, never in argv: /proc/<pid>/environ is
    readable by the same user (and root) only, the same people who can read the file.
    """
    path = auth_file()
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    if text.startswith(f"{AUTH_USER}:") and len(text) > len(AUTH_USER) + 20:
        path.chmod(0o600)
        return text
    if not create:
        return None
    import secrets

    from tasks.host.state import write_private

    text = f"{AUTH_USER}:{secrets.token_urlsafe(32)}"
    write_private(path, text + "\n")
    return text


def history_days() -> int:
    """Days of run history the server keeps ($PGHA_HISTORY_RETENTION_DAYS, default 30), checked
    against prefect.yaml's schedules: a bad value is refused in one line before anything starts."""
    return server_mod.retention_days(os.environ.get(server_mod.RETENTION_ENV),
                                     server_mod.schedule_crons((ROOT / "prefect.yaml").read_text()))


def env() -> dict[str, str]:
    """What the server, the CLI calls and the worker (hence every flow run) see."""
    e = dict(os.environ)
    # Bounded history: the server's vacuum deletes flow runs (task runs, states, logs, artifacts)
    # older than the retention; Prefect's own default keeps them forever.
    e.update(server_mod.vacuum_settings(history_days()))
    if (auth := auth_string()) is not None:
        e["PREFECT_API_AUTH_STRING"] = auth  # the client side; the server's own is added in Proc.start
    e.update(
        PREFECT_API_URL=api_url(),
        PREFECT_UI_URL=ui_url(),
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port()),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PGHA_HOME=str(ROOT),  # prefect.yaml's pull step: flows run from this checkout
        PGHA_STATE_DIR=str(state_root()),  # the worker's flows see the same clusters as the CLI
    )
    return e


def healthy(timeout: float = 2.0) -> bool:
    try:
        # trust_env=False: the server is on loopback; an environment proxy must not intercept it.
        return httpx.get(f"{api_url()}/health", timeout=timeout, trust_env=False).status_code == 200
    except (httpx.HTTPError, httpx.InvalidURL):
        return False


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


@dataclass(frozen=True)
class Proc:
    """One process group pgha started: its pid file and log."""

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
        if self.name == "server" and "PREFECT_API_AUTH_STRING" in e:
            e["PREFECT_SERVER_API_AUTH_STRING"] = e["PREFECT_API_AUTH_STRING"]
        rotate_log(self.log_file)  # bounded: one older copy past 10 MiB (health audits rotate it too)
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


SERVER, WORKER = Proc("server"), Proc("worker")


def _prefect(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([prefect_bin(), *args], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


URL_FILE = "server.url"


def recorded_url() -> str | None:
    """The UI URL of the server `start_server` started for this state directory, when it runs and answers.

    What every `pgha` verb uses to find the server by itself (no PREFECT_API_URL to export).
    """
    path = state_root() / "server" / URL_FILE
    try:
        url = path.read_text().strip()
    except OSError:
        return None
    if SERVER.pid() is None:
        return None
    try:
        ok = httpx.get(f"{url}/api/health", timeout=2, trust_env=False).status_code == 200
    except (httpx.HTTPError, httpx.InvalidURL):
        return None
    return url if ok else None


def start_server() -> str:
    if SERVER.pid() is not None and healthy():
        (server_dir() / URL_FILE).write_text(ui_url() + "\n")
        return f"server already running (pid {SERVER.pid()}) on {ui_url()}"
    if healthy():
        raise StateError(f"a Prefect server that pgha did not start answers on {ui_url()}; stop it or set {PORT_ENV}")
    SERVER.stop()
    from tasks.docker_hosts import port_is_free  # the host's loopback, not an engine

    if not port_is_free(port()):
        raise StateError(f"port {port()} is in use on 127.0.0.1; set {PORT_ENV} to a free port")
    auth_string(create=True)  # before the server starts: it reads it from its environment
    proc = SERVER.start(["server", "start", "--host", "127.0.0.1", "--port", str(port())])
    deadline = time.monotonic() + START_TIMEOUT
    while not healthy():
        if proc.poll() is not None or time.monotonic() > deadline:
            # Leave nothing behind: end whatever the attempt started, then say why.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            SERVER.pid_file.unlink(missing_ok=True)
            tail = SERVER.log_file.read_text(errors="replace").strip().splitlines()[-3:]
            what = "exited at start" if proc.returncode not in (None, -signal.SIGKILL) else \
                f"did not answer within {START_TIMEOUT:.0f}s"
            raise ServerError(f"the Prefect server {what}: {' | '.join(tail)[:300]} (log {SERVER.log_file})")
        time.sleep(0.5)
    (server_dir() / URL_FILE).write_text(ui_url() + "\n")
    return f"server started (pid {proc.pid}) on {ui_url()}"


def ensure_pool() -> str:
    if _prefect("work-pool", "inspect", POOL, timeout=60).returncode == 0:
        return f"work pool {POOL} exists"
    r = _prefect("work-pool", "create", POOL, "--type", "process", timeout=60)
    if r.returncode != 0 and "already exists" not in r.stdout + r.stderr:
        raise ServerError(f"cannot create work pool {POOL}: {(r.stdout + r.stderr).strip()[-300:]}")
    return f"work pool {POOL} created"


def deploy() -> str:
    """`prefect deploy --all` from this checkout: creates or updates every deployment in prefect.yaml."""
    r = _prefect("--no-prompt", "deploy", "--all", timeout=600)
    if r.returncode != 0:
        raise ServerError(f"prefect deploy failed: {(r.stdout + r.stderr).strip()[-400:]}")
    n = (r.stdout + r.stderr).count("Deployment '")
    return f"deployed prefect.yaml ({n} deployments)"


def start_worker() -> str:
    if (pid := WORKER.pid()) is not None:
        return f"worker already running (pid {pid})"
    proc = WORKER.start(["worker", "start", "--pool", POOL, "--type", "process",
                         "--name", f"pgha-{os.uname().nodename}"])
    return f"worker started (pid {proc.pid}), log {WORKER.log_file}"


# ---- workers on other machines (issue 11) --------------------------------------------------------
WORKER_NAME_RE = r"^[a-z0-9][a-z0-9-]{0,40}$"


def _worker_proc(name: str) -> Proc:
    import re

    if not re.match(WORKER_NAME_RE, name):
        raise UsageError(f"worker name must be 1-41 lowercase letters, digits and dashes, not {name!r}")
    return Proc(f"worker-{name}")


def read_auth_file(path: Path) -> str:
    """A copy of the server's `api-auth` file: must be private (0600) and hold `user:password`."""
    try:
        st = path.stat()
        text = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the auth file {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise UsageError(f"the auth file {path} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it")
    if ":" not in text or len(text) < 8:
        raise UsageError(f"the auth file {path} does not hold user:password (copy {AUTH_FILE} from the server's "
                         "state directory)")
    return text


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
        headers = {}
        if auth := e.get("PREFECT_API_AUTH_STRING"):
            import base64

            headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
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


def apply_alerts(path: Path = alerts_mod.ALERTS_FILE, scopes: list[str] | None = None) -> list[str]:
    """Create or update the notification block and one automation per alert (matched by name).

    Also the event alerts: per cluster (`scopes`, default every cluster with a stored spec in
    this state directory), no audit / no backup within its window (proactive), and a mutating
    flow that failed and left its cluster unhealthy.
    """
    cfg = alerts_mod.load_alerts(path)
    block, target = alerts_mod.notification_block(cfg)
    hb = alerts_mod.heartbeat(cfg)  # a bad $PGHA_HEARTBEAT_URL is refused here, before anything is applied
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    if not healthy():
        raise StateError(f"no Prefect server answers on {ui_url()}; run `make server` first")
    done: list[str] = []
    with temporary_settings(updates={PREFECT_API_URL: api_url(), PREFECT_UI_URL: ui_url(), **_auth_setting()}):
        block_id = block.save(cfg.notification.block, overwrite=True)
        done.append(f"notification block {cfg.notification.block} -> {target}")
        with get_client(sync_client=True) as client:
            for a in cfg.alerts:
                wanted = Automation(
                    name=a.name, description=a.description, enabled=a.enabled,
                    trigger=EventTrigger(**alerts_mod.trigger(a)),
                    actions=[SendNotification(block_document_id=block_id, subject=a.subject, body=a.body)],
                )
                existing = client.read_automations_by_name(a.name)
                if existing:
                    wanted.id = existing[0].id
                    wanted.update()
                    for extra in existing[1:]:  # duplicates left by a hand-made or older apply
                        client.delete_automation(extra.id)
                    done.append(f"alert {a.name} updated")
                else:
                    wanted.create()
                    done.append(f"alert {a.name} created")
            done += _apply_event_alerts(client, cfg, block_id, scopes)
    # The heartbeat needs nothing on the server: every audit reads the file (or the variable) when it runs.
    done.append(f"heartbeat: every health audit pings it ({hb.style} style)" if hb else
                f"heartbeat: none (set heartbeat.url in {path.name} or ${alerts_mod.HEARTBEAT_ENV})")
    return done


def known_scopes() -> list[str]:
    """Clusters brought up from this state directory (those with a stored spec)."""
    root = state_root()
    return sorted(d.name for d in root.iterdir() if (d / "spec.yaml").is_file()) if root.is_dir() else []


def _apply_event_alerts(client: Any, cfg: alerts_mod.AlertsFile, block_id: Any, scopes: list[str] | None) -> list[str]:
    """The proactive (silence) and unhealthy-after-failure automations; unchanged ones are left alone,
    so re-applying (every `make up`) does not restart a proactive window."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger

    from_state = scopes is None
    wanted_alerts = alerts_mod.silence_alerts(cfg, known_scopes() if scopes is None else scopes) + \
        alerts_mod.unhealthy_alert(cfg)
    done = []
    for a in wanted_alerts:
        wanted = Automation(name=a.name, description=a.description, enabled=True, trigger=EventTrigger(**a.trigger),
                            actions=[SendNotification(block_document_id=block_id, subject=a.subject, body=a.body)])
        existing = client.read_automations_by_name(a.name)
        for extra in existing[1:]:
            client.delete_automation(extra.id)
        if existing and _same(existing[0], wanted):
            done.append(f"alert {a.name} unchanged")
        elif existing:
            wanted.id = existing[0].id
            wanted.update()
            done.append(f"alert {a.name} updated")
        else:
            wanted.create()
            done.append(f"alert {a.name} created")
    if from_state:  # clusters gone from this state directory: their silence is expected
        names = {a.name for a in wanted_alerts}
        for auto in client.read_automations():
            if auto.name.startswith(alerts_mod.SILENCE_PREFIX) and auto.name not in names:
                client.delete_automation(auto.id)
                done.append(f"alert {auto.name} removed (no such cluster here)")
    return done


def _same(existing: Any, wanted: Any) -> bool:
    def shape(a: Any) -> Any:
        trig = a.trigger.model_dump(mode="json", exclude={"id"})
        acts = [x.model_dump(mode="json") for x in a.actions]
        return (a.description, a.enabled, trig, acts)

    try:
        return bool(shape(existing) == shape(wanted))
    except Exception:  # noqa: BLE001 - a shape we cannot compare: update it
        return False


def _auth_setting() -> dict[Any, Any]:
    """The client setting that authenticates this process's API calls to pgha's server (none without auth)."""
    from prefect.settings import PREFECT_API_AUTH_STRING

    auth = auth_string()
    return {PREFECT_API_AUTH_STRING: auth} if auth else {}


FOLLOW_UP = "pgha: audit after a leader change"
AUDIT_DEPLOYMENT = "health-audit/default"


def apply_follow_up() -> str:
    """The automation that runs the health-audit deployment for a cluster whose leader changed
    (event `pgha.leader.changed`, emitted by the audit); created or updated by name."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url(), **_auth_setting()}), \
            get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(AUDIT_DEPLOYMENT)
        wanted = Automation(
            name=FOLLOW_UP,
            description="When an audit sees another leader than the last audit (a switchover or a failover), "
                        "audit that cluster again at once through the health-audit deployment, so the run and "
                        "its artifacts show how the cluster is after the change.",
            trigger=EventTrigger(expect={"pgha.leader.changed"}, match={"prefect.resource.id": "pgha.cluster.*"},
                                 posture=Posture.Reactive, threshold=1),
            actions=[RunDeployment(source="selected", deployment_id=dep.id,
                                   parameters={"scope": {"__prefect_kind": "jinja",
                                                         "template": "{{ event.payload.scope }}"}})],
        )
        existing = client.read_automations_by_name(FOLLOW_UP)
        if existing:
            wanted.id = existing[0].id
            wanted.update()
            for extra in existing[1:]:
                client.delete_automation(extra.id)
            return f"automation '{FOLLOW_UP}' updated"
        wanted.create()
        return f"automation '{FOLLOW_UP}' created"


def fingerprint(with_alerts: bool) -> str:
    """What the pool, deployments and alerts were made from: the server's pid, prefect.yaml, the
    flows' code (their parameter forms), the alerts file and its settings (hashed, never stored)."""
    import hashlib

    h = hashlib.sha256(f"{SERVER.pid()}|{port()}|{with_alerts}|{ROOT}".encode())
    files = [ROOT / "prefect.yaml", alerts_mod.ALERTS_FILE, *sorted((ROOT / "flows").rglob("*.py")),
             *sorted((ROOT / "stack").glob("*.py"))]
    for f in files:
        h.update(f.read_bytes() if f.exists() else b"-")
    for key in sorted(k for k in os.environ if k.startswith("PGHA_ALERT_")):
        h.update(f"{key}={os.environ[key]}".encode())
    return h.hexdigest()


def start_all(with_alerts: bool = True) -> list[str]:
    """Everything up; a second call with nothing changed only checks (about a second: `make up` runs it each time)."""
    wanted = history_days()  # a bad retention is refused before anything starts
    stamp = server_dir() / "deployed.sha256"
    if SERVER.pid() is not None and healthy() and served_history_days() != wanted:
        # The vacuum's settings are read when the server starts: say so rather than restart it here
        # (a restart would cut every run in flight).
        note = [f"history: the running server keeps {server_mod.describe_days(served_history_days())}; "
                f"{wanted} days apply after `pgha server stop` and `pgha server start`"]
    else:
        note = []
    if SERVER.pid() is not None and WORKER.pid() is not None and healthy():
        try:
            current = stamp.read_text().strip() == fingerprint(with_alerts)
        except OSError:
            current = False
        if current:  # the slow steps (pool, `prefect deploy`) are skipped; alerts re-applied (quick)
            steps = [start_server(), "work pool, deployments and automation as deployed: nothing changed"]
            if with_alerts:
                try:
                    steps += apply_alerts()
                except UsageError as exc:
                    steps.append(f"alerts not applied: {exc}")
            return [*steps, start_worker(), *note]
    stamp.unlink(missing_ok=True)
    steps = [start_server(), ensure_pool(), deploy(), apply_follow_up()]
    if with_alerts:
        try:
            steps += apply_alerts()
        except UsageError as exc:
            steps.append(f"alerts not applied: {exc}")
    steps.append(start_worker())
    stamp.write_text(fingerprint(with_alerts) + "\n")
    return [*steps, *note] if note else [*steps, f"history: flow runs older than {wanted} days are deleted"]


def stop_all() -> list[str]:
    (server_dir() / URL_FILE).unlink(missing_ok=True)
    out = []
    for p in (WORKER, SERVER):
        out.append(f"{p.name} stopped" if p.stop() else f"{p.name} was not running")
    return out


def status() -> dict[str, object]:
    return {"ui": ui_url(), "api": api_url(), "server_pid": SERVER.pid(), "server_healthy": healthy(),
            "worker_pid": WORKER.pid(), "logs": str(server_dir()),
            "history": server_mod.describe_days(served_history_days()) if healthy() else
            f"{history_days()} days once started"}
