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
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest
from docker.types import IPAMConfig, IPAMPool

from tests.integration.conftest import QUICK_WORKER, ROOT, pgha, without_shared_api

pytestmark = pytest.mark.integration

PORT = 28710
API = f"http://127.0.0.1:{PORT}/api"
INTERVAL_S = 10  # the tick deployment: a run due every 10 s (each test waits for one or two of them)
# Prefect's own knobs, given to the containers through `pgha server start` (the caller's PREFECT_WORKER_*
# and PREFECT_SERVER_* settings, docs/howto/server.md): besides conftest's QUICK_WORKER, a run counts as
# Late 5 s after its time instead of 15 (looked for every 2 s instead of 5). What the tests prove is the
# same; they wait less for it.
QUICK_LATE = {"PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS": "5",
              "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": "2"}
BACK_WITHIN_S = 60  # a SIGKILLed server answers again (the engine restarts it at once; the app starts in ~5-20 s)


@pytest.fixture(scope="module")
def plane_env(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    work = tmp_path_factory.mktemp("cp")
    env = dict(without_shared_api(base_env), PGHA_SERVER_PORT=str(PORT), PGHA_STATE_DIR=str(work / "state"),
               PREFECT_HOME=str(work / "prefect"), PREFECT_LOCAL_STORAGE_PATH=str(work / "prefect" / "storage"),
               **QUICK_WORKER, **QUICK_LATE)
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
def tick_deployment(plane_env: dict[str, str]) -> str:
    """A deployment of a do-nothing flow on a 10-second interval schedule, run by the pool's worker;
    paused until a test that waits for its runs resumes it (`tick`)."""
    env = dict(plane_env, PGHA_HOME=str(ROOT))
    import subprocess
    import sys

    dep = subprocess.run([str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy",
                          "tests/integration/tick_flow.py:tick", "-n", "tick", "-p", "pgha", "--interval",
                          str(INTERVAL_S)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert dep.returncode == 0, dep.stdout[-2000:] + dep.stderr[-2000:]
    dep_id = str(api(plane_env, "/deployments/name/pgha-test-tick/tick")["id"])
    api(plane_env, f"/deployments/{dep_id}/pause_deployment", {})
    return dep_id


@pytest.fixture
def tick(plane_env: dict[str, str], tick_deployment: str) -> Iterator[str]:
    """The tick deployment's schedule on for one test and paused after it: its runs (a process each in the
    worker) are no load on the tests that do not look at them, the reboot drill above all."""
    api(plane_env, f"/deployments/{tick_deployment}/resume_deployment", {})
    try:
        yield tick_deployment
    finally:
        api(plane_env, f"/deployments/{tick_deployment}/pause_deployment", {})


def wait_completed_after(env: dict[str, str], dep_id: str, after: dt.datetime, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [r for r in runs_of(env, dep_id) if r["state_type"] == "COMPLETED"
                and (ts(r["expected_start_time"]) or after) >= after]
        if done:
            return done[0]
        time.sleep(1)
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
            time.sleep(1)
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
        time.sleep(1)
    assert run["state_type"] == "COMPLETED", run["state_name"]
    assert_each_ran_once(plane_env, tick)


# ---- the reboot drill ---------------------------------------------------------------------------
# A power cut stops every process at once, the engine included; then the machine boots and starts
# only the engine. The suite's engine is shared by two test workers, so the drill runs a private
# engine of its own (its own data root, exec root, socket and bridge) holding a control plane (the
# server and worker, host networking) and a cluster (1 etcd, 2 nodes, HAProxy, the fencer; TLS as
# by default; backup disabled: its repository and stanza add a minute and nothing to what a reboot
# tests) with the two images loaded into it. A writer commits through the R/W port until the cut
# and records every acknowledged id. The "power cut" SIGKILLs every process of that engine
# (dockerd, its containerd, the shims, every container's processes, the port proxies); the "boot"
# starts that dockerd again, and nothing else. Then, within the bounds below: the server answers,
# the worker polls, the cluster is healthy (a leader, a streaming replica, a write through HAProxy's
# R/W port), every acknowledged write is there, a scheduled audit succeeds and pings the
# heartbeat, and (a replica stopped) the next scheduled audit fails and its alert reaches the
# webhook receiver on 127.0.0.1.
DRILL_PORT = 28720
DRILL_API = f"http://127.0.0.1:{DRILL_PORT}/api"
DRILL_SCOPE = "pgha-it-rb"
DRILL_PORTS = {"rw": 28730, "ro": 28731, "stats": 28732, "pool": 28733}
HOOK_PORT = 28735  # the alert webhook and the heartbeat, one receiver
AUDIT_INTERVAL_S = 30  # the drill's audit deployment (an audit takes 10-60 s on a loaded 2-core machine)
OFF_S = 5  # the machine stays off this long
BOOT_SERVER_WITHIN_S = 90  # engine start -> the server answers
BOOT_WORKER_WITHIN_S = 150  # engine start -> the worker's container reports healthy (it heartbeated)
BOOT_CLUSTER_WITHIN_S = 120  # engine start -> leader, streaming replica and a write through the R/W port
BOOT_AUDIT_WITHIN_S = 300  # engine start -> a scheduled audit succeeded and its heartbeat ping arrived
ALERT_WITHIN_S = 180  # replica stopped, an audit run created -> its failure's alert at the webhook
# Prefect's triggers take a flow run's state events in order: a state change less than 5 minutes
# after the previous state "follows" it, and an event that follows one the triggers have not seen
# waits up to 15 minutes for it (PRECEDING_EVENT_LOOKBACK). The scheduler creates runs in bulk,
# emitting no event for their Scheduled state: a scheduled run that comes due less than 5 minutes
# after the scheduler created it alerts only 15 minutes later (seen here: the runs of a 1-minute
# schedule are created when it is deployed, and those due in its first 5 minutes failed without an
# alert; the shipped schedules' runs are created an hour or more ahead and alert at once). So the
# failing audit after the boot is a run of the same deployment created through the API (as
# `prefect deployment run` does), which emits its Scheduled event: the alert path is proven
# without waiting out those 5 minutes; the schedule itself is proven by the successful scheduled
# audit before it.


# The private engine's own bridge. Not `--bridge none`: a dockerd started with it deletes the
# host's default bridge `docker0` (moby's removeDefaultBridgeInterface), which the shared engine
# every other test uses needs (image builds, default-network containers). An address no Docker
# address pool hands out.
PRIVATE_BRIDGE = "pgha-cpdrill0"
PRIVATE_BRIDGE_CIDR = "10.254.77.1/24"
# The cluster's network on the private engine: made by the test, with pgha's labels, on this
# subnet, before `pgha up` (which then finds it its own). Left to itself the private engine would
# pick 172.17.0.0/16 or another subnet the shared engine already uses (two engines do not see each
# other's allocations). Not `--default-address-pool`: a dockerd started with one after an unclean
# stop deletes the host's `docker0` too (moby's initNetworkController, "Clear stale bridge network").
PRIVATE_POOL = "10.254.78.0/24"
# The private engine runs with --iptables=false (its chains would fight the shared engine's), and
# this host filters bridged traffic (bridge-nf-call-iptables = 1) with FORWARD's policy DROP: the
# cluster's containers reach each other only with this rule, what the engine's own rules do on a
# machine with one engine. Inserted for the drill and deleted after it.
FORWARD_RULE = ["FORWARD", "-s", PRIVATE_POOL, "-d", PRIVATE_POOL, "-m", "comment", "--comment",
                "pgha-cpdrill", "-j", "ACCEPT"]


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


def allow_forward() -> None:
    import subprocess

    if subprocess.run(["iptables", "-C", *FORWARD_RULE], capture_output=True, check=False).returncode != 0:
        subprocess.run(["iptables", "-I", *FORWARD_RULE], check=True, capture_output=True, timeout=30)


def remove_forward() -> None:
    import subprocess

    while subprocess.run(["iptables", "-D", *FORWARD_RULE], capture_output=True, check=False,
                         timeout=30).returncode == 0:
        pass


class PrivateEngine:
    """A dockerd this test starts (and ends, by pid) with everything under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.proc: Any = None
        self.bridges: set[str] = set()  # the bridges of its networks (the kernel keeps them after a kill)

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

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def note_bridges(self) -> None:
        for n in self.client().networks.list():
            if n.attrs.get("Driver") == "bridge" and n.name != "bridge":
                opts = n.attrs.get("Options") or {}
                self.bridges.add(opts.get("com.docker.network.bridge.name") or f"br-{n.id[:12]}")

    def load(self, image: str) -> None:
        """`docker save` from the suite's engine into this one."""
        import subprocess

        saved = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", f"unix://{self.sock}", "load", "-q"], stdin=saved.stdout,
                              capture_output=True, text=True, timeout=600, check=False)
        saved.wait(60)
        assert load.returncode == 0 and saved.returncode == 0, f"loading {image}: {load.stderr}"

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

    def clear(self) -> None:
        """Every container, network and volume of this engine removed (a killed container leaves none
        of its cgroups, and a removed network its bridge)."""
        c = self.client()
        for ct in c.containers.list(all=True):
            ct.remove(force=True, v=True)
        for n in c.networks.list():
            if n.name not in ("bridge", "host", "none"):
                n.remove()
        for v in c.volumes.list():
            v.remove(force=True)

    def unmount(self) -> None:
        import subprocess

        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                  if line.split()[1].startswith(f"{self.root}/")]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False, timeout=60)

    def stop(self) -> None:
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except Exception:  # noqa: BLE001 - then as a power cut
                self.power_cut()

    def leftovers(self) -> list[str]:
        """What this engine left on the host: processes, mounts, bridges, iptables rules."""
        import subprocess

        out = [f"process {e.name}" for e in Path("/proc").iterdir() if e.name.isdigit() and str(self.root) in _cmdline(e)]
        out += [f"mount {line.split()[1]}" for line in Path("/proc/self/mounts").read_text().splitlines()
                if line.split()[1].startswith(f"{self.root}/")]
        out += [f"bridge {b}" for b in sorted(self.bridges | {PRIVATE_BRIDGE}) if Path(f"/sys/class/net/{b}").exists()]
        if subprocess.run(["iptables", "-C", *FORWARD_RULE], capture_output=True, check=False).returncode == 0:
            out.append("iptables rule " + " ".join(FORWARD_RULE))
        return out


def _cmdline(entry: Path) -> str:
    try:
        return (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Writer(threading.Thread):
    """Commits one new id after another through the R/W port; `acked` holds every id whose COMMIT
    returned. A failed statement (its id unacknowledged) is retried with a new connection and id."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        super().__init__(daemon=True)
        self.connect = connect
        self.acked: list[int] = []
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        conn: psycopg.Connection | None = None
        n = 0
        while not self.halt.is_set():
            n += 1
            try:
                if conn is None:
                    conn = self.connect()
                conn.execute("INSERT INTO reboot_writes (id) VALUES (%s)", (n,))
                self.acked.append(n)
            except psycopg.Error:
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.2)
        if conn is not None:
            conn.close()


def _drill_spec(image: str | None = None) -> dict[str, Any]:
    spec = {"scope": DRILL_SCOPE, "nodes": 2, "etcd_members": 1, "ports": DRILL_PORTS, "backup": {"enabled": False}, "pooler": {"enabled": False}}
    return {**spec, "image": image} if image else spec


def _wait_alert(receiver: Any, after: int, timeout: float, *needles: str) -> dict[str, Any]:
    """The first webhook body from index `after` on that contains every needle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for b in receiver.bodies[after:]:
            if all(n in json.dumps(b) for n in needles):
                return b  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"no alert containing {needles} within {timeout:.0f}s; got {receiver.bodies[after:]}")


def _cluster_check(env: dict[str, str], connect: Callable[[], psycopg.Connection]) -> str:
    """"" when the cluster is healthy: status healthy with a leader and a streaming replica, and a write
    through the R/W port commits on a primary; else what is missing."""
    res = pgha(env, "status", "--json", "--scope", DRILL_SCOPE, timeout=60)
    try:
        st = json.loads(res.stdout)
    except ValueError:
        return f"status: {(res.stdout + res.stderr)[-300:]}"
    nodes = [m for m in st["members"] if m["role"] == "patroni"]
    leaders = [m for m in nodes if m["pg_role"] == "leader"]
    streaming = [m for m in nodes if m["pg_role"] in ("replica", "sync_standby") and m["pg_state"] == "streaming"]
    if not (st["healthy"] and len(leaders) == 1 and len(streaming) == 1):
        return f"status: {[(m['member'], m['pg_role'], m['pg_state']) for m in nodes]} {st['problems']}"
    try:
        with connect() as conn:
            (recovery,) = conn.execute("SELECT pg_is_in_recovery()").fetchone()  # type: ignore[misc]
            conn.execute("INSERT INTO reboot_writes (id) VALUES (-1) ON CONFLICT DO NOTHING")
    except psycopg.Error as exc:
        return f"R/W port: {str(exc).strip()[:200]}"
    return "" if recovery is False else "R/W port: in recovery"


@pytest.mark.timing_sensitive
def test_reboot_drill(base_env: dict[str, str], engine: docker.DockerClient,
                      tmp_path_factory: pytest.TempPathFactory) -> None:
    import subprocess
    import sys

    import yaml

    from stack.spec import ClusterSpec
    from tasks.control_image import ensure_control_image
    from tasks.engine_client import labels
    from tasks.images import ensure_image
    from tests.integration.test_audit_server import Receiver

    work = tmp_path_factory.mktemp("cp-drill")
    private = PrivateEngine(Path(f"/tmp/pgha-drill-{os.getpid()}"))  # short: a unix socket path has 108 bytes
    had_docker0 = Path("/sys/class/net/docker0").exists()
    private.root.mkdir(parents=True, exist_ok=True)
    env = dict(without_shared_api(base_env), PGHA_SERVER_PORT=str(DRILL_PORT), PGHA_STATE_DIR=str(work / "state"),
               PREFECT_HOME=str(work / "prefect"), DOCKER_HOST=f"unix://{private.sock}",
               PGHA_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{HOOK_PORT}/hook",
               PGHA_HEARTBEAT_URL=f"http://127.0.0.1:{HOOK_PORT}/hb/{{scope}}", **QUICK_WORKER)
    for k in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PGHA_NO_SERVER"):
        env.pop(k, None)
    receiver = Receiver(HOOK_PORT)
    writer: Writer | None = None
    t_start = time.monotonic()
    stages: list[str] = []

    def mark(what: str) -> None:
        stages.append(f"{time.monotonic() - t_start:.0f}s {what}")

    try:
        # On the suite's engine (built there if missing), then loaded into the private one.
        node_image, _ = ensure_image(ClusterSpec.model_validate(_drill_spec()))
        control_image, _ = ensure_control_image()
        private.start()
        allow_forward()
        spec_file = work / "drill.yaml"
        spec_file.write_text(yaml.safe_dump(_drill_spec(node_image)))
        net = ClusterSpec.model_validate(_drill_spec(node_image)).network
        private.client().networks.create(net, driver="bridge", labels=labels(DRILL_SCOPE, "network", net),
                                         ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=PRIVATE_POOL)]))
        private.note_bridges()
        # Side by side where nothing waits for the other: the node image streams into the private
        # engine while the control plane starts from its own image, and `pgha up` begins once the
        # server answers (its address recorded, how the CLI finds it) while the start deploys.
        up: subprocess.CompletedProcess[str] | None = None
        with ThreadPoolExecutor(max_workers=1) as pool:
            node_loaded = pool.submit(private.load, node_image)
            private.load(control_image)
            server = subprocess.Popen([sys.executable, "-m", "cli", "server", "start"], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                url = work / "state" / "server" / "server.url"
                deadline = time.monotonic() + 900
                while not url.exists() and server.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.5)
                node_loaded.result()
                mark("images loaded, server answers")
                if url.exists():
                    up = pgha(env, "up", "--spec", str(spec_file), timeout=900)
                out, err = server.communicate(timeout=900)
            finally:
                if server.poll() is None:
                    server.kill()
                    server.communicate()
        assert server.returncode == 0, out + err
        assert "alert pgha-health-flow-failed created" in out, out
        assert up is not None, f"the server never recorded its address: {out[-2000:]} {err[-2000:]}"
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        env.update(PREFECT_API_URL=DRILL_API,
                   PREFECT_API_AUTH_STRING=(work / "state" / "server" / "api-auth").read_text().strip())
        # The scheduled audit of this cluster: every AUDIT_INTERVAL_S, tagged `health` (alerts on failure).
        # Deployed once the cluster is up: no run fails for want of it, each a process beside `up` in the
        # worker that only took the machine's CPU from it.
        dep = subprocess.run([str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy",
                              "flows/deployments.py:audit", "-n", "reboot-drill", "-p", "pgha", "-t", "health",
                              "--interval", str(AUDIT_INTERVAL_S), "--param", f"scope={DRILL_SCOPE}"],
                             cwd=ROOT, env=dict(env, PGHA_HOME=str(ROOT)), capture_output=True,
                             text=True, timeout=300, check=False)
        assert dep.returncode == 0, dep.stdout[-1500:] + dep.stderr[-1500:]
        dep_id = str(api_at(env, DRILL_API, "/deployments/name/health-audit/reboot-drill")["id"])
        mark("server started, cluster up")
        password = json.loads((work / "state" / DRILL_SCOPE / "secrets.json").read_text())["superuser"]

        def connect() -> psycopg.Connection:
            return psycopg.connect(host="127.0.0.1", port=DRILL_PORTS["rw"], user="postgres", password=password,
                                   dbname="postgres", connect_timeout=5, autocommit=True)

        with connect() as conn:
            conn.execute("CREATE TABLE reboot_writes (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
        writer = Writer(connect)
        writer.start()
        deadline = time.monotonic() + 60
        while len(writer.acked) < 100:
            assert time.monotonic() < deadline and writer.is_alive(), f"the writer: {len(writer.acked)} commits"
            time.sleep(0.5)

        mark("writer running")
        # ---- the power cut ----
        killed = private.power_cut()
        cut_t, cut = time.monotonic(), dt.datetime.now(dt.UTC)
        writer.halt.set()
        writer.join(30)
        acked = list(writer.acked)
        assert not answers_at(DRILL_API), "the server still answers after the power cut"
        pings_at_cut = len(receiver.pings)
        time.sleep(OFF_S)
        # ---- the boot: only the engine is started ----
        boot_t, boot = time.monotonic(), dt.datetime.now(dt.UTC)
        engine_s = private.start()
        # The shared engine's default bridge is untouched by the private one (see PRIVATE_BRIDGE).
        assert Path("/sys/class/net/docker0").exists() or not had_docker0, "the private dockerd removed docker0"
        server_s = worker_s = cluster_s = None
        last = ""
        client = private.client()
        while time.monotonic() - boot_t < max(BOOT_WORKER_WITHIN_S, BOOT_CLUSTER_WITHIN_S) and None in (
                server_s, worker_s, cluster_s):
            if server_s is None and answers_at(DRILL_API):
                server_s = time.monotonic() - boot_t
            workers = client.containers.list(filters={"label": "pgha.role=prefect-worker"})
            if worker_s is None and workers and (workers[0].attrs["State"].get("Health") or {}).get("Status") == "healthy":
                worker_s = time.monotonic() - boot_t
            if cluster_s is None and not (last := _cluster_check(env, connect)):
                cluster_s = time.monotonic() - boot_t
            time.sleep(1)
        assert server_s is not None and server_s < BOOT_SERVER_WITHIN_S, f"server not back: {server_s}"
        assert worker_s is not None, f"the worker did not report healthy within {BOOT_WORKER_WITHIN_S}s"
        assert cluster_s is not None, f"the cluster was not healthy within {BOOT_CLUSTER_WITHIN_S}s: {last}"
        with connect() as conn:
            present = {r[0] for r in conn.execute("SELECT id FROM reboot_writes")}
        mark("booted: server, worker and cluster back")
        lost = sorted(set(acked) - present)
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost: {lost[:20]}"

        # The scheduled audits: the first to end after the boot (whatever its verdict: it may have
        # come due while the cluster was still starting), and a successful one with its heartbeat ping.
        # Wait for both: the heartbeat is pinged by the audit itself, a moment before its run is COMPLETED
        # (waiting only for the ping once failed here with no run ended yet, 150 s into the drill).
        first_audit_s = ok_audit_s = None
        while time.monotonic() - boot_t < BOOT_AUDIT_WITHIN_S and None in (first_audit_s, ok_audit_s):
            runs = api_at(env, DRILL_API, "/flow_runs/filter", {"deployments": {"id": {"any_": [dep_id]}}})
            if first_audit_s is None and any(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")
                                             and (ts(r["end_time"]) or cut) > boot for r in runs):
                first_audit_s = time.monotonic() - boot_t
            if any(p == f"/hb/{DRILL_SCOPE}" for p, _ in receiver.pings[pings_at_cut:]):
                ok_audit_s = time.monotonic() - boot_t
            time.sleep(2)
        if first_audit_s is None or ok_audit_s is None:
            # Say what the scheduler and the worker did, so a failure has a cause to read.
            runs = api_at(env, DRILL_API, "/flow_runs/filter", {"deployments": {"id": {"any_": [dep_id]}}})
            workers = client.containers.list(all=True, filters={"label": "pgha.role=prefect-worker"})
            raise AssertionError(
                f"{'no scheduled audit ended' if first_audit_s is None else 'no scheduled audit succeeded (heartbeat)'}"
                f" within {BOOT_AUDIT_WITHIN_S}s of the boot (boot at {boot.isoformat()}); pings since the cut: "
                f"{[p for p, _ in receiver.pings[pings_at_cut:]]}\nruns: "
                f"{[(r['name'], r['state_name'], r['expected_start_time'], r['start_time'], r['end_time']) for r in runs]}"
                f"\nworker log: {workers[0].logs(tail=40).decode(errors='replace')[-4000:] if workers else 'no worker'}")

        mark("a scheduled audit succeeded")
        # A replica stopped: a run of the audit deployment fails, alerts through the webhook and pings /fail.
        st = json.loads(pgha(env, "status", "--json", "--scope", DRILL_SCOPE, timeout=60).stdout)
        replica = next(m["member"] for m in st["members"] if m["role"] == "patroni" and m["pg_role"] != "leader")
        bodies, pings = len(receiver.bodies), len(receiver.pings)
        stop_t = time.monotonic()
        client.containers.get(f"{DRILL_SCOPE}-{replica}").stop(timeout=10)
        made = api_at(env, DRILL_API, f"/deployments/{dep_id}/create_flow_run", {})
        try:
            body = _wait_alert(receiver, bodies, ALERT_WITHIN_S, f"health-audit failed on cluster {DRILL_SCOPE}",
                               replica)
        except AssertionError as exc:
            runs = api_at(env, DRILL_API, "/flow_runs/filter", {"deployments": {"id": {"any_": [dep_id]}}})
            server = client.containers.list(filters={"label": "pgha.role=prefect-server"})[0]
            raise AssertionError(
                f"{exc}\nruns: {[(r['name'], r['state_name'], r['expected_start_time'], r['end_time']) for r in runs]}"
                f"\npings since the stop: {[p for p, _ in receiver.pings[pings:]]}\nserver log: "
                f"{server.logs(tail=40).decode(errors='replace')[-4000:]}") from None
        alert_s = time.monotonic() - stop_t
        run_id = re.search(r"/runs/flow-run/([0-9a-f-]{36})", body["body"])
        assert run_id, body
        assert api_at(env, DRILL_API, f"/flow_runs/{run_id[1]}")["deployment_id"] == dep_id, "not the drill's audit"
        assert made["deployment_id"] == dep_id, made
        assert replica in receiver.wait_ping(f"/hb/{DRILL_SCOPE}/fail", after=pings, timeout=60)
        runs = api_at(env, DRILL_API, "/flow_runs/filter", {"deployments": {"id": {"any_": [dep_id]}}})
        starts = [r["expected_start_time"] for r in runs]
        assert len(starts) == len(set(starts)), "a scheduled time ran twice"
        off = boot_t - cut_t
        print(f"\nreboot drill: {killed} processes killed, {len(acked)} acknowledged writes, none lost; off {off:.1f}s; "
              f"after the cut: engine {off + engine_s:.1f}s, server answers {off + server_s:.1f}s, worker healthy "
              f"{off + worker_s:.1f}s, cluster healthy {off + cluster_s:.1f}s, first scheduled audit ended "
              f"{off + first_audit_s:.1f}s, a scheduled audit succeeded (heartbeat) {off + ok_audit_s:.1f}s; "
              f"replica stopped -> the failed audit's alert {alert_s:.1f}s")
        mark("the failed audit alerted")
    finally:
        print(f"\nreboot drill stages: {'; '.join(stages)}")
        if writer is not None:
            writer.halt.set()
        receiver.close()
        if private.running():
            try:
                private.note_bridges()
                private.clear()
            finally:
                private.stop()
        private.unmount()  # what the killed dockerd left mounted (its data root, the netns files)
        for bridge in private.bridges:
            subprocess.run(["ip", "link", "delete", bridge], check=False, capture_output=True, timeout=30)
        remove_private_bridge()
        remove_forward()
        subprocess.run(["rm", "-rf", str(private.root)], check=False, timeout=300)
    assert private.leftovers() == [], private.leftovers()
    assert Path("/sys/class/net/docker0").exists() or not had_docker0, "the private dockerd removed docker0"


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
