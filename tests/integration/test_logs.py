"""Capped logs on a live cluster: every container's json-file log is rotated at the spec's cap, an
idle node logs no REST API tracebacks (HAProxy checks with OPTIONS), and routing still works."""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import psycopg
import pytest

from stack.layout import SOCKET_DIR
from tests.integration.conftest import Cluster, pgha, running_cluster

SCOPE = "pgha-it-logs"
MIB = 1024 * 1024
MAX_SIZE, MAX_FILES = "1m", 2  # the smallest cap the spec accepts, so a test fills it quickly
IDLE_S = 15


@pytest.fixture(scope="module")
def cluster(engine: docker.DockerClient, base_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    spec = {"scope": SCOPE, "nodes": 2, "etcd_members": 1, "backup": {"enabled": False},
            "ports": {"rw": 26720, "ro": 26721, "stats": 26722},
            "logs": {"max_size": MAX_SIZE, "max_files": MAX_FILES}, "pooler": {"enabled": False}}
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("logs"), spec) as c:
        yield c


def connect(c: Cluster, port_name: str) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=c.port(port_name), user="postgres",
                           password=c.secrets["superuser"], dbname="postgres", connect_timeout=5, autocommit=True)


def test_every_container_has_the_specs_cap(cluster: Cluster, engine: docker.DockerClient) -> None:
    cts = engine.containers.list(filters={"label": f"pgha.cluster={SCOPE}"})
    assert {ct.labels["pgha.role"] for ct in cts} >= {"etcd", "patroni", "haproxy", "fencer"}
    for ct in cts:
        assert ct.attrs["HostConfig"]["LogConfig"] == {
            "Type": "json-file", "Config": {"max-size": MAX_SIZE, "max-file": str(MAX_FILES)}}, ct.name


def test_a_container_writing_past_its_cap_keeps_a_bounded_log(cluster: Cluster, engine: docker.DockerClient) -> None:
    ct = engine.containers.get(cluster.container("pg-2"))
    # About 6 MiB, three times the cap, through PostgreSQL's own log (stderr, like every line
    # Patroni and PostgreSQL write): RAISE LOG reaches the server log at log_min_messages=warning.
    # (A `docker exec` cannot write to PID 1's stdout: Patroni was started through setpriv and
    # /proc/1/fd is closed to the exec, whatever its user.)
    flood = ("DO $$ BEGIN FOR i IN 1..15000 LOOP RAISE LOG 'pgha log flood %: %', i, repeat('x', 300); "
             "END LOOP; END $$;")
    code, out = ct.exec_run(["psql", "-h", SOCKET_DIR, "-qAtc", flood], user="postgres")
    assert code == 0, out
    time.sleep(1)  # the engine's log copier drains the pipe
    ct.reload()
    log = ct.logs(stdout=True, stderr=True)
    assert 0 < len(log) <= MAX_FILES * MIB, f"docker logs holds {len(log)} bytes, over the {MAX_FILES} x {MAX_SIZE} cap"
    # the newest lines are kept, the oldest were rotated away
    assert b"pgha log flood 15000: " in log and b"pgha log flood 1: " not in log
    path = str(ct.attrs.get("LogPath") or "")
    if path and os.access(Path(path).parent, os.R_OK):  # the engine's files (root on most machines)
        files = glob.glob(path + "*")
        on_disk = sum(os.path.getsize(f) for f in files)
        assert len(files) <= MAX_FILES, files
        # json-file checks the size before each write: a file may pass max-size by one entry.
        assert on_disk <= MAX_FILES * (MIB + 4096), f"{on_disk} bytes in {files}"
    assert "no action. I am" in ct.logs(tail=200).decode(errors="replace") or _heartbeat_within(ct, 10)


def _heartbeat_within(ct: docker.models.containers.Container, seconds: float) -> bool:
    """Patroni still logs after the flood (the log is rotated, not stopped)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if "no action. I am" in ct.logs(tail=5).decode(errors="replace"):
            return True
        time.sleep(1)
    return False


def test_idle_nodes_log_no_rest_api_tracebacks_and_routing_works(cluster: Cluster,
                                                                engine: docker.DockerClient) -> None:
    since = int(time.time())
    # Idle: HAProxy checks each node twice (R/W and R/O) every 500 ms, 60 checks a node in 15 s (the
    # tracebacks this guards against came at more than one a second).
    time.sleep(IDLE_S)
    for m in ("pg-1", "pg-2"):
        text = engine.containers.get(cluster.container(m)).logs(since=since).decode(errors="replace")
        assert "no action. I am" in text, f"{m} logged no heartbeat in {IDLE_S} s:\n{text[-2000:]}"
        assert "Traceback" not in text and "ConnectionResetError" not in text, f"{m}:\n{text[-3000:]}"
    _routes(cluster)
    # After a switchover the checks, not only the runtime API, must route: give them fall x inter.
    r = pgha(cluster.env, "switchover", "--spec", str(cluster.spec_file), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    time.sleep(3)
    _routes(cluster)


def _routes(c: Cluster) -> None:
    """R/W reaches the primary and takes a write; R/O reaches a replica that sees it."""
    marker = f"row-{time.time_ns()}"
    with connect(c, "rw") as rw:
        assert rw.execute("select pg_is_in_recovery()").fetchone() == (False,)
        rw.execute("create table if not exists it_logs (v text not null)")
        rw.execute("insert into it_logs values (%s)", (marker,))
    deadline = time.monotonic() + 15
    with connect(c, "ro") as ro:
        assert ro.execute("select pg_is_in_recovery()").fetchone() == (True,)
        while ro.execute("select count(*) from it_logs where v = %s", (marker,)).fetchone() != (1,):
            assert time.monotonic() < deadline, "the write never reached the replica behind the R/O port"
            time.sleep(0.2)
