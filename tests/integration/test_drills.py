"""Every drill kind on a live cluster: 0 acknowledged writes lost, the cluster whole afterwards.

Gaps are checked against generous ceilings only (60 s); benchmarks/failover.py measures them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import docker
import psycopg
import pytest

from tests.integration.conftest import ROOT, Cluster, pgha, running_cluster, up

CEILING_S = 60.0


@pytest.fixture(scope="module")
def cluster_d(engine: docker.DockerClient, base_env: dict[str, str],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster of its own: drills are destructive."""
    spec = {"scope": "pgha-it-d", "nodes": 3, "etcd_members": 3,
            "ports": {"rw": 25462, "ro": 25463, "stats": 28434}, "pooler": {"enabled": False}}
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("d"), spec) as c:
        yield c


def status(c: Cluster) -> tuple[int, dict[str, object]]:
    res = pgha(c.env, "status", "--json", "--scope", c.scope)
    return res.returncode, json.loads(res.stdout)


def wait_healthy(c: Cluster, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while (st := status(c))[0] != 0:
        assert time.monotonic() < deadline, f"cluster not healthy after {timeout:.0f} s: {st[1].get('problems')}"
        time.sleep(1)


@pytest.fixture
def healthy_d(cluster_d: Cluster) -> Cluster:
    """The drills' cluster, healthy before each test whatever the previous one left (`up` converges it)."""
    if status(cluster_d)[0] != 0:
        up(cluster_d)
        wait_healthy(cluster_d)
    return cluster_d


def probe_rows(c: Cluster, port: str) -> int:
    """Rows of the drills' probe table, counted by the test itself (0 before the first drill)."""
    with psycopg.connect(host="127.0.0.1", port=c.port(port), user="postgres", password=c.secrets["superuser"],
                         dbname="postgres", connect_timeout=5, autocommit=True) as conn:
        row = conn.execute("select count(*) from pg_tables where tablename = 'pgha_drill_probe'").fetchone()
        if not row or not row[0]:
            return 0
        counted = conn.execute("select count(*) from pgha_drill_probe").fetchone()
        return int(counted[0]) if counted else 0


def patroni_roles(st: dict[str, object]) -> dict[str, tuple[str, str]]:
    return {m["member"]: (m["pg_role"], m["pg_state"]) for m in st["members"] if m["role"] == "patroni"}  # type: ignore[index,union-attr]


@pytest.mark.parametrize("kind", ["switchover", "graceful-stop", "hard-kill", "partition", "replica-kill",
                                  "etcd-member-loss", "haproxy-restart"])
@pytest.mark.timing_sensitive
def test_drill_loses_nothing_and_heals(healthy_d: Cluster, kind: str) -> None:
    cluster_d = healthy_d
    before = probe_rows(cluster_d, "rw")
    res = pgha(cluster_d.env, "drill", kind, "--scope", cluster_d.scope, "--json")
    assert res.returncode == 0, f"{kind} drill failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    r = json.loads(res.stdout)
    assert r["lost_writes"] == [], f"{kind}: acknowledged writes lost: {r['lost_writes'][:10]}"
    assert r["healed"] is True and r["whole_s"] is not None
    # The flow's own count, checked from outside: every acknowledged write is a row (an attempt
    # that failed may have committed too, hence >=), and a replica behind the R/O port has them all.
    after = probe_rows(cluster_d, "rw")
    assert after - before >= r["writes_acked"], (before, after, r["writes_acked"])
    deadline = time.monotonic() + 30
    while (on_replica := probe_rows(cluster_d, "ro")) < after:
        assert time.monotonic() < deadline, f"{kind}: a replica has {on_replica} of {after} probe rows after 30 s"
        time.sleep(0.5)
    assert r["write_gap_s"] < CEILING_S and r["read_gap_s"] < CEILING_S
    assert os.path.exists(r["chart_png"])
    if kind in ("switchover", "graceful-stop", "hard-kill", "partition"):
        assert r["new_leader"] != r["old_leader"]
        assert r["timeline_after"] > r["timeline_before"]
    else:
        assert r["new_leader"] == r["old_leader"]
    code, st = status(cluster_d)
    assert code == 0 and st["healthy"], st["problems"]
    roles = patroni_roles(st)
    if r["target"].startswith("pg-"):
        # The faulted node is back as a streaming replica (or, after replica-kill, still one).
        assert roles[r["target"]][0] in ("replica", "sync_standby")
        assert roles[r["target"]][1] == "streaming"


def test_drill_on_unhealthy_cluster_is_refused_and_changes_nothing(healthy_d: Cluster,
                                                                  engine: docker.DockerClient) -> None:
    cluster_d = healthy_d
    _, st = status(cluster_d)
    roles = patroni_roles(st)
    leader = next(m for m, (role, _) in roles.items() if role == "leader")
    replica = next(m for m, (role, _) in roles.items() if role != "leader")
    engine.containers.get(cluster_d.container(replica)).stop(timeout=30)
    res = pgha(cluster_d.env, "drill", "hard-kill", "--scope", cluster_d.scope)
    assert res.returncode == 3
    assert res.stderr.strip().splitlines()[-1].startswith(f"pgha: error: cluster {cluster_d.scope} is not healthy")
    assert engine.containers.get(cluster_d.container(leader)).status == "running"
    assert engine.containers.get(cluster_d.container(replica)).status == "exited"
    # `pgha up` converges: it starts what is stopped.
    up(cluster_d)
    wait_healthy(cluster_d)


def test_drill_killed_half_way_is_shown_by_status_and_healed_by_a_rerun(healthy_d: Cluster,
                                                                       engine: docker.DockerClient) -> None:
    cluster_d = healthy_d
    _, st = status(cluster_d)
    leader = next(m for m, (role, _) in patroni_roles(st).items() if role == "leader")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "drill", "hard-kill", "--scope", cluster_d.scope],
                            cwd=ROOT, env=cluster_d.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while engine.containers.get(cluster_d.container(leader)).status == "running":
            assert proc.poll() is None, "the drill ended before its fault"
            assert time.monotonic() < deadline, "the drill never killed the leader"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the drill and its Prefect API, mid-flight
        proc.wait(10)
    code, st = status(cluster_d)
    assert code == 1
    assert any(cluster_d.container(leader) in p for p in st["problems"]), st["problems"]  # type: ignore[union-attr]

    res = pgha(cluster_d.env, "drill", "switchover", "--scope", cluster_d.scope, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "healed what an interrupted hard-kill drill left" in res.stderr
    assert json.loads(res.stdout)["lost_writes"] == []
    code, st = status(cluster_d)
    assert code == 0, st["problems"]
    assert patroni_roles(st)[leader][1] == "streaming"
