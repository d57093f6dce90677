"""The Prefect control plane hardened (issues 11 and 12), on a real server, two workers and a cluster.

One server (127.0.0.1:26500, its own state directory and PREFECT_HOME) started by `pgha server
start` with basic auth; a webhook receiver on 127.0.0.1:26509; a 1-node / 1-etcd cluster
pgha-it-pa1 (26501-26503). A second worker ("another machine": its own state directory, the
server's URL and a 0600 copy of the auth file) joins the same pool.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.integration.conftest import QUICK_WORKER, ROOT, Cluster, pgha, running_cluster, without_shared_api
from tests.integration.test_audit_server import Receiver

SERVER_PORT = 26500
HOOK_PORT = 26509
API = f"http://127.0.0.1:{SERVER_PORT}/api"
SCOPE = "pgha-it-pa1"
LIMIT = f"pgha-{SCOPE}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver(HOOK_PORT)
    yield r
    r.close()


@pytest.fixture(scope="module")
def server_env(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
               receiver: Receiver) -> Iterator[dict[str, str]]:
    """`pgha server start` (auth on) for this module's state directory; stopped (exactly) at the end.

    The env has no PREFECT_API_AUTH_STRING: the pgha CLI finds the credentials itself."""
    work = tmp_path_factory.mktemp("pa-server")
    env = dict(without_shared_api(base_env), **QUICK_WORKER, PGHA_SERVER_PORT=str(SERVER_PORT), PGHA_STATE_DIR=str(work / "state"),
               PREFECT_HOME=str(work / "prefect"), PREFECT_LOCAL_STORAGE_PATH=str(work / "prefect" / "storage"),
               PGHA_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{HOOK_PORT}/hook")
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_API_AUTH_STRING", None)
    env.pop("PGHA_NO_SERVER", None)
    try:
        res = pgha(env, "server", "start", timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "alert pgha-unhealthy-after-failure created" in res.stdout, res.stdout
        yield env
    finally:
        pgha(dict(env, PGHA_STATE_DIR=str(work / "b-state")), "worker", "stop", "--name", "b", timeout=60)
        stop = pgha(env, "server", "stop", "--volumes", timeout=120)
        assert stop.returncode == 0, stop.stderr


def auth_of(env: dict[str, str]) -> str:
    return (Path(env["PGHA_STATE_DIR"]) / "server" / "api-auth").read_text().strip()


def authed(env: dict[str, str]) -> dict[str, str]:
    """What an operator exports to use `prefect` against the server (the secret via the environment)."""
    return dict(env, PREFECT_API_URL=API, PREFECT_API_AUTH_STRING=auth_of(env))


def api(env: dict[str, str], method: str, path: str, body: Any = None, auth: str | None = "") -> httpx.Response:
    headers = {}
    secret = auth_of(env) if auth == "" else auth
    if secret is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
    for _ in range(5):  # SQLite busy under a loaded machine answers 503 now and then: retry those only
        r = httpx.request(method, f"{API}{path}", json=body, headers=headers, timeout=30, trust_env=False)
        if r.status_code != 503:
            return r
        time.sleep(2)
    return r


def prefect(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("prefect")), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def flow_run(env: dict[str, str], run_id: str) -> dict[str, Any]:
    r = api(env, "GET", f"/flow_runs/{run_id}")
    r.raise_for_status()
    return dict(r.json())


def wait_state(env: dict[str, str], run_id: str, states: set[str], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = flow_run(env, run_id)
        if run["state_type"] in states or run["state_name"] in states:
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} not in {states} within {timeout}s: {run.get('state_name')} "
                         f"({((run.get('state') or {}).get('message') or '')[:500]})")


def start_deployment(env: dict[str, str], name: str, params: dict[str, Any]) -> str:
    r = api(env, "GET", f"/deployments/name/{name}")
    r.raise_for_status()
    run = api(env, "POST", f"/deployments/{r.json()['id']}/create_flow_run", {"parameters": params})
    run.raise_for_status()
    return str(run.json()["id"])


@pytest.fixture(scope="module")
def cluster(engine: docker.DockerClient, server_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    spec = {"scope": SCOPE, "nodes": 1, "etcd_members": 1, "ports": {"rw": 26501, "ro": 26502, "stats": 26503}, "pooler": {"enabled": False}}
    with running_cluster(engine, server_env, tmp_path_factory.mktemp("pa1"), spec) as c:
        yield c


def resources(engine: docker.DockerClient) -> tuple[dict[str, str], list[str]]:
    flt = {"label": f"pgha.cluster={SCOPE}"}
    return ({c.name: c.id for c in engine.containers.list(all=True, filters=flt)},
            sorted(v.name for v in engine.volumes.list(filters=flt)))


# ---- authentication ----


def test_api_needs_credentials_and_the_cli_brings_them(server_env: dict[str, str]) -> None:
    assert api(server_env, "POST", "/flows/filter", {}, auth=None).status_code == 401
    assert api(server_env, "POST", "/flows/filter", {}, auth="pgha:wrong-password-0123456789").status_code == 401
    assert api(server_env, "POST", "/flows/filter", {}).status_code == 200
    assert api(server_env, "GET", "/health", auth=None).status_code == 200  # probes stay open
    path = Path(server_env["PGHA_STATE_DIR"]) / "server" / "api-auth"
    assert path.stat().st_mode & 0o777 == 0o600
    token = auth_of(server_env).split(":", 1)[1]
    # Never in argv (any process), never in the server's or worker's log.
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                assert token.encode() not in (proc / "cmdline").read_bytes(), proc.name
            except OSError:
                pass
    for log in (Path(server_env["PGHA_STATE_DIR"]) / "server").glob("*.log"):
        assert token not in log.read_text(errors="replace"), log
    # `prefect` needs the credentials; with them (exported, not in argv) it works.
    bare = prefect(dict(server_env, PREFECT_API_URL=API), "deployment", "ls", timeout=120)
    assert bare.returncode != 0 and "401" in bare.stdout + bare.stderr, bare.stdout[-500:] + bare.stderr[-500:]
    ok = prefect(authed(server_env), "deployment", "ls", timeout=120)
    assert ok.returncode == 0 and "default-teardown" in ok.stdout, ok.stderr[-1000:]
    # A worker for "another machine" refuses an auth file others can read, in one line.
    loose = Path(server_env["PGHA_STATE_DIR"]).parent / "loose-auth"
    loose.write_text(auth_of(server_env) + "\n")
    loose.chmod(0o644)
    res = pgha(server_env, "worker", "start", "--name", "loose", "--api-url", API, "--auth-file", str(loose))
    assert res.returncode == 2 and "chmod 600" in res.stderr and "Traceback" not in res.stderr, res.stderr
    loose.unlink()


# ---- deployments by scope ----


RUN_WITHIN_S = 300  # a flow run's process starts, imports pgha and ends (seconds at load 14; minutes at load 60+)


def run_logs(env: dict[str, str], run_id: str) -> str:
    logs = api(env, "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}).json()
    return "\n".join(str(entry["message"]) for entry in logs)


def test_a_deployment_takes_a_scope_and_refuses_a_spec(cluster: Cluster, server_env: dict[str, str]) -> None:
    """No deployment's form takes a spec: the server refuses a run that passes one (the schema is
    closed); a run that skips the schema fails binding it, before any step; by scope, the run
    works on the cluster `pgha up` stored (pause, then resume, through the worker)."""
    deps = api(server_env, "POST", "/deployments/filter", {}).json()
    ours = [d for d in deps if d["entrypoint"].startswith("flows/deployments.py:")]
    assert len(ours) >= 19, [d["name"] for d in deps]
    for d in ours:
        schema = d["parameter_openapi_schema"]
        assert "spec" not in schema["properties"] and schema["additionalProperties"] is False, (d["name"], schema)
        assert "ClusterSpec" not in json.dumps(schema), d["name"]
    forged = {"scope": SCOPE, "spec": {"scope": SCOPE, "image": "attacker/root:latest"}}
    # `prefect deployment run -p spec=...`, as a holder of the auth string would try it.
    res = prefect(authed(server_env), "deployment", "run", "pause/pause", "--param", f"scope={SCOPE}",
                  "--param", f"spec={json.dumps(forged['spec'])}", timeout=180)
    assert res.returncode != 0 and "spec" in res.stdout + res.stderr, res.stdout[-1500:] + res.stderr[-1500:]
    dep = api(server_env, "GET", "/deployments/name/pause/pause").json()
    refused = api(server_env, "POST", f"/deployments/{dep['id']}/create_flow_run", {"parameters": forged})
    assert refused.status_code == 409 and "spec" in refused.text, refused.text[:500]
    # The run asks the server not to check its parameters: the flow cannot take them.
    skipped = api(server_env, "POST", f"/deployments/{dep['id']}/create_flow_run",
                  {"parameters": forged, "enforce_parameter_schema": False})
    skipped.raise_for_status()
    failed = wait_state(server_env, skipped.json()["id"], {"FAILED", "CRASHED", "COMPLETED"}, timeout=RUN_WITHIN_S)
    assert failed["state_type"] != "COMPLETED", failed["state"]
    assert "maintenance mode" not in run_logs(server_env, failed["id"])
    # By scope: the stored spec, through the worker.
    for name, said in (("pause/pause", "maintenance mode on"), ("resume/resume", "maintenance mode off")):
        run_id = start_deployment(server_env, name, {"scope": SCOPE})
        done = wait_state(server_env, run_id, {"FAILED", "CRASHED", "COMPLETED"}, timeout=RUN_WITHIN_S)
        assert done["state_type"] == "COMPLETED", done["state"]
        # The run's logs reach the server in batches, possibly after its final state: wait for the line.
        deadline = time.monotonic() + 60
        while said not in (logs := run_logs(server_env, run_id)) and time.monotonic() < deadline:
            time.sleep(2)
        assert said in logs, logs[-1500:]
    # A scope never brought up on this host: refused in one line, nothing changed.
    run_id = start_deployment(server_env, "pause/pause", {"scope": "pgha-it-pa8"})
    done = wait_state(server_env, run_id, {"FAILED", "CRASHED", "COMPLETED"}, timeout=RUN_WITHIN_S)
    assert done["state_type"] == "FAILED" and "no cluster 'pgha-it-pa8' was brought up on this host" in (
        done["state"]["message"] or ""), done["state"]


# ---- approval, the global limit, a second worker ----


@pytest.mark.timing_sensitive
def test_teardown_deployment_waits_for_approval_and_the_limit_refuses_another_worker(
        cluster: Cluster, server_env: dict[str, str], engine: docker.DockerClient, receiver: Receiver) -> None:
    before = resources(engine)
    assert before[1], "the cluster has volumes"
    dep = api(server_env, "GET", "/deployments/name/teardown/default-teardown").json()
    assert "confirm" not in dep["parameter_openapi_schema"].get("properties", {})
    # A deployment run takes no `confirm` parameter: the scope typed into the paused run's form is the
    # confirmation (flows/teardown.py), and nothing changes before it.
    run_id = start_deployment(server_env, "teardown/default-teardown", {"scope": SCOPE, "volumes": True})
    paused = wait_state(server_env, run_id, {"PAUSED"}, timeout=120)
    assert paused["state"]["state_details"].get("run_input_keyset"), paused["state"]  # a form waits in the UI
    assert resources(engine) == before

    # Worker b: another machine (its own state directory: the host flock is not shared), the
    # server's URL and a 0600 copy of its auth file.
    b_state = Path(server_env["PGHA_STATE_DIR"]).parent / "b-state"
    b_auth = b_state.parent / "b-auth"
    b_auth.write_text(auth_of(server_env) + "\n")
    b_auth.chmod(0o600)
    b_env = dict(server_env, PGHA_STATE_DIR=str(b_state))
    pgha(b_env, "worker", "stop", "--name", "b", timeout=60)  # a first try that failed may have left it running
    res = pgha(b_env, "worker", "start", "--name", "b", "--api-url", API, "--auth-file", str(b_auth), timeout=120)
    assert res.returncode == 0 and "worker b started" in res.stdout, res.stdout + res.stderr
    # Worker a's machine "goes down" (its container frozen: it polls no more; the paused teardown it
    # runs lives on).
    worker_a = engine.containers.get(json.loads(pgha(server_env, "server", "status", "--json").stdout)["worker"]["container"])
    worker_a.pause()
    try:
        second = start_deployment(server_env, "pause/pause", {"scope": SCOPE})
        done = wait_state(server_env, second, {"FAILED", "COMPLETED", "CRASHED"}, timeout=150)
    finally:
        worker_a.unpause()
    msg = done["state"]["message"] or ""
    assert done["state_type"] == "FAILED", done["state"]
    assert f"cluster {SCOPE} is busy: teardown flow run '{paused['name']}'" in msg, msg
    assert f"concurrency limit {LIMIT}" in msg and "retry when it ends" in msg, msg
    b_log = (b_state / "server" / "worker-b.log").read_text(errors="replace")
    assert f"Flow run '{done['name']}'" in b_log, b_log[-2000:]  # worker b ran it: a's machine was down
    # Worker b's machine goes away again: the runs below are this machine's (b has no stored spec of
    # the cluster, so a run it picked would be refused before the step this test looks at).
    stop_b = pgha(b_env, "worker", "stop", "--name", "b", timeout=60)
    assert stop_b.returncode == 0, stop_b.stdout + stop_b.stderr

    # The wrong scope typed: refused, nothing changed; the limit is free again.
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: API, PREFECT_API_AUTH_STRING: auth_of(server_env)}):
        resume_flow_run(run_id, run_input={"scope": "pgha-it-pa9"})
    refused = wait_state(server_env, run_id, {"FAILED", "COMPLETED", "CRASHED"}, timeout=90)
    assert refused["state_type"] == "FAILED", refused["state"]
    assert "approval refused: 'pgha-it-pa9' was typed, not the cluster's scope" in refused["state"]["message"]
    assert resources(engine) == before
    assert (Path(server_env["PGHA_STATE_DIR"]) / SCOPE / "secrets.json").exists()
    gcl = api(server_env, "GET", f"/v2/concurrency_limits/{LIMIT}").json()
    assert gcl["limit"] == 1 and gcl["active_slots"] == 0, gcl
    assert pgha(server_env, "status", "--scope", SCOPE).returncode == 0

    # A mutating flow that fails and leaves its cluster unhealthy alerts: pg-1 stopped, then the
    # rolling-restart deployment (no CLI check before it: the flow itself fails on the sick cluster).
    engine.containers.get(cluster.container("pg-1")).stop(timeout=10)
    failing = start_deployment(server_env, "restart/rolling-restart", {"scope": SCOPE, "member": "pg-1"})
    assert wait_state(server_env, failing, {"FAILED", "CRASHED", "COMPLETED"}, timeout=150)["state_type"] != "COMPLETED"
    alert = receiver.wait_for(f"restart failed and left cluster {SCOPE} unhealthy", timeout=60)
    assert "operation: restart" in alert["body"], alert

    # The CLI path needs no UI approval: the same teardown with volumes, from the CLI, just runs.
    t0 = time.monotonic()
    down = pgha(server_env, "down", "--volumes", "--yes", "--purge-backups", "--scope", SCOPE, timeout=180)
    assert down.returncode == 0, down.stderr[-2000:]
    assert resources(engine) == ({}, []) and time.monotonic() - t0 < 120


# ---- proactive alerts ----


@pytest.mark.timing_sensitive
def test_silence_alert_reaches_the_webhook_when_no_audit_runs(server_env: dict[str, str], receiver: Receiver,
                                                              tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.yaml"
    alerts.write_text(json.dumps({
        "notification": {"kind": "webhook", "block": "pgha-alerts"},
        "alerts": [{"name": "pgha-health-flow-failed", "tags": ["health"], "states": ["Failed", "Crashed"]}],
        "silence": {"audit_within_s": 15, "backup_within_s": 3600},
    }))
    res = pgha(server_env, "alerts", "apply", "--file", str(alerts), "--scope", "pgha-it-pa2")
    assert res.returncode == 0, res.stderr
    assert "alert pgha-silence-audit-pgha-it-pa2 created" in res.stdout, res.stdout
    t0 = time.monotonic()
    body = receiver.wait_for("no health audit of cluster pgha-it-pa2 within 15 s", timeout=90)
    assert "pgha.audit.completed" in body["body"], body
    assert time.monotonic() - t0 < 90
    # Re-applying leaves an unchanged automation alone (its window is not restarted).
    again = pgha(server_env, "alerts", "apply", "--file", str(alerts), "--scope", "pgha-it-pa2")
    assert "alert pgha-silence-audit-pgha-it-pa2 unchanged" in again.stdout, again.stdout
    # The backup window (1 h) has not passed: no backup alert.
    assert not [b for b in receiver.bodies if "no backup of cluster pgha-it-pa2" in json.dumps(b)]


# ---- the UI behind the login ----


def test_the_ui_asks_for_the_login(server_env: dict[str, str]) -> None:
    """Headless Chromium: a wrong password stays on the login page; the auth file's contents get in."""
    import re

    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    chromium = Path("/usr/bin/chromium")
    assert chromium.exists(), "Chromium is missing: run `make browser` (apt-get install -y chromium)"
    ui = API.removesuffix("/api")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{ui}/deployments")
            page.wait_for_url("**/login**")
            page.get_by_placeholder("admin:pass").fill("pgha:not-the-password")
            page.get_by_role("button", name="Login").click()
            page.get_by_text("Authentication failed").first.wait_for()
            assert "/login" in page.url
            page.get_by_placeholder("admin:pass").fill(auth_of(server_env))
            page.get_by_role("button", name="Login").click()
            page.wait_for_url(re.compile(r"^(?!.*login).*$"))
            # The list is the UI's own API call after the page loads: on a loaded machine it can miss the
            # first 60 s, so the page is loaded once more before the test fails (with a screenshot).
            for attempt in (1, 2):
                page.goto(f"{ui}/deployments")
                try:
                    page.get_by_text("default-teardown").first.wait_for()
                    break
                except PlaywrightTimeout:
                    shot = ROOT / "test-artifacts" / f"ui-login-deployments-{attempt}.png"
                    shot.parent.mkdir(exist_ok=True)
                    page.screenshot(path=str(shot))
                    if attempt == 2:
                        raise
        finally:
            browser.close()


def test_zz_credentials_go_only_to_the_server_pgha_started(server_env: dict[str, str], engine: docker.DockerClient,
                                                          tmp_path: Path) -> None:
    """The control plane stopped and another process answering on the server's port (as a local user
    could bind it): a flow-running verb refuses in one line and that process receives no credential;
    then `pgha server start` brings the server back (last in the file: the other tests need it
    running). The worker keeps running and polling all along: its guard refuses every connection
    to the impostor's socket (the worker's log and its health check say so) and the impostor
    receives nothing from it; once the server is back the worker heartbeats to it again."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Impostor(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(self.headers.get("Authorization") or "")
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b"true")

        do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

        def log_message(self, *args: object) -> None:
            pass

    plane = {c.labels["pgha.role"]: c for c in engine.containers.list(filters={"label": f"pgha.server-port={SERVER_PORT}"})}
    assert {"prefect-server", "prefect-worker"} <= set(plane), list(plane)
    worker = plane["prefect-worker"]
    plane["prefect-server"].stop(timeout=30)
    httpd = ThreadingHTTPServer(("127.0.0.1", SERVER_PORT), Impostor)
    since = int(time.time())
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        # The worker polls (every 10 s) and its health check runs (every 10 s): both are refused by
        # the guard before they connect. Waited on, not slept: up to 120 s on a loaded machine.
        deadline, log, health = time.monotonic() + 120, "", ""
        while time.monotonic() < deadline:
            log = worker.logs(since=since).decode(errors="replace")
            worker.reload()
            health = " ".join(h.get("Output", "") for h in (worker.attrs["State"].get("Health") or {}).get("Log", [])
                              if h.get("Start", "") >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since)))
            if "is not held by the Prefect server pgha started" in log and "nothing sent" in health:
                break
            time.sleep(2)
        assert "is not held by the Prefect server pgha started; nothing sent" in log, log[-2000:]
        assert "nothing sent" in health, health
        assert worker.status == "running"
        assert not seen, seen  # the worker never connected: not even a request without credentials

        # `up` of a cluster that does not exist yet: the verb looks for its Prefect API first, so a
        # refusal leaves nothing behind (the module's cluster may be gone: the teardown test).
        spec = tmp_path / "impostor.yaml"
        spec.write_text(json.dumps({"scope": "pgha-it-pa2", "nodes": 1, "etcd_members": 1,
                                    "ports": {"rw": 26504, "ro": 26505, "stats": 26506},
                                    "pooler": {"enabled": False}, "backup": {"enabled": False}}))
        res = pgha(server_env, "up", "--spec", str(spec), timeout=300)
        assert res.returncode != 0 and "not the Prefect server pgha started" in res.stderr, res.stdout + res.stderr
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert seen and not any(seen), seen  # asked /health, and never given the credentials
        assert not engine.containers.list(all=True, filters={"label": "pgha.cluster=pgha-it-pa2"})
    finally:
        for c in engine.containers.list(all=True, filters={"label": "pgha.cluster=pgha-it-pa2"}):
            c.remove(force=True)
        httpd.shutdown()
        httpd.server_close()
        back = pgha(server_env, "server", "start", timeout=600)
        assert back.returncode == 0, back.stdout + back.stderr
    assert api(server_env, "POST", "/flows/filter", {}).status_code == 200
    # The same worker (never restarted) reaches the new server: the guard lets it through to the
    # socket the new server's container published.
    restarted = time.time()
    name = next(e.split("=", 1)[1] for e in worker.attrs["Config"]["Env"] if e.startswith("PGHA_WORKER_NAME="))
    deadline, beat = time.monotonic() + 120, 0.0
    while time.monotonic() < deadline and beat <= restarted:
        for w in api(server_env, "POST", "/work_pools/pgha/workers/filter", {}).json():
            if w.get("name") == name and w.get("last_heartbeat_time"):
                beat = max(beat, dt.datetime.fromisoformat(w["last_heartbeat_time"].replace("Z", "+00:00")).timestamp())
        time.sleep(2)
    assert beat > restarted, "the worker did not heartbeat to the restarted server within 120 s"
