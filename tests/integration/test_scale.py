"""Scaling Patroni nodes 3 -> 4 -> 2 and replacing an etcd member, on one live cluster.

Open client sessions must survive HAProxy's reload, data must be intact on every node, the
leader is never removed without a switchover first, and etcd keeps its quorum throughout.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import psycopg
import pytest

from stack.spec import parse_spec
from tasks.host.secrets import load_or_create
from tests.integration.conftest import Cluster, pgha, remove_scope, running_cluster
from tests.support.traffic import measured

# etcd requires client certificates (tls on): pgha's, mounted in every etcd member.
ETCD_TLS = ["--cacert=/etc/pgha/tls/ca.crt", "--cert=/etc/pgha/tls/client.crt", "--key=/etc/pgha/tls/client.key"]

SCOPE = "pgha-it-up2"
# Asynchronous replication: lets the test put the leadership on the node scale-in removes.
SPEC = {"scope": SCOPE, "nodes": 3, "etcd_members": 3, "postgres_version": 15,
        "patroni": {"synchronous_mode": False},
        "ports": {"rw": 25524, "ro": 25525, "stats": 28524}, "pooler": {"enabled": False}}
ROWS = 500


@pytest.fixture(scope="module")
def cluster(engine: docker.DockerClient, base_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("up2"), SPEC) as c:
        seed(c)
        yield c


def seed(c: Cluster) -> None:
    with connect(c) as conn:
        conn.execute("create table scale_probe (id int primary key, v text)")
        conn.execute("insert into scale_probe select g, md5(g::text) from generate_series(1, %s) g", (ROWS,))


@pytest.fixture
def four_nodes(engine: docker.DockerClient, cluster: Cluster) -> Cluster:
    """The cluster healthy with 4 nodes and the seeded rows, whatever ran before.

    After test_scale_out it already is; otherwise (run alone, or after a failure) it is made
    afresh with 4 nodes by `up`, not by the `scale` flow under test.
    """
    res = pgha(cluster.env, "status", "--json", "--scope", cluster.scope)
    patroni = [m for m in json.loads(res.stdout or "{}").get("members", []) if m["role"] == "patroni"]
    if res.returncode == 0 and len(patroni) == 4:
        return cluster
    remove_scope(engine, cluster.scope)
    shutil.rmtree(Path(cluster.env["PGHA_STATE_DIR"]) / cluster.scope, ignore_errors=True)
    four = cluster.spec_file.with_name("four.yaml")
    four.write_text(json.dumps({**SPEC, "nodes": 4}))
    res = pgha(cluster.env, "up", "--spec", str(four))
    assert res.returncode == 0, res.stderr[-3000:]
    seed(cluster)
    return cluster


def connect(c: Cluster, ro: bool = False) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=c.port("ro" if ro else "rw"), user="postgres",
                           password=c.secrets["superuser"], dbname="postgres", autocommit=True, connect_timeout=5)


def psql(engine: docker.DockerClient, c: Cluster, member: str, sql: str) -> str:
    r = engine.containers.get(c.container(member)).exec_run(
        ["psql", "-XAtq", "-h", "/var/run/postgresql", "-c", sql], user="postgres")
    assert r.exit_code == 0, r.output
    return r.output.decode().strip()


def haproxy_servers(c: Cluster) -> dict[str, dict[str, str]]:
    import csv
    import io
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{c.port('stats')}/;csv", timeout=3).read().decode()  # noqa: S310
    out: dict[str, dict[str, str]] = {"primary": {}, "replicas": {}}
    for row in csv.DictReader(io.StringIO(text.lstrip("# "))):
        if row["pxname"] in out and row["svname"] not in ("FRONTEND", "BACKEND"):
            out[row["pxname"]][row["svname"]] = row["status"]
    return out


def healthy(c: Cluster) -> dict[str, object]:
    res = pgha(c.env, "status", "--json", "--scope", c.scope)
    st = json.loads(res.stdout)
    assert res.returncode == 0, st["problems"]
    return st


def leader_of(st: dict[str, object]) -> str:
    return next(m["member"] for m in st["members"] if m["pg_role"] == "leader")  # type: ignore[index,union-attr]


def test_bad_scale_and_replace_arguments_are_refused(cluster: Cluster) -> None:
    for args, why in ((["scale", "--nodes", "0"], "between 1 and 9"), (["scale", "--nodes", "12"], "between 1 and 9"),
                      (["etcd", "replace", "etcd-9"], "not an etcd member")):
        res = pgha(cluster.env, *args, "--scope", cluster.scope)
        assert res.returncode == 2 and why in res.stderr.strip().splitlines()[-1], (args, res.stderr[-500:])


def test_scale_out_keeps_sessions_and_routes_to_the_new_node(engine: docker.DockerClient, cluster: Cluster) -> None:
    rw, ro = connect(cluster), connect(cluster, ro=True)
    try:
        res = pgha(cluster.env, "scale", "--nodes", "4", "--scope", cluster.scope)
        assert res.returncode == 0, res.stderr[-3000:]
        # The sessions opened before HAProxy's reload still work.
        assert rw.execute("select count(*) from scale_probe").fetchone() == (ROWS,)
        assert ro.execute("select pg_is_in_recovery()").fetchone() == (True,)
    finally:
        rw.close()
        ro.close()
    st = healthy(cluster)
    assert len([m for m in st["members"] if m["role"] == "patroni"]) == 4  # type: ignore[union-attr,index]
    assert psql(engine, cluster, "pg-4", "select count(*) from scale_probe") == str(ROWS)
    servers = haproxy_servers(cluster)
    assert set(servers["primary"]) == {"pg-1", "pg-2", "pg-3", "pg-4"}
    assert servers["replicas"]["pg-4"].startswith("UP")
    assert "nodes: 4" in (Path(cluster.env["PGHA_STATE_DIR"]) / cluster.scope / "spec.yaml").read_text()


@pytest.mark.timing_sensitive
def test_scale_in_hands_over_the_leadership_first(engine: docker.DockerClient, four_nodes: Cluster) -> None:
    cluster = four_nodes
    old_leader = leader_of(healthy(cluster))
    if old_leader != "pg-4":
        r = engine.containers.get(cluster.container(old_leader)).exec_run(
            ["patronictl", "-c", "/run/pgha/patroni.yml", "switchover", "--leader", old_leader,
             "--candidate", "pg-4", "--force", cluster.scope])
        assert r.exit_code == 0, r.output
        deadline = time.monotonic() + 60
        while True:
            view = json.loads(engine.containers.get(cluster.container("pg-1")).exec_run(
                ["curl", "-s", "--cacert", "/etc/pgha/tls/ca.crt", "https://localhost:8008/cluster"]).output or b"{}")
            states = {m["name"]: (m["role"], m["state"]) for m in view.get("members", [])}
            lines = {m.get("timeline") for m in view.get("members", [])}
            replicating = all(isinstance(m.get("lag"), int) for m in view.get("members", []) if m["role"] != "leader")
            if states.get("pg-4", ("", ""))[0] == "leader" and len(states) == 4 and len(lines) == 1 and replicating \
                    and all(st in ("running", "streaming") for _, st in states.values()):
                break
            assert time.monotonic() < deadline, f"pg-4 never took the leadership: {states}"
            time.sleep(0.5)
    spec = parse_spec({**SPEC, "nodes": 4})
    secrets = load_or_create(Path(cluster.env["PGHA_STATE_DIR"]) / cluster.scope / "secrets.json", env={})
    with measured(spec, secrets) as t:
        res = pgha(cluster.env, "scale", "--nodes", "2", "--scope", cluster.scope)
    assert res.returncode == 0, res.stderr[-3000:]
    assert t.lost == [] and t.writes_acked > 20 and t.write_gap_s < 15, t
    st = healthy(cluster)
    assert leader_of(st) in ("pg-1", "pg-2")
    for gone in ("pg-3", "pg-4"):
        with pytest.raises(docker.errors.NotFound):
            engine.containers.get(cluster.container(gone))
        with pytest.raises(docker.errors.NotFound):
            engine.volumes.get(f"{cluster.scope}-{gone}-data")
    servers = haproxy_servers(cluster)
    assert set(servers["primary"]) == {"pg-1", "pg-2"}
    for m in ("pg-1", "pg-2"):
        assert psql(engine, cluster, m, "select count(*) from scale_probe") == str(ROWS)
    with connect(cluster) as conn:
        assert conn.execute("select count(*) from scale_probe").fetchone() == (ROWS,)
    with connect(cluster, ro=True) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (True,)


def test_etcd_member_replaced_with_quorum_kept(engine: docker.DockerClient, cluster: Cluster) -> None:
    # Replace the raft leader: the hardest case (an election right after its removal).
    names = ["etcd-1", "etcd-2", "etcd-3"]
    all_eps = ",".join(f"https://{cluster.container(m)}:2379" for m in names)
    rows = json.loads(engine.containers.get(cluster.container("etcd-1")).exec_run(
        ["etcdctl", *ETCD_TLS, f"--endpoints={all_eps}", "endpoint", "status", "-w", "json"]).output)
    leader_ep = next(r["Endpoint"] for r in rows if r["Status"]["leader"] == r["Status"]["header"]["member_id"])
    target = next(m for m in names if cluster.container(m) in leader_ep)
    others = [m for m in names if m != target]
    watcher = engine.containers.get(cluster.container(others[0]))
    eps = ",".join(f"https://{cluster.container(m)}:2379" for m in others)
    failures: list[str] = []
    puts = [0]
    stop = threading.Event()

    def watch() -> None:
        # A write through the surviving members needs a raft quorum: every one must succeed.
        while not stop.is_set():
            r = watcher.exec_run(["etcdctl", *ETCD_TLS, f"--endpoints={eps}", "--command-timeout=2s", "put",
                                  "pgha-it-quorum", str(puts[0])])
            puts[0] += 1
            if r.exit_code != 0:
                failures.append(r.output.decode(errors="replace").strip()[:200])
            stop.wait(0.3)

    before = json.loads(watcher.exec_run(["etcdctl", *ETCD_TLS, "--endpoints=https://localhost:2379", "member", "list",
                                                 "-w", "json"]).output)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        res = pgha(cluster.env, "etcd", "replace", target, "--scope", cluster.scope, "--json")
    finally:
        stop.set()
        thread.join(10)
    assert res.returncode == 0, res.stderr[-3000:]
    assert failures == [], f"quorum lost during the replacement: {failures[:3]}"
    assert puts[0] > 10
    r = json.loads(res.stdout)
    old_ids = {m["name"]: m["ID"] for m in before["members"]}
    assert r["old_id"] == f"{old_ids[target]:x}" and r["new_id"] and r["new_id"] != r["old_id"]
    after = json.loads(watcher.exec_run(["etcdctl", *ETCD_TLS, "--endpoints=https://localhost:2379", "member", "list",
                                                 "-w", "json"]).output)
    assert sorted(m["name"] for m in after["members"]) == ["etcd-1", "etcd-2", "etcd-3"]
    healthy(cluster)
