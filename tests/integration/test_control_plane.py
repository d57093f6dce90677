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


# ---- the reboot drill ---------------------------------------------------------------------------
# A power cut stops every process at once, the engine included; then the machine boots and starts
# only the engine. The suite's engine is shared by two test workers, so the drill runs a private
# engine of its own (its own data root, exec root and socket, no bridge: the control plane uses the
# host's network) with the control image loaded into it. The "power cut" SIGKILLs every process of
# that engine (dockerd, its containerd, the shims and every container's processes); the "boot"
# starts that dockerd again, and nothing else.
DRILL_PORT = 28720
DRILL_API = f"http://127.0.0.1:{DRILL_PORT}/api"
BOOT_SERVER_WITHIN_S = 90  # engine start -> the server answers
BOOT_WORKER_WITHIN_S = 150  # engine start -> the worker's container reports healthy (it heartbeated)
BOOT_RUN_WITHIN_S = 240  # engine start -> a scheduled run (1-minute interval) completed


# The private engine's own bridge. Not `--bridge none`: a dockerd started with it deletes the
# host's default bridge `docker0` (moby's removeDefaultBridgeInterface), which the shared engine
# every other test uses needs (image builds, default-network containers). An address no Docker
# address pool hands out.
PRIVATE_BRIDGE = "pgha-cpdrill0"
PRIVATE_BRIDGE_CIDR = "10.254.77.1/24"


def ensure_private_bridge() -> None:
    import subprocess

    if subprocess.run(["ip", "link", "show", PRIVATE_BRIDGE], capture_output=True, check=False).returncode == 0:
        return
    for cmd in (["ip", "link", "add", "name", PRIVATE_BRIDGE, "type", "bridge"],
                ["ip", "addr", "add", PRIVATE_BRIDGE_CIDR, "dev", PRIVATE_BRIDGE],
                ["ip", "link", "set", PRIVATE_BRIDGE, "up"]):
        subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def remove_private_bridge() -> None:
    import subprocess

    subprocess.run(["ip", "link", "delete", PRIVATE_BRIDGE], check=False, capture_output=True, timeout=30)


class PrivateEngine:
    """A dockerd this test starts (and ends, by pid) with everything under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.proc: Any = None

    def argv(self) -> list[str]:
        return ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                "-H", f"unix://{self.sock}", "--pidfile", str(self.root / "docker.pid"), "--bridge", PRIVATE_BRIDGE,
                "--iptables=false", "--ip-masq=false", "--storage-driver", "overlay2"]

    def start(self) -> float:
        import subprocess

        ensure_private_bridge()
        t0 = time.monotonic()
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - the daemon's log for as long as it runs
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = t0 + 60
        while time.monotonic() < deadline:
            try:
                docker.DockerClient(base_url=f"unix://{self.sock}", timeout=5).ping()
                return time.monotonic() - t0
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.3)
        raise AssertionError(f"the private dockerd did not answer: {(self.root / 'dockerd.log').read_text()[-1500:]}")

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=f"unix://{self.sock}", timeout=120)

    def pids(self) -> list[int]:
        """dockerd and every process below it (containerd, the shims, the containers' processes)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        # Shims re-parent to init when containerd starts them; find them by our exec root.
        shims = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()
                 and str(self.root / "exec") in _cmdline(e)]
        out, todo = [], [self.proc.pid, *shims]
        while todo:
            pid = todo.pop()
            if pid not in out:
                out.append(pid)
                todo += children.get(pid, [])
        return out

    def power_cut(self) -> int:
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)
        return len(pids)

    def unmount(self) -> None:
        import subprocess

        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                  if line.split()[1].startswith(f"{self.root}/")]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False, timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except Exception:  # noqa: BLE001 - then as a power cut
                self.power_cut()


def _cmdline(entry: Path) -> str:
    try:
        return (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.timing_sensitive
def test_reboot_drill(base_env: dict[str, str], engine: docker.DockerClient,
                      tmp_path_factory: pytest.TempPathFactory) -> None:
    import subprocess
    import sys

    from tasks.control_image import ensure_control_image

    work = tmp_path_factory.mktemp("cp-drill")
    private = PrivateEngine(Path(f"/tmp/pgha-drill-{os.getpid()}"))  # short: a unix socket path has 108 bytes
    had_docker0 = Path("/sys/class/net/docker0").exists()
    private.root.mkdir(parents=True, exist_ok=True)
    env = dict(base_env, PGHA_SERVER_PORT=str(DRILL_PORT), PGHA_STATE_DIR=str(work / "state"),
               PREFECT_HOME=str(work / "prefect"), DOCKER_HOST=f"unix://{private.sock}")
    for k in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PGHA_NO_SERVER"):
        env.pop(k, None)
    try:
        private.start()
        image, _ = ensure_control_image()  # on the suite's engine: built there, loaded into the private one
        saved = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", f"unix://{private.sock}", "load", "-q"], stdin=saved.stdout,
                              capture_output=True, text=True, timeout=600, check=False)
        saved.wait(60)
        assert load.returncode == 0, load.stderr
        res = pgha(env, "server", "start", "--no-alerts", timeout=900)
        assert res.returncode == 0, res.stdout + res.stderr
        env.update(PREFECT_API_URL=DRILL_API,
                   PREFECT_API_AUTH_STRING=(work / "state" / "server" / "api-auth").read_text().strip())
        dep = subprocess.run([str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy",
                              "tests/integration/tick_flow.py:tick", "-n", "drill", "-p", "pgha", "--interval",
                              str(INTERVAL_S)], cwd=ROOT, env=dict(env, PGHA_HOME=str(ROOT)), capture_output=True,
                             text=True, timeout=300, check=False)
        assert dep.returncode == 0, dep.stdout[-1500:] + dep.stderr[-1500:]

        killed = private.power_cut()
        assert not answers_at(DRILL_API), "the server still answers after the power cut"
        cut = dt.datetime.now(dt.UTC)
        time.sleep(5)
        boot = time.monotonic()
        engine_s = private.start()  # the boot: only the engine is started
        # The shared engine's default bridge is untouched by the private one (see PRIVATE_BRIDGE).
        assert Path("/sys/class/net/docker0").exists() or not had_docker0, "the private dockerd removed docker0"
        server_s = worker_s = None
        client = private.client()
        while time.monotonic() - boot < BOOT_WORKER_WITHIN_S and worker_s is None:
            if server_s is None and answers_at(DRILL_API):
                server_s = time.monotonic() - boot
            workers = client.containers.list(filters={"label": "pgha.role=prefect-worker"})
            if workers and (workers[0].attrs["State"].get("Health") or {}).get("Status") == "healthy":
                worker_s = time.monotonic() - boot
            time.sleep(1)
        assert server_s is not None and server_s < BOOT_SERVER_WITHIN_S, f"server not back: {server_s}"
        assert worker_s is not None, f"the worker did not report healthy within {BOOT_WORKER_WITHIN_S}s"
        dep_id = str(api_at(env, DRILL_API, "/deployments/name/pgha-test-tick/drill")["id"])
        run_s = None
        while time.monotonic() - boot < BOOT_RUN_WITHIN_S and run_s is None:
            runs = api_at(env, DRILL_API, "/flow_runs/filter", {"deployments": {"id": {"any_": [dep_id]}}})
            if any(r["state_type"] == "COMPLETED" and (ts(r["end_time"]) or cut) > cut for r in runs):
                run_s = time.monotonic() - boot
            time.sleep(3)
        print(f"\nreboot drill: {killed} processes killed; engine {engine_s:.1f}s, server answers {server_s:.1f}s, "
              f"worker healthy {worker_s:.1f}s, a scheduled run completed {run_s}s after the engine started")
        assert run_s is not None, f"no scheduled run completed within {BOOT_RUN_WITHIN_S}s of the boot"
        runs = api_at(env, DRILL_API, "/flow_runs/filter", {"deployments": {"id": {"any_": [dep_id]}}})
        starts = [r["expected_start_time"] for r in runs]
        assert len(starts) == len(set(starts)), "a scheduled time ran twice"
    finally:
        if private.proc is not None and private.proc.poll() is None:
            pgha(env, "server", "stop", "--volumes", timeout=180)
            private.stop()
        private.unmount()  # what the killed dockerd left mounted (its data root, the netns file)
        remove_private_bridge()
        subprocess.run(["rm", "-rf", str(private.root)], check=False, timeout=300)


def answers_at(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def api_at(env: dict[str, str], api_url: str, path: str, body: object | None = None) -> Any:
    user, pw = env["PREFECT_API_AUTH_STRING"].split(":", 1)
    r = httpx.request("POST" if body is not None else "GET", api_url + path, json=body, auth=(user, pw),
                      timeout=10, trust_env=False)
    r.raise_for_status()
    return r.json()
