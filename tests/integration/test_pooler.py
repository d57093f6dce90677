"""The pooler (PgBouncer) and `pgha switchover`, on one 2-node / 1-etcd cluster.

Real clients: pgbench (it gives up on a client at its first error) with 20 clients through
the pooler while `pgha switchover` runs must finish every client with 0 failed transactions
and 0 lost writes; in the same switchover a write probe on the direct R/W port loses
sessions but no acknowledged write, and its write gap stays under a generous ceiling; 500 connections at once through the pooler are served by a PostgreSQL
with max_connections 100; bad input is refused in one line with nothing changed, and the
pooler resumes even when the switchover fails.

Timing: `pgha switchover` pays the ephemeral Prefect API's start-up (seconds to a minute on a
loaded machine) before its flow runs. So that the switchover lands inside the 30 s pgbench
window, the test holds the cluster's mutating lock, starts `pgha switchover --wait`, waits
until that process has opened the lock file (it is then in its flow, waiting for the lock),
starts pgbench, and releases the lock a few seconds later.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import psycopg
import pytest

from stack.spec import parse_spec
from tasks.host.secrets import load_or_create
from tests.integration.conftest import ROOT, Cluster, pgha, remove_scope, running_cluster
from tests.support.traffic import measured

SCOPE = "pgha-it-pool"
SPEC = {"scope": SCOPE, "nodes": 2, "etcd_members": 1,
        "ports": {"rw": 26232, "ro": 26233, "stats": 26204, "pool": 26264},
        "backup": {"enabled": False},
        # `pooler.enabled` left out: the pooler runs by default (this file proves it).
        # A short pause bound, so the test of a pause that cannot complete stays short.
        "pooler": {"pause_timeout_s": 3}}
PGBENCH = shutil.which("pgbench")
BENCH_S = 30
CLIENTS = 20


@pytest.fixture(scope="module")
def cluster(engine: docker.DockerClient, base_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if PGBENCH is None:
        pytest.fail("these tests need pgbench on the host (Debian: postgresql-client)")
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("pool"), SPEC) as c:
        passfile = Path(c.env["PGHA_STATE_DIR"]) / "pgpass-pool"
        passfile.write_text(f"127.0.0.1:*:*:postgres:{c.secrets['superuser']}\n")
        passfile.chmod(0o600)
        # pgbench's tables, at scale 1, through the direct port.
        bench(c, "rw", "-i", "-q", "-s", "1", check=True)
        yield c


def bench(c: Cluster, port: str, *args: str, check: bool = False,
          timeout: int = 180) -> subprocess.CompletedProcess[str]:
    """pgbench against 127.0.0.1:<port> (the password from a 0600 passfile, never argv)."""
    env = {**os.environ, "PGPASSFILE": str(Path(c.env["PGHA_STATE_DIR"]) / "pgpass-pool")}
    res = subprocess.run([PGBENCH or "pgbench", "-h", "127.0.0.1", "-p", str(c.port(port)), "-U", "postgres",
                          *args, "postgres"], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res


def connect(c: Cluster, port: str = "rw") -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=c.port(port), user="postgres", password=c.secrets["superuser"],
                           dbname="postgres", autocommit=True, connect_timeout=5)


def leader(c: Cluster) -> str:
    """The Patroni leader, asked of the first running node's own REST API (no `pgha` process)."""
    client = docker.from_env()
    for member in ("pg-1", "pg-2"):
        ct = client.containers.get(c.container(member))
        if ct.status != "running":
            continue
        r = ct.exec_run(["curl", "-fsS", "--max-time", "3", "--cacert", "/etc/pgha/tls/ca.crt",
                             "https://localhost:8008/cluster"])  # Patroni's API is HTTPS (tls on)
        if r.exit_code == 0:
            members = json.loads(r.output)["members"]
            return next(m["name"] for m in members if m["role"] == "leader")
    raise AssertionError("no node answers /cluster")


def wait_healthy(c: Cluster, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = pgha(c.env, "status", "--scope", c.scope)
        if res.returncode == 0:
            return
        assert time.monotonic() < deadline, f"cluster not healthy after {timeout}s: {res.stdout[-800:]}"
        time.sleep(1)


@contextmanager
def held_lock(c: Cluster) -> Iterator[Path]:
    """Hold the cluster's mutating lock (the file the flows flock) for the block."""
    path = Path(c.env["PGHA_STATE_DIR"]) / c.scope / "mutating.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield path
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def has_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def switchover_under(c: Cluster, port: str, extra: list[str]) -> tuple[subprocess.CompletedProcess[str],
                                                                      subprocess.CompletedProcess[str], float]:
    """Run pgbench (20 clients, 30 s) on `port` with `pgha switchover` landing ~4 s into it.

    Returns (pgbench, pgha switchover, seconds between pgbench's start and the lock's release).
    """
    with held_lock(c) as lock:
        sw = subprocess.Popen([sys.executable, "-m", "cli", "switchover", "--json", "--wait", "600",
                               "--scope", c.scope], cwd=ROOT, env=c.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not has_open(sw.pid, lock):
            assert sw.poll() is None, f"pgha switchover ended early: {sw.communicate()}"
            assert time.monotonic() < deadline, "pgha switchover never reached its flow"
            time.sleep(0.2)
        out: dict[str, subprocess.CompletedProcess[str]] = {}
        runner = threading.Thread(target=lambda: out.setdefault("bench", bench(
            c, port, "-c", str(CLIENTS), "-j", "4", "-T", str(BENCH_S), *extra)))
        started = time.monotonic()
        runner.start()
        time.sleep(4)
        released = time.monotonic() - started
    stdout, stderr = sw.communicate(timeout=300)
    runner.join(BENCH_S + 120)
    return out["bench"], subprocess.CompletedProcess(sw.args, sw.returncode, stdout, stderr), released


def figure(text: str, pattern: str) -> int:
    m = re.search(pattern, text)
    assert m, f"pgbench output lacks /{pattern}/:\n{text[-1500:]}"
    return int(m.group(1))


@pytest.mark.timing_sensitive
def test_switchover_under_load_pooled_clients_see_a_pause_direct_ones_a_short_gap(cluster: Cluster) -> None:
    """One switchover, two kinds of clients at once: pgbench (20 clients, 30 s) through the pooler
    and a write probe (a commit every 50 ms, reconnecting on error) on the direct R/W port."""
    spec = parse_spec(cluster.spec)
    secrets = load_or_create(Path(cluster.env["PGHA_STATE_DIR"]) / cluster.scope / "secrets.json")
    with connect(cluster) as conn:
        conn.execute("truncate pgbench_history")
    old = leader(cluster)
    with measured(spec, secrets) as direct:
        res, sw, _ = switchover_under(cluster, "pool", [])
    assert sw.returncode == 0, sw.stderr[-2000:]
    times = json.loads(sw.stdout)["times"]
    assert times["leader"] == old and times["candidate"] != old and times["pooled"]
    new = times["candidate"]
    # Pooled: every client finished (pgbench exits non-zero and says "aborted" when one gives up).
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "aborted" not in res.stdout + res.stderr
    assert figure(res.stdout, r"number of clients: (\d+)") == CLIENTS
    assert figure(res.stdout, r"number of failed transactions: (\d+)") == 0
    done = figure(res.stdout, r"number of transactions actually processed: (\d+)")
    assert done > 0
    # 0 lost writes: each committed pgbench transaction inserted one pgbench_history row.
    with connect(cluster) as conn:
        row = conn.execute("select count(*), pg_is_in_recovery() from pgbench_history").fetchone()
    assert row == (done, False)
    # The pause the pooler's clients saw is bounded (generous: a shared, loaded CI machine).
    assert times["resumed_s"] < 15
    # Direct: sessions were cut, but no acknowledged write is lost, the gap is under the
    # ceiling, and the new primary serves writes on the R/W port.
    assert direct.lost == [] and direct.writes_acked > 0
    assert direct.write_gap_s < 10, f"direct write gap {direct.write_gap_s}s"
    assert leader(cluster) == new
    with connect(cluster) as conn:
        conn.execute("insert into pgbench_history (tid, bid, aid, delta, mtime) values (1, 1, 1, 0, now())")
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (False,)


def test_500_connections_at_once_through_the_pooler(cluster: Cluster) -> None:
    with connect(cluster) as conn:
        row = conn.execute("show max_connections").fetchone()
    assert row == ("100",)
    # 500 clients connect at once, each runs 4 select-only transactions and stays connected.
    res = bench(cluster, "pool", "-c", "500", "-j", "4", "-t", "4", "-S", timeout=240)
    assert res.returncode == 0, res.stdout[-1500:] + res.stderr[-1500:]
    assert figure(res.stdout, r"number of clients: (\d+)") == 500
    assert figure(res.stdout, r"number of transactions actually processed: (\d+)") == 2000
    assert figure(res.stdout, r"number of failed transactions: (\d+)") == 0


def test_psql_through_the_pooler(cluster: Cluster) -> None:
    """`pgha psql --pool` reaches the primary through PgBouncer (its own port, no password in argv)."""
    res = pgha(cluster.env, "psql", "--pool", "--scope", cluster.scope, "-c", "select pg_is_in_recovery()")
    assert res.returncode == 0, res.stderr[-1500:]
    assert [ln.strip() for ln in res.stdout.splitlines()][2] == "f", res.stdout  # header, rule, the row


def test_switchover_bad_input_is_refused_and_changes_nothing(cluster: Cluster) -> None:
    old = leader(cluster)
    for args, expect in ((["--to", "pg-9"], "is not a member"), (["--to", old], "already leads")):
        res = pgha(cluster.env, "switchover", "--scope", cluster.scope, *args)
        assert res.returncode != 0
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0], res.stderr
        assert "Traceback" not in res.stderr
    assert leader(cluster) == old


def test_switchover_on_an_unhealthy_cluster_is_refused(engine: docker.DockerClient, cluster: Cluster) -> None:
    old = leader(cluster)
    replica = next(m for m in ("pg-1", "pg-2") if m != old)
    engine.containers.get(cluster.container(replica)).stop(timeout=10)
    try:
        res = pgha(cluster.env, "switchover", "--scope", cluster.scope)
        assert res.returncode != 0
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "not healthy" in lines[0], res.stderr
    finally:
        engine.containers.get(cluster.container(replica)).start()
    wait_healthy(cluster)
    assert leader(cluster) == old


def test_pooler_resumes_when_the_switchover_fails(cluster: Cluster) -> None:
    """A transaction that never ends keeps PAUSE from completing: the switchover fails, the
    pooler is resumed, the leader is unchanged and new transactions run through the pooler."""
    old = leader(cluster)
    with connect(cluster, "pool") as stuck:
        stuck.autocommit = False
        stuck.execute("select 1")  # a transaction open on a server connection, held
        res = pgha(cluster.env, "switchover", "--scope", cluster.scope)
        # It failed inside the flow (Prefect logs the failed run first): the last line says why.
        assert res.returncode != 0
        assert res.stderr.strip().splitlines()[-1].startswith("pgha: error: the pooler could not pause"), \
            res.stderr[-1500:]
        stuck.rollback()
    with psycopg.connect(host="127.0.0.1", port=cluster.port("pool"), user="postgres", autocommit=True,
                         password=cluster.secrets["superuser"], dbname="pgbouncer",
                         cursor_factory=psycopg.ClientCursor) as admin:
        cur = admin.execute("show databases")
        cols = [d.name for d in cur.description or []]
        paused = {r[cols.index("name")]: r[cols.index("paused")] for r in cur.fetchall()}
    assert paused and all(int(v) == 0 for v in paused.values()), paused
    with connect(cluster, "pool") as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert leader(cluster) == old


def test_pooler_port_in_use_is_refused_before_anything_is_created(engine: docker.DockerClient,
                                                                  base_env: dict[str, str], tmp_path: Path) -> None:
    scope = "pgha-it-pool-busy"
    remove_scope(engine, scope)
    spec = {"scope": scope, "nodes": 1, "etcd_members": 1, "backup": {"enabled": False},
            "ports": {"rw": 26242, "ro": 26243, "stats": 26244, "pool": 26245}}  # the pooler by default
    spec_file = tmp_path / "busy.yaml"
    spec_file.write_text(json.dumps(spec))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 26245))
        s.listen()
        res = pgha(base_env, "up", "--spec", str(spec_file))
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "26245 (ports.pool)" in lines[0], res.stderr
    assert engine.containers.list(all=True, filters={"label": f"pgha.cluster={scope}"}) == []
    assert engine.volumes.list(filters={"label": f"pgha.cluster={scope}"}) == []
    shutil.rmtree(Path(base_env["PGHA_STATE_DIR"]) / scope, ignore_errors=True)


def test_the_pooler_speaks_tls_only_and_pgha_dsn_verifies_it(cluster: Cluster) -> None:
    """TLS on (the default): a plaintext client is refused; the URI `pgha dsn --pool` hands out
    (sslmode=verify-full against the cluster CA) connects, over TLS, to the primary."""
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        psycopg.connect(host="127.0.0.1", port=cluster.port("pool"), user="postgres",
                        password=cluster.secrets["superuser"], dbname="postgres", connect_timeout=5,
                        sslmode="disable")
    res = pgha(cluster.env, "dsn", "--pool", "--pgpass", "--scope", cluster.scope)
    assert res.returncode == 0, res.stderr
    uri = res.stdout.strip()
    assert f"127.0.0.1:{cluster.port('pool')}/" in uri and "sslmode=verify-full" in uri and "sslrootcert=" in uri
    with psycopg.connect(uri, connect_timeout=5, autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (False,)


def test_z_certs_rotate_reissues_the_pooler_certificate(cluster: Cluster) -> None:
    """Last: a rotation re-issues the pooler's certificate too and waits until the pooler serves
    it (its endpoint is among those the flow checks); a pooled session stays open through it."""
    tls_dir = Path(cluster.env["PGHA_STATE_DIR"]) / cluster.scope / "tls"
    before = (tls_dir / "pooler.crt").read_text()
    uri = pgha(cluster.env, "dsn", "--pool", "--pgpass", "--scope", cluster.scope).stdout.strip()
    with psycopg.connect(uri, connect_timeout=5, autocommit=True) as kept:
        res = pgha(cluster.env, "certs", "rotate", "--json", "--scope", cluster.scope, timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert json.loads(res.stdout)["endpoints"] == 6  # etcd-1, 2 x (Patroni, PostgreSQL), the pooler
        assert kept.execute("select 1").fetchone() == (1,)  # RELOAD, not a restart
    assert (tls_dir / "pooler.crt").read_text() != before
    with psycopg.connect(uri, connect_timeout=5, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
