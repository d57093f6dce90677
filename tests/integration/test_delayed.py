"""A delayed replica (`delayed:`) on one 1-etcd / 3-node cluster: pg-3 replays 30 s late.

It is shown as delayed by `status`, never reached through the R/O port, refused as a
switchover target, judged by the audit's `delayed.within` row; a row written on the primary
is not on it yet; and a table dropped on the primary comes back with its rows through
`pgha recover-from-delayed` (its duration printed: the recovery time reported in the docs'
benchmarks comes from a run of this file).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import docker
import psycopg
import pytest

from tests.integration.conftest import Cluster, pgha, running_cluster

SCOPE = "pgha-it-delayed"
# Long enough that a row checked 2 s after its commit, and a table dropped two `pgha` calls before the
# recovery pauses replay, have not replayed on pg-3; short enough that the recovery test does not wait
# long for the table made at setup to reach it (it waits for created_at + DELAY_S).
DELAY_S = 30
ROWS = 500
SPEC = {"scope": SCOPE, "nodes": 3, "etcd_members": 1,
        "ports": {"rw": 23400, "ro": 23401, "stats": 23402},
        "backup": {"enabled": False}, "pooler": {"enabled": False},
        "delayed": [{"name": "pg-3", "delay": f"{DELAY_S}s"}]}


def superuser(c: Cluster, read_only: bool = False) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=c.port("ro" if read_only else "rw"), user="postgres",
                           password=c.secrets["superuser"], dbname="postgres", autocommit=True, connect_timeout=5)


def on_node(engine: docker.DockerClient, c: Cluster, member: str, sql: str) -> str:
    """SQL on one node's socket as postgres (the delayed node has no port of its own)."""
    r = engine.containers.get(c.container(member)).exec_run(
        ["psql", "-XAtq", "-h", "/var/run/postgresql", "-c", sql], user="postgres")
    assert r.exit_code == 0, r.output.decode()
    return str(r.output.decode().strip())


@pytest.fixture(scope="module")
def cluster(engine: docker.DockerClient, base_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("delayed"), SPEC) as c:
        # The table the recovery test drops: created at once, so that it has replayed on the
        # delayed node by the time that test runs (the other tests use the wait).
        with superuser(c) as conn:
            conn.execute("create table public.orders (id int primary key, item text not null)")
            conn.execute("insert into public.orders select i, 'item ' || i from generate_series(1, %s) i", (ROWS,))
        c.spec["created_at"] = time.monotonic()
        yield c


def test_status_shows_the_delayed_node_and_reads_never_reach_it(engine: docker.DockerClient,
                                                                  cluster: Cluster) -> None:
    res = pgha(cluster.env, "status", "--json", "--scope", SCOPE)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    rows = {m["member"]: m for m in json.loads(res.stdout)["members"]}
    assert rows["pg-3"]["delay"] == f"{DELAY_S}s" and rows["pg-2"]["delay"] == ""
    assert rows["pg-3"]["pg_role"] == "replica", rows["pg-3"]  # streaming, never the sync standby
    text = pgha(cluster.env, "status", "--scope", SCOPE).stdout
    assert "delayed" in text, text
    assert on_node(engine, cluster, "pg-3", "show recovery_min_apply_delay") == f"{DELAY_S}s"
    assert on_node(engine, cluster, "pg-2", "show recovery_min_apply_delay") == "0"
    seen = set()
    for _ in range(20):
        with superuser(cluster, read_only=True) as conn:
            row = conn.execute("select current_setting('recovery_min_apply_delay'), pg_is_in_recovery()").fetchone()
            seen.add(row)
    assert seen == {("0", True)}, f"the R/O port reached the delayed node or the primary: {seen}"


def test_the_delayed_node_is_no_switchover_target(cluster: Cluster) -> None:
    res = pgha(cluster.env, "switchover", "--to", "pg-3", "--scope", SCOPE)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "delayed replica" in lines[0], res.stderr


def test_the_audit_judges_the_delayed_node(cluster: Cluster) -> None:
    res = pgha(cluster.env, "audit", "--json", "--scope", SCOPE)
    findings = json.loads(res.stdout)["findings"]
    rows = [f for f in findings if f["check"] == "delayed.within"]
    assert len(rows) == 1 and rows[0]["target"] == "pg-3" and rows[0]["status"] == "ok", rows
    # It lags on purpose: no replication.lag_* row for it, and HAProxy leaving it out is no finding.
    assert not [f for f in findings if f["check"].startswith("replication.lag") and f["target"] == "pg-3"]
    backend = [f for f in findings if f["check"] == "haproxy.replica_backend"]
    assert backend and backend[0]["status"] == "ok", backend


def test_a_dropped_table_comes_back_from_the_delayed_node(engine: docker.DockerClient, cluster: Cluster) -> None:
    # Wait until the table has replayed on the delayed node (created when the cluster came up).
    deadline = float(str(cluster.spec["created_at"])) + DELAY_S + 90
    while on_node(engine, cluster, "pg-3", "select count(*) from pg_class where relname = 'orders'") != "1":
        assert time.monotonic() < deadline, "the table never replayed on the delayed node"
        time.sleep(2)
    with superuser(cluster) as conn:
        conn.execute("insert into public.orders values (0, 'written late')")
        time.sleep(2)  # replicated at once to pg-2 ...
        assert on_node(engine, cluster, "pg-2", "select count(*) from public.orders where id = 0") == "1"
        # ... but not replayed on the delayed node yet
        assert on_node(engine, cluster, "pg-3", "select count(*) from public.orders where id = 0") == "0"
        conn.execute("drop table public.orders")
    # A table that still exists on the primary is refused, nothing changed.
    with superuser(cluster) as conn:
        conn.execute("create table public.still_here (id int)")
    res = pgha(cluster.env, "recover-from-delayed", "--table", "public.still_here", "--scope", SCOPE)
    assert res.returncode != 0 and "still exists on the primary" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr

    t0 = time.monotonic()
    res = pgha(cluster.env, "recover-from-delayed", "--table", "public.orders", "--scope", SCOPE, "--json")
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(res.stdout)
    print(f"\nrecover-from-delayed: {took:.1f} s for the command, {result['elapsed_s']} s in the flow, "
          f"replay paused {result['replay_paused_s']} s")
    assert result["rows"] == ROWS and result["source"] == "pg-3", result
    with superuser(cluster) as conn:
        assert conn.execute("select count(*), min(id) from public.orders").fetchone() == (ROWS, 1)
    # Replay resumed, maintenance mode off: the drop then replays on the delayed node in its turn.
    assert on_node(engine, cluster, "pg-3", "select pg_is_wal_replay_paused()") == "f"
    st = json.loads(pgha(cluster.env, "status", "--json", "--scope", SCOPE).stdout)
    assert st["healthy"], st["problems"]
    assert took < 120, f"recovery took {took:.0f} s (goal: under 2 minutes)"
