"""Integration fixtures: real Docker engine, real clusters, the real `pgha` CLI.

Every cluster a test makes lives under a test scope with non-default ports, is torn down
(volumes included) when its fixture ends, and any leftover of a killed earlier run is
removed by label before it starts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import psycopg
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark integration tests.

    They run one file per pytest-xdist worker at a time (`--dist loadfile`), so a module
    fixture's cluster is made by one worker only; the session cluster `cluster_a` is used by
    test_cluster.py alone for the same reason. Files never share scopes or ports.

    A test that must pass every time runs once. Only a test marked `timing_sensitive` (it asserts
    a ceiling on a time a shared 2-core machine can stretch: a write gap, an alert's delay) is run
    again after a failure, $IT_RERUNS times (default 1), and its first failure is printed.
    """
    reruns = int(os.environ.get("IT_RERUNS", "1"))
    # Longest files first (the Makefile passes --no-loadscope-reorder, so xdist keeps this order):
    # the workers then end together instead of one running a long file alone at the end.
    weights = json.loads(FILE_WEIGHTS.read_text())
    items.sort(key=lambda item: -weights.get(Path(str(item.fspath)).name, UNKNOWN_WEIGHT))
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
        if reruns and item.get_closest_marker("timing_sensitive") is not None:
            item.add_marker(pytest.mark.flaky(reruns=reruns, reruns_delay=5))


_RERUN_TAIL = 60  # lines of each first failure kept
# Seconds each file took in a full run (setup + call + teardown of its tests), to order them.
# Refresh it from test-artifacts/file-durations.json after a full run; a new file counts as long.
FILE_WEIGHTS = Path(__file__).with_name("file_weights.json")
UNKNOWN_WEIGHT = 400
_FILE_SECONDS: dict[str, float] = {}
_WORKER = [False]  # an xdist worker: its reports reach the controller too, which writes reruns.log once


def pytest_configure(config: pytest.Config) -> None:
    _WORKER[0] = hasattr(config, "workerinput")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A timing-sensitive test that failed and is run again: its first failure is kept, so a flake has a
    cause to read (the rerun plugin prints only "RERUN"); written to test-artifacts/reruns.log and
    shown at the end of the run. Every report's duration is added to its file's total."""
    name = report.nodeid.split("::")[0].rsplit("/", 1)[-1]
    _FILE_SECONDS[name] = _FILE_SECONDS.get(name, 0.0) + float(report.duration or 0.0)
    if report.outcome != "rerun" or _WORKER[0]:
        return
    text = "\n".join(str(report.longreprtext).splitlines()[-_RERUN_TAIL:])
    entry = f"==== first failure of {report.nodeid} ({report.when}) ====\n{text}\n"
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    with (out / "reruns.log").open("a") as f:
        f.write(entry)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FILE_SECONDS and not hasattr(terminalreporter.config, "workerinput"):
        ranked = dict(sorted(((k, round(v)) for k, v in _FILE_SECONDS.items()), key=lambda kv: -kv[1]))
        out = ROOT / "test-artifacts"
        out.mkdir(exist_ok=True)
        (out / "file-durations.json").write_text(json.dumps(ranked, indent=1) + "\n")
        terminalreporter.write_line("seconds per file: " + ", ".join(f"{k} {v}" for k, v in ranked.items()))
    reruns = [r for r in terminalreporter.stats.get("rerun", []) if getattr(r, "longreprtext", "")]
    if reruns:
        terminalreporter.section("first failures of the tests run again")
        for r in reruns:
            terminalreporter.write_line(f"---- {r.nodeid} ({r.when})")
            for line in str(r.longreprtext).splitlines()[-_RERUN_TAIL:]:
                terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"integration tests need a Docker engine (run `make engine`): {exc}")
    return client


# The Prefect API every `pgha` call of a test worker shares (see `base_env`); a test that runs its
# own server (or needs the CLI's own ephemeral API) drops these keys: `without_shared_api(env)`.
# Given to `pgha server start` by the files that run a server (it passes the caller's PREFECT_WORKER_*
# settings on to the worker's container, docs/howto/server.md): the worker asks for due runs every 2 s
# instead of Prefect's 10, so a test waiting for a run waits for the run, not for the poll.
QUICK_WORKER = {"PREFECT_WORKER_QUERY_SECONDS": "2"}
SHARED_API_KEYS = ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PGHA_EPHEMERAL_API", "PREFECT_UI_URL")


def without_shared_api(env: dict[str, str]) -> dict[str, str]:
    """`env` without the worker's shared Prefect API: the CLI then finds a server or starts its own."""
    return {k: v for k, v in env.items() if k not in SHARED_API_KEYS}


class SharedApi:
    """One Prefect API per test worker, started the way the CLI starts its ephemeral one (cli/api.py:
    the same uvicorn app, ephemeral services, an auth string, dies with its parent), so that each
    `pgha` call skips that start and stop (about 4-7 s each on this machine, a few hundred calls a run).
    The CLI's own ephemeral start is covered by the files that drop it (test_no_leftovers, test_trust_report)."""

    def __init__(self, env: dict[str, str], home: Path) -> None:
        import secrets
        import socket

        from cli.api import spawn_api

        self.auth = f"pgha:{secrets.token_urlsafe(32)}"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home / "shared-api.log"
        server_env = {k: v for k, v in env.items() if k not in SHARED_API_KEYS}
        with self.log_path.open("ab") as log:
            self.proc = spawn_api(server_env, self.port, self.auth, log)

    @property
    def published(self) -> dict[str, str]:
        return {"PREFECT_API_URL": f"http://127.0.0.1:{self.port}/api", "PREFECT_API_AUTH_STRING": self.auth,
                "PGHA_EPHEMERAL_API": "1", "PREFECT_UI_URL": ""}

    def wait_ready(self, timeout: float = 300) -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the shared Prefect API exited ({self.proc.returncode}): "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/api/health", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the shared Prefect API did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    work = tmp_path_factory.mktemp("pgha")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "POSTGRES_PASSWORD", "PGHA_SPEC", "PGHA_DEBUG", *SHARED_API_KEYS)}
    env.update(
        PGHA_STATE_DIR=str(work / "state"),
        PREFECT_HOME=str(work / "prefect"),
        PREFECT_LOCAL_STORAGE_PATH=str(work / "prefect" / "storage"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    # In-process helpers (write probes, psycopg through tasks.postgres) find the cluster's CA
    # (TLS, sslmode=verify-full) in the same state directory as the CLI they test.
    os.environ["PGHA_STATE_DIR"] = env["PGHA_STATE_DIR"]
    api = SharedApi(env, work / "prefect")
    try:
        api.wait_ready()
        env.update(api.published)
        yield env
    finally:
        api.stop()


def pgha(env: dict[str, str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """Run the real CLI as a user would (a separate process, its own Prefect API)."""
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def remove_scope(client: docker.DockerClient, scope: str) -> None:
    flt = {"label": f"pgha.cluster={scope}"}
    for c in client.containers.list(all=True, filters=flt):
        c.remove(force=True)
    for n in client.networks.list(filters=flt):
        n.remove()
    for v in client.volumes.list(filters=flt):
        v.remove(force=True)


@dataclass
class Cluster:
    scope: str
    spec_file: Path
    env: dict[str, str]
    spec: dict[str, object]

    @property
    def secrets(self) -> dict[str, str]:
        return dict(json.loads((Path(self.env["PGHA_STATE_DIR"]) / self.scope / "secrets.json").read_text()))

    def port(self, name: str) -> int:
        return int(self.spec["ports"][name])  # type: ignore[index]

    def container(self, member: str) -> str:
        return f"{self.scope}-{member}"


def make_cluster(client: docker.DockerClient, env: dict[str, str], tmp: Path, spec: dict[str, object]) -> Cluster:
    scope = str(spec["scope"])
    remove_scope(client, scope)
    spec_file = tmp / f"{scope}.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    return Cluster(scope=scope, spec_file=spec_file, env=env, spec=spec)


def up(cluster: Cluster) -> subprocess.CompletedProcess[str]:
    res = pgha(cluster.env, "up", "--spec", str(cluster.spec_file))
    assert res.returncode == 0, f"pgha up failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@contextmanager
def running_cluster(engine: docker.DockerClient, env: dict[str, str], tmp: Path,
                    spec: dict[str, object]) -> Iterator[Cluster]:
    """Bring a cluster up with the real CLI; tear it down (volumes too) whatever happens.

    Torn down by label, not by `pgha down`: the verb has its own tests (test_down_up, test_life,
    test_hardening), and its flow here cost every file a CLI start and a flow run for nothing
    it checked."""
    c = make_cluster(engine, env, tmp, spec)
    try:
        up(c)
        yield c
    finally:
        remove_scope(engine, c.scope)
        shutil.rmtree(Path(env["PGHA_STATE_DIR"]) / c.scope, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_a(engine: docker.DockerClient, base_env: dict[str, str],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A default-shaped 3 etcd / 3 node cluster, shared by tests that only read."""
    spec = {"scope": "pgha-it-a", "nodes": 3, "etcd_members": 3,
            "ports": {"rw": 25432, "ro": 25433, "stats": 28404},
            "pooler": {"enabled": False}}  # on by default: test_pooler.py proves it; not the point here
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("a"), spec) as c:
        yield c


def assert_refused(env: dict[str, str], tmp_path: Path, engine: docker.DockerClient, spec: dict[str, object],
                   fragment: str, scope: str = "pgha-it-bad") -> None:
    remove_scope(engine, scope)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(spec))
    res = pgha(env, "up", "--spec", str(f))
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("pgha: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in res.stdout + res.stderr
    flt = {"label": f"pgha.cluster={scope}"}
    assert engine.containers.list(all=True, filters=flt) == []
    assert engine.volumes.list(filters=flt) == []
    assert engine.networks.list(filters=flt) == []
    assert not (Path(env["PGHA_STATE_DIR"]) / scope / "secrets.json").exists()


def remove_lab(engine: docker.DockerClient, lab: str) -> None:
    """Remove everything labelled pgha.lab=<lab> on the real engine (a lab test's leftovers), without the CLI."""
    flt = {"label": f"pgha.lab={lab}"}
    for c in engine.containers.list(all=True, filters=flt):
        c.remove(force=True, v=True)
    for n in engine.networks.list(filters=flt):
        n.remove()
    for v in engine.volumes.list(filters=flt):
        v.remove(force=True)


@contextmanager
def lab_cluster(engine: docker.DockerClient, env: dict[str, str], lab: str, scope: str, port_base: int, hosts: int,
                lab_engine: str = "unix", edit: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                spec_path: Path | None = None) -> Iterator[dict[str, Any]]:
    """A lab (`pgha lab up`) and a cluster on it (`pgha up`): the lab's status JSON, with the spec
    the cluster runs under "cluster_spec" (the lab's own, or `edit`ed and written to `spec_path`).

    Afterwards `lab down` and a sweep by label; `lab down` must succeed when the body ended
    normally (a body that failed keeps its own error, not a teardown's)."""
    remove_lab(engine, lab)
    finished = False
    try:
        r = pgha(env, "lab", "up", "--hosts", str(hosts), "--engine", lab_engine, "--name", lab,
                 "--port-base", str(port_base), "--scope", scope, "--json", timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        st: dict[str, Any] = json.loads(r.stdout)
        spec = st["spec"]
        if edit is not None:
            assert spec_path is not None, "an edited spec needs a path"
            spec_path.write_text(yaml.safe_dump(edit(yaml.safe_load(Path(spec).read_text()))))
            spec = str(spec_path)
        st["cluster_spec"] = spec
        r = pgha(env, "up", "--spec", spec, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        yield st
        finished = True
    finally:
        r = pgha(env, "lab", "down", "--name", lab, timeout=300)
        remove_lab(engine, lab)
        if finished:
            assert r.returncode == 0, r.stdout + r.stderr


def lab_connect(env: dict[str, str], scope: str, port: object) -> psycopg.Connection:
    """The superuser on 127.0.0.1:`port` (a lab host's published R/W or R/O port; the cluster
    accepts TLS only), the password read from the state dir (never argv)."""
    password = json.loads((Path(env["PGHA_STATE_DIR"]) / scope / "secrets.json").read_text())["superuser"]
    return psycopg.connect(host="127.0.0.1", port=int(str(port)), user="postgres", password=str(password),
                           dbname="postgres", connect_timeout=5, autocommit=True)
