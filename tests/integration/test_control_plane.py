"""The supervised control plane: the Prefect server and worker as containers the engine restarts.

One control plane on 127.0.0.1:28710 with its own state directory. A second `pgha server start`
changes nothing; the API secret is in no container's configuration; a SIGKILLed server process
(what the OOM killer or a crash does) is restarted by the engine and the next scheduled run
runs; runs that came due while the worker was down run late, each once.

`docker kill` is not the crash to test: the engine records it as a deliberate stop, and no
restart policy restarts a container killed through the engine's API. The process is killed
from the host, as the kernel would.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.integration.conftest import ROOT, pgha

pytestmark = pytest.mark.integration

PORT = 28710
API = f"http://127.0.0.1:{PORT}/api"
INTERVAL_S = 60
BACK_WITHIN_S = 60  # a SIGKILLed server answers again (the engine restarts it at once; the app starts in ~5-20 s)


@pytest.fixture(scope="module")
def plane_env(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    work = tmp_path_factory.mktemp("cp")
    env = dict(base_env, PGHA_SERVER_PORT=str(PORT), PGHA_STATE_DIR=str(work / "state"),
               PREFECT_HOME=str(work / "prefect"), PREFECT_LOCAL_STORAGE_PATH=str(work / "prefect" / "storage"))
    for k in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PGHA_NO_SERVER"):
        env.pop(k, None)
    try:
        res = pgha(env, "server", "start", "--no-alerts", timeout=900)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "restart unless-stopped" in res.stdout, res.stdout
        env["PREFECT_API_URL"] = API
        env["PREFECT_API_AUTH_STRING"] = (work / "state" / "server" / "api-auth").read_text().strip()
        yield env
    finally:
        stop = pgha(env, "server", "stop", "--volumes", timeout=180)
        assert stop.returncode == 0, stop.stderr


def status(env: dict[str, str]) -> dict[str, Any]:
    res = pgha(env, "server", "status", "--json", timeout=60)
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def api(env: dict[str, str], path: str, body: object | None = None) -> Any:
    user, pw = env["PREFECT_API_AUTH_STRING"].split(":", 1)
    r = httpx.request("POST" if body is not None else "GET", API + path, json=body, auth=(user, pw),
                      timeout=10, trust_env=False)
    r.raise_for_status()
    return r.json()


def answers() -> bool:
    try:
        return httpx.get(f"{API}/health", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def runs_of(env: dict[str, str], deployment_id: str) -> list[dict[str, Any]]:
    return api(env, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}, "limit": 200})  # type: ignore[no-any-return]


def ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@pytest.fixture(scope="module")
def tick(plane_env: dict[str, str]) -> str:
    """A deployment of a do-nothing flow on a 1-minute interval schedule, run by the pool's worker."""
    env = dict(plane_env, PGHA_HOME=str(ROOT))
    import subprocess
    import sys

    dep = subprocess.run([str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy",
                          "tests/integration/tick_flow.py:tick", "-n", "tick", "-p", "pgha", "--interval",
                          str(INTERVAL_S)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert dep.returncode == 0, dep.stdout[-2000:] + dep.stderr[-2000:]
    return str(api(plane_env, "/deployments/name/pgha-test-tick/tick")["id"])


def wait_completed_after(env: dict[str, str], dep_id: str, after: dt.datetime, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [r for r in runs_of(env, dep_id) if r["state_type"] == "COMPLETED"
                and (ts(r["expected_start_time"]) or after) >= after]
        if done:
            return done[0]
        time.sleep(3)
    raise AssertionError(f"no run of the tick deployment scheduled after {after} completed within {timeout:.0f}s: "
                         f"{[(r['name'], r['state_name'], r['expected_start_time']) for r in runs_of(env, dep_id)]}")


def assert_each_ran_once(env: dict[str, str], dep_id: str) -> None:
    runs = runs_of(env, dep_id)
    starts = [r["expected_start_time"] for r in runs]
    assert len(starts) == len(set(starts)), f"two runs for one scheduled time: {sorted(starts)}"
    assert all(r["run_count"] <= 1 for r in runs), [(r["name"], r["run_count"]) for r in runs]


def test_status_shows_the_supervision(plane_env: dict[str, str]) -> None:
    st = status(plane_env)
    for role in ("server", "worker"):
        assert st[role]["state"] == "running" and st[role]["restart_policy"] == "unless-stopped", st[role]
        assert st[role]["started_at"] and st[role]["container"].startswith(f"pgha-prefect-{role}-")
    assert st["server_healthy"] is True and st["database"]["volume"].startswith("pgha-prefect-db-")


def test_a_second_start_changes_nothing(plane_env: dict[str, str]) -> None:
    before = status(plane_env)
    res = pgha(plane_env, "server", "start", "--no-alerts", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "server already running" in res.stdout and "worker already running" in res.stdout
    assert "nothing changed" in res.stdout, res.stdout
    after = status(plane_env)
    for role in ("server", "worker"):
        assert after[role]["started_at"] == before[role]["started_at"]
        assert after[role]["restart_count"] == before[role]["restart_count"]


def test_the_secret_is_in_no_container_configuration(plane_env: dict[str, str], engine: docker.DockerClient) -> None:
    secret = plane_env["PREFECT_API_AUTH_STRING"].split(":", 1)[1]
    st = status(plane_env)
    for role, var in (("server", "PREFECT_SERVER_API_AUTH_STRING"), ("worker", "PREFECT_API_AUTH_STRING")):
        c = engine.containers.get(st[role]["container"])
        assert secret not in json.dumps(c.attrs), f"{role}: docker inspect shows the secret"
        for layer in engine.api.history(c.attrs["Config"]["Image"]):
            assert secret not in json.dumps(layer)
        # Only the process's own environment holds it (read inside the container, as root).
        # pid 1 is the container's init; its one child is the entrypoint, exec'd into `python -m prefect`.
        pid = c.exec_run(["cat", "/proc/1/task/1/children"]).output.decode().split()[0]
        environ = c.exec_run(["cat", f"/proc/{pid}/environ"]).output.decode(errors="replace")
        assert f"{var}={plane_env['PREFECT_API_AUTH_STRING']}" in environ.split("\0"), role


@pytest.mark.timing_sensitive
def test_a_sigkilled_server_comes_back_and_the_next_schedule_runs(plane_env: dict[str, str], tick: str) -> None:
    st = status(plane_env)
    count = st["server"]["restart_count"]
    killed = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    os.kill(st["server_pid"], signal.SIGKILL)  # the container's init: the whole container dies, as on a crash
    while not answers():
        assert time.monotonic() - t0 < BACK_WITHIN_S, f"the server did not answer within {BACK_WITHIN_S}s of SIGKILL"
        time.sleep(0.5)
    back_s = time.monotonic() - t0
    after = status(plane_env)
    assert after["server"]["restart_count"] == count + 1 and after["server"]["state"] == "running"
    run = wait_completed_after(plane_env, tick, killed, timeout=INTERVAL_S + 150)
    print(f"\nserver back {back_s:.1f}s after SIGKILL; next scheduled run {run['name']} completed "
          f"{(ts(run['end_time']) - killed).total_seconds():.0f}s after the kill")  # type: ignore[operator]
    assert_each_ran_once(plane_env, tick)


def test_runs_due_while_the_worker_is_down_run_late_once(plane_env: dict[str, str], tick: str,
                                                          engine: docker.DockerClient) -> None:
    worker = engine.containers.get(status(plane_env)["worker"]["container"])
    worker.stop(timeout=30)  # a deliberate stop: the engine leaves it stopped; `pgha server start` brings it back
    stopped = dt.datetime.now(dt.UTC)
    try:
        deadline = time.monotonic() + INTERVAL_S + 120
        late: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not late:
            late = [r for r in runs_of(plane_env, tick) if r["state_name"] == "Late"]
            time.sleep(5)
        assert late, "no run was marked Late while the worker was down"
    finally:
        res = pgha(plane_env, "server", "start", "--no-alerts", timeout=300)
        assert res.returncode == 0 and "worker started" in res.stdout, res.stdout + res.stderr
    due = ts(late[0]["expected_start_time"])
    assert due is not None and due >= stopped - dt.timedelta(seconds=INTERVAL_S)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        run = api(plane_env, f"/flow_runs/{late[0]['id']}")
        if run["state_type"] == "COMPLETED":
            break
        time.sleep(3)
    assert run["state_type"] == "COMPLETED", run["state_name"]
    assert_each_ran_once(plane_env, tick)
