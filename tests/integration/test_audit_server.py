"""A real Prefect server + worker + cluster: audit deployments, alerts, and the per-cluster lock.

One server (127.0.0.1:24200, temp PREFECT_HOME), one worker, one webhook receiver on
127.0.0.1:24209 started here, one 3-node / 1-etcd cluster shared by the tests in order:
healthy audit → lock refusal → stopped replica (Failed + alert) → healed → crashed flow alert.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration.conftest import QUICK_WORKER, ROOT, Cluster, pgha, running_cluster, without_shared_api

SERVER_PORT = 24200
HOOK_PORT = 24209
API = f"http://127.0.0.1:{SERVER_PORT}/api"
UI_RUN = f"http://127.0.0.1:{SERVER_PORT}/runs/flow-run/"
SCOPE = "pgha-it-au1"
ALERT_WITHIN_S = 60
AUTH: dict[str, str] = {}  # the Authorization header, set once the server started


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every JSON body it gets."""

    def __init__(self, port: int) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.pings: list[tuple[str, str]] = []  # (path, body) of every heartbeat ping (paths under /hb/)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path.startswith("/hb/"):
                    outer.pings.append((self.path, raw.decode(errors="replace")))
                    self.send_response(200)
                    self.end_headers()
                    return
                try:
                    outer.bodies.append(dict(json.loads(raw)))
                except ValueError:
                    outer.bodies.append({"raw": raw.decode(errors="replace")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, *needles: str, timeout: float = ALERT_WITHIN_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for b in list(self.bodies):
                text = json.dumps(b)
                if all(n in text for n in needles):
                    return b
            time.sleep(0.5)
        raise AssertionError(f"no alert containing {needles} within {timeout}s; got {self.bodies}")

    def wait_ping(self, path: str, after: int = 0, timeout: float = 30) -> str:
        """The body of the first heartbeat ping to `path` among the pings from index `after` on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p, body in self.pings[after:]:
                if p == path:
                    return body
            time.sleep(0.2)
        raise AssertionError(f"no heartbeat ping to {path} within {timeout}s; got {self.pings[after:]}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver(HOOK_PORT)
    yield r
    r.close()


@pytest.fixture(scope="module")
def server_env(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
               receiver: Receiver) -> Iterator[dict[str, str]]:
    """`pgha server start` on a test port and temp PREFECT_HOME; stopped (exactly) at the end."""
    home = tmp_path_factory.mktemp("prefect-au")
    env = dict(without_shared_api(base_env), **QUICK_WORKER, PGHA_SERVER_PORT=str(SERVER_PORT), PREFECT_HOME=str(home),
               PREFECT_LOCAL_STORAGE_PATH=str(home / "storage"), PREFECT_API_URL=API,
               PGHA_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{HOOK_PORT}/hook",
               # the dead man's switch: the worker (so deployment runs) and the CLI ping it
               PGHA_HEARTBEAT_URL=f"http://127.0.0.1:{HOOK_PORT}/hb/{{scope}}",
               # bounded history: the shortest retention the weekly schedules allow, and a vacuum
               # that runs every few seconds instead of hourly so the test sees it work
               PGHA_HISTORY_RETENTION_DAYS="8", PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS="3")
    try:
        res = pgha(env, "server", "start", timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "alert pgha-health-flow-failed created" in res.stdout
        assert "heartbeat: every health audit pings it (healthchecks style)" in res.stdout
        assert "history: flow runs older than 8 days are deleted" in res.stdout
        assert "/hb/" not in res.stdout + res.stderr  # a ping URL is a credential: never printed
        # The server requires its basic-auth secret (kept 0600 in the state dir): `prefect` and
        # the direct API calls here use it, from the environment.
        env["PREFECT_API_AUTH_STRING"] = (Path(env["PGHA_STATE_DIR"]) / "server" / "api-auth").read_text().strip()
        AUTH["Authorization"] = "Basic " + base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode()
        yield env
    finally:
        stop = pgha(env, "server", "stop", "--volumes", timeout=120)
        assert stop.returncode == 0, stop.stderr
        st = pgha(env, "server", "status", "--json", timeout=60)
        assert st.returncode == 1 and json.loads(st.stdout)["server_pid"] is None


@pytest.fixture(scope="module")
def cluster(engine: docker.DockerClient, server_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    spec = {"scope": SCOPE, "nodes": 3, "etcd_members": 1, "ports": {"rw": 25472, "ro": 25473, "stats": 28472}, "pooler": {"enabled": False}}
    with running_cluster(engine, server_env, tmp_path_factory.mktemp("au1"), spec) as c:
        yield c


def prefect(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("prefect")), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def run_audit_deployment(c: Cluster) -> subprocess.CompletedProcess[str]:
    """What CI does: `prefect deployment run 'health-audit/default' --watch`, here for the test cluster."""
    return prefect(c.env, "deployment", "run", "health-audit/default", "--param", f"scope={c.scope}",
                   "--watch", "--watch-timeout", "240")


def api_post(path: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(f"{API}{path}", data=json.dumps(body).encode(), method="POST",  # noqa: S310
                                 headers={"content-type": "application/json", **AUTH})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - the test's own loopback server
        return json.loads(resp.read())


def roles(c: Cluster) -> dict[str, str]:
    res = pgha(c.env, "status", "--json", "--scope", c.scope)
    st = json.loads(res.stdout)
    return {m["member"]: m["pg_role"] for m in st["members"] if m["role"] == "patroni"}


def wait_healthy(c: Cluster, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    res = None
    while time.monotonic() < deadline:
        res = pgha(c.env, "status", "--scope", c.scope)
        if res.returncode == 0:
            return
        time.sleep(2)
    last = (res.stdout[-1500:] + res.stderr[-500:]) if res is not None else ""
    raise AssertionError(f"{c.scope} not healthy within {timeout}s; last status:\n{last}")


def test_server_start_is_idempotent(server_env: dict[str, str]) -> None:
    res = pgha(server_env, "server", "start", timeout=600)
    assert res.returncode == 0, res.stderr
    assert "server already running" in res.stdout and "worker already running" in res.stdout
    assert "alert pgha-health-flow-failed updated" in res.stdout
    automations = api_post("/automations/filter", {})
    assert [a["name"] for a in automations].count("pgha-health-flow-failed") == 1
    again = pgha(server_env, "alerts", "apply")
    assert again.returncode == 0 and "updated" in again.stdout
    assert [a["name"] for a in api_post("/automations/filter", {})].count("pgha-health-flow-failed") == 1
    names = {d["name"] for d in api_post("/deployments/filter", {})}
    assert {"default", "default-teardown", "weekly-switchover"} <= names
    audit = api_post("/deployments/filter", {"flows": {"name": {"any_": ["health-audit"]}}})
    assert [d["name"] for d in audit] == ["default"] and "health" in audit[0]["tags"]
    crons = sorted((s["schedule"]["cron"], s["schedule"]["timezone"]) for s in audit[0]["schedules"])
    assert crons == [("*/15 * * * *", "UTC"), ("7 2 * * *", "UTC")]


def test_healthy_audit_deployment_completes_with_artifacts(cluster: Cluster) -> None:
    res = run_audit_deployment(cluster)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "Completed" in res.stdout
    for key in (f"{SCOPE}-audit", f"{SCOPE}-audit-summary"):
        found = api_post("/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}})
        assert found, f"no artifact {key}"
    table = api_post("/artifacts/filter", {"artifacts": {"key": {"any_": [f"{SCOPE}-audit"]}}})[0]["data"]
    rows = json.loads(table) if isinstance(table, str) else table
    checks = {r["check"] for r in rows}
    assert {"etcd.quorum", "patroni.leader", "replication.streaming", "haproxy.rw_port", "postgres.xid_age",
            "disk.data_volume", "container.restarts"} <= checks
    assert all(r["status"] != "critical" for r in rows), [r for r in rows if r["status"] == "critical"]


def test_second_mutating_flow_is_refused_naming_the_holder(cluster: Cluster, engine: docker.DockerClient) -> None:
    before = {c.name: c.id for c in engine.containers.list(all=True, filters={"label": f"pgha.cluster={SCOPE}"})}
    lock = Path(cluster.env["PGHA_STATE_DIR"]) / SCOPE / "mutating.lock"
    drill = subprocess.Popen([sys.executable, "-m", "cli", "drill", "switchover", "--scope", SCOPE, "--json"],
                             cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
            assert drill.poll() is None, drill.communicate()
            time.sleep(0.1)
        holder = lock.read_text()
        assert holder.startswith("drill flow run '"), holder
        res = pgha(cluster.env, "down", "--scope", SCOPE)
        assert res.returncode == 3, res.stdout + res.stderr
        # One error line (Prefect may log its own shutdown chatter around it).
        errors = [x for x in res.stderr.splitlines() if x.startswith("pgha: error:")]
        assert len(errors) == 1, res.stderr
        line = errors[0]
        assert line.startswith(f"pgha: error: cluster {SCOPE} is busy: drill flow run '"), line
        assert UI_RUN in line and "retry when it ends" in line, line
        # Nothing was removed: the refused teardown changed no container.
        after = {c.name: c.id for c in engine.containers.list(all=True, filters={"label": f"pgha.cluster={SCOPE}"})}
        assert after == before
        # A caller that asks to wait gets the lock once the drill ends.
        waited = pgha(cluster.env, "up", "--spec", str(cluster.spec_file), "--wait", "300")
        assert waited.returncode == 0, waited.stderr[-2000:]
        assert drill.poll() is not None, "up --wait returned while the drill still held the lock"
    finally:
        out, err = drill.communicate(timeout=300)
    assert drill.returncode == 0, err[-2000:]
    assert json.loads(out)["lost_writes"] == []
    bad = pgha(cluster.env, "down", "--scope", SCOPE, "--wait", "-1")
    assert bad.returncode == 2 and "--wait must be between 0 and" in bad.stderr


@pytest.mark.timing_sensitive
def test_stopped_replica_fails_the_audit_and_alerts(cluster: Cluster, engine: docker.DockerClient,
                                                    receiver: Receiver) -> None:
    wait_healthy(cluster)
    replica = next(m for m, role in sorted(roles(cluster).items()) if role == "replica")
    engine.containers.get(cluster.container(replica)).stop(timeout=30)
    try:
        t0 = time.monotonic()
        seen = len(receiver.pings)
        res = run_audit_deployment(cluster)
        assert res.returncode == 1, res.stdout[-3000:]  # --watch's exit code follows the outcome
        assert "Failed" in res.stdout
        # The heartbeat saw the run start, then fail with its verdict (healthchecks.io's convention).
        receiver.wait_ping(f"/hb/{SCOPE}/start", after=seen)
        assert replica in receiver.wait_ping(f"/hb/{SCOPE}/fail", after=seen)
        assert [p for p, _ in receiver.pings[seen:]].index(f"/hb/{SCOPE}/start") < \
            [p for p, _ in receiver.pings[seen:]].index(f"/hb/{SCOPE}/fail")
        body = receiver.wait_for(f"health-audit failed on cluster {SCOPE}", f"container.running {replica}",
                                 timeout=ALERT_WITHIN_S)
        assert UI_RUN in body["body"], body
        assert time.monotonic() - t0 < 240 + ALERT_WITHIN_S
        # The CLI reports the same and exits 1.
        cli = pgha(cluster.env, "audit", "--scope", SCOPE, "--json")
        assert cli.returncode == 1 and "pgha: " not in cli.stderr, cli.stderr  # exit 1 is the verdict, not an error
        report = json.loads(cli.stdout)
        crit = [f for f in report["findings"] if f["status"] == "critical"]
        assert any(f["target"] == replica and f["check"] == "container.running" for f in crit), crit
        assert report["status"] == "critical" and replica in report["message"]
    finally:
        engine.containers.get(cluster.container(replica)).start()
    wait_healthy(cluster)
    seen = len(receiver.pings)
    res = run_audit_deployment(cluster)
    assert res.returncode == 0, res.stdout[-3000:]
    receiver.wait_ping(f"/hb/{SCOPE}", after=seen)  # success: the bare URL
    table = pgha(cluster.env, "audit", "--scope", SCOPE)
    assert table.returncode == 0, table.stdout[-3000:]
    assert "patroni.leader" in table.stdout and f"health audit of {SCOPE}:" in table.stdout


def test_crashed_health_flow_alerts(server_env: dict[str, str], receiver: Receiver) -> None:
    env = dict(server_env, PGHA_HOME=str(ROOT))
    dep = prefect(env, "--no-prompt", "deploy", "tests/integration/crashing_flow.py:crash", "-n", "crash",
                  "-p", "pgha", "-t", "health")
    assert dep.returncode == 0, dep.stdout[-2000:] + dep.stderr[-2000:]
    res = prefect(env, "deployment", "run", "pgha-test-crash/crash", "--param", "scope=pgha-it-au-crash",
                  "--watch", "--watch-timeout", "120")
    assert res.returncode == 1 and "Crashed" in res.stdout, res.stdout[-2000:]
    body = receiver.wait_for("pgha-test-crash crashed on cluster pgha-it-au-crash", "status code")
    assert UI_RUN in body["body"]


def test_history_older_than_the_retention_is_deleted(server_env: dict[str, str]) -> None:
    """Two finished runs with a log each; one is made 9 days old (its end_time, in the server's own
    database: the API stamps states with the current time). The vacuum, with pgha's 8-day retention,
    deletes that run and its log and keeps the recent one."""
    import sqlite3

    status = pgha(server_env, "server", "status", "--json", timeout=60)
    assert json.loads(status.stdout)["history"] == "flow runs for 8 days", status.stdout
    flow_id = api_post("/flows/", {"name": "pgha-test-retention"})["id"]
    runs = {}
    for name in ("old-run", "recent-run"):
        run = api_post("/flow_runs/", {"flow_id": flow_id, "name": name, "state": {"type": "COMPLETED"}})
        api_post("/logs/", [{"name": "pgha.test", "level": 20, "message": f"log of {name}", "flow_run_id": run["id"],
                             "timestamp": dt.datetime.now(dt.UTC).isoformat()}])  # type: ignore[list-item]
        runs[name] = run["id"]
    # The server's database is on its volume (the server runs in a container): read it where the engine keeps it.
    db = sqlite3.connect(Path(json.loads(status.stdout)["database"]["path"]) / "prefect.db", timeout=30)
    try:
        (end,) = db.execute("SELECT end_time FROM flow_run WHERE id = ?", (runs["old-run"],)).fetchone()
        assert end, "a COMPLETED run has an end_time"
        old = (dt.datetime.fromisoformat(str(end)) - dt.timedelta(days=9)).isoformat(sep=" ")
        db.execute("UPDATE flow_run SET end_time = ? WHERE id = ?", (old, runs["old-run"]))
        db.commit()
    finally:
        db.close()

    def logs_of(run_id: str) -> list[Any]:
        return list(api_post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}}))

    assert logs_of(runs["old-run"]), "the old run's log is there before the vacuum"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = api_post("/flow_runs/filter", {"flow_runs": {"id": {"any_": list(runs.values())}}})
        if [r["name"] for r in found] == ["recent-run"]:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"the 9-day-old run was not vacuumed within 60 s: {[r['name'] for r in found]}")
    assert logs_of(runs["old-run"]) == [] and logs_of(runs["recent-run"]), "logs go with their run, and only theirs"
