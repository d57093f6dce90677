"""Rolling changes over several hosts, in a 3-host lab: `config set` (a restart on every host, and a
rollback), `scale` up onto the third host and back down, `etcd replace` of the raft leader; and the
pooler beside every host's HAProxy (on by default with hosts): a write through each host's pooler,
and a `pgha switchover` that pauses and resumes them all with 0 failed pooled writes.

Lab `itops` (3 simulated hosts), scope `pgha-it-ops`: 3 etcd members (one per host: a replacement
keeps a quorum of 2 only with 3) and 2 Patroni nodes on h1 and h2, so h3 is where `scale` puts a
third node by placement (`spread`: node i on host i). HAProxy on every host, no backups, no
fencing; the pooler left at its default (on: one per host). One lab and one cluster for the file (a lab costs its image loads); each test first
settles the state it needs (2 nodes, healthy) instead of relying on the test before it.

Ports: 27400-27499 (lab hosts' R/W and R/O on 127.0.0.1, then their poolers').
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import psycopg
import pytest
import yaml

from tests.integration.conftest import lab_cluster, lab_connect, pgha

LAB, SCOPE, PORT_BASE = "itops", "pgha-it-ops", 27400
# etcd requires client certificates (tls on): pgha's, in every etcd member's /etc/pgha (its config volume).
ETCD_TLS = ["--cacert=/etc/pgha/tls/ca.crt", "--cert=/etc/pgha/tls/client.crt", "--key=/etc/pgha/tls/client.key"]
STATS = 7000  # HAProxy's stats port inside each lab host (stack/lab.py INNER_STATS)


@pytest.fixture(scope="module")
def lab(engine: docker.DockerClient, base_env: dict[str, str],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    def two_nodes(data: dict[str, Any]) -> dict[str, Any]:
        assert data["etcd_members"] == 3 and data["fencing"] is False and data["backup"] == {"enabled": False}
        assert data["pooler"] == {"enabled": False}  # the lab's own spec: no pooler
        data = {k: v for k, v in data.items() if k != "pooler"}  # left out: on by default, one per host
        return {**data, "nodes": 2}  # h3 holds no node: scale puts pg-3 there

    with lab_cluster(engine, base_env, LAB, SCOPE, PORT_BASE, 3, edit=two_nodes,
                     spec_path=tmp_path_factory.mktemp("ops") / "spec.yaml") as st:
        st["ops_spec"] = st["cluster_spec"]
        yield st


def _inner(host: dict[str, Any]) -> docker.DockerClient:
    return docker.DockerClient(base_url=str(host["docker"]), timeout=60)


def _status(env: dict[str, str], spec: str, within_s: float = 60) -> dict[str, Any]:
    """`pgha status --json` once it says healthy (exit 0), asked again for up to `within_s`.

    By scope: the stored spec (what `up`, `scale` and `config set` leave), not the file (2 nodes).
    """
    deadline = time.monotonic() + within_s
    while (r := pgha(env, "status", "--scope", SCOPE, "--json")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(1)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return dict(json.loads(r.stdout))


def _nodes(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["member"]: m for m in st["members"] if m["role"] == "patroni"}


def _stored_parameters(env: dict[str, str]) -> dict[str, str]:
    data = yaml.safe_load((Path(env["PGHA_STATE_DIR"]) / SCOPE / "spec.yaml").read_text())
    return dict(data.get("postgres_parameters") or {})


def _haproxy_servers(host: dict[str, Any]) -> dict[str, dict[str, str]]:
    """One host's HAProxy as it sees its backends (its stats CSV, read inside its container)."""
    r = _inner(host).containers.get(f"{SCOPE}-haproxy").exec_run(
        ["curl", "-fsS", "--max-time", "3", f"http://localhost:{STATS}/;csv"])
    assert r.exit_code == 0, r.output
    out: dict[str, dict[str, str]] = {"primary": {}, "replicas": {}}
    for row in csv.DictReader(io.StringIO(r.output.decode().removeprefix("# "))):
        if row["pxname"] in out and row["svname"] not in ("FRONTEND", "BACKEND"):
            out[row["pxname"]][row["svname"]] = row["status"]
    return out


def _eventually(what: str, probe: Any, within_s: float = 20) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        try:
            got = probe()
            if got:
                return got
        except (psycopg.Error, AssertionError):
            got = None
        assert time.monotonic() < deadline, f"{what}: not within {within_s}s (last: {got})"
        time.sleep(0.5)


@pytest.fixture
def two_nodes(lab: dict[str, Any], base_env: dict[str, str]) -> dict[str, Any]:
    """The cluster healthy with pg-1 (h1) and pg-2 (h2), whatever ran before."""
    spec = str(lab["ops_spec"])
    if set(_nodes(_status(base_env, spec))) != {"pg-1", "pg-2"}:
        r = pgha(base_env, "scale", "--nodes", "2", "--spec", spec, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert set(_nodes(_status(base_env, spec))) == {"pg-1", "pg-2"}
    return lab


def test_config_set_restarts_every_member_on_its_host(two_nodes: dict[str, Any], base_env: dict[str, str]) -> None:
    spec, hosts = str(two_nodes["ops_spec"]), two_nodes["hosts"]
    with lab_connect(base_env, SCOPE, hosts[0]["rw_port"]) as c:
        before = int(str(c.execute("show max_connections").fetchone()[0]))  # type: ignore[index]
    want = str(before + 10 if before < 200 else before - 10)
    ids = {f"pg-{i}": _inner(hosts[i - 1]).containers.get(f"{SCOPE}-pg-{i}").id for i in (1, 2)}
    r = pgha(base_env, "config", "set", f"max_connections={want}", "--spec", spec, "--json", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["needs_restart"] == {"max_connections": True}
    assert sorted(res["restarted"]) == ["pg-1", "pg-2"]  # each on its own host, through Patroni
    assert res["values"] == {"pg-1": {"max_connections": want}, "pg-2": {"max_connections": want}}
    # Restarted in place (PostgreSQL through Patroni), not recreated; the spec follows the change.
    assert {f"pg-{i}": _inner(hosts[i - 1]).containers.get(f"{SCOPE}-pg-{i}").id for i in (1, 2)} == ids
    assert _stored_parameters(base_env)["max_connections"] == want
    st = _status(base_env, spec)
    assert not [m for m in _nodes(st).values() if m["pg_role"] != "leader" and m["pg_state"] != "streaming"], st
    # Every host's ports reach a member running the new value; a write on h3 reads back on h1's R/O.
    for h in hosts:
        for port in (h["rw_port"], h["ro_port"]):
            with lab_connect(base_env, SCOPE, port) as c:
                assert c.execute("show max_connections").fetchone() == (want,), (h["name"], port)
    with lab_connect(base_env, SCOPE, hosts[2]["rw_port"]) as c:
        c.execute("create table if not exists ops_t (v text)")
        c.execute("insert into ops_t values (%s)", (f"max_connections={want}",))

    def read_back() -> bool:
        with lab_connect(base_env, SCOPE, hosts[0]["ro_port"]) as c:
            row = c.execute("select pg_is_in_recovery(), count(*) from ops_t where v = %s",
                            (f"max_connections={want}",)).fetchone()
        return row == (True, 1)

    _eventually("the row written on h3 read back on h1's R/O port", read_back)


def test_config_set_that_stops_postgres_starting_is_rolled_back(two_nodes: dict[str, Any], base_env: dict[str, str]) -> None:
    spec, hosts = str(two_nodes["ops_spec"]), two_nodes["hosts"]
    stored = _stored_parameters(base_env)
    with lab_connect(base_env, SCOPE, hosts[0]["rw_port"]) as c:
        preload = c.execute("show superuser_reserved_connections").fetchone()
    # Allowed (a library the image lacks is refused before anything changes), but the postmaster
    # refuses to start with more reserved connections than max_connections.
    r = pgha(base_env, "config", "set", "superuser_reserved_connections=100000", "--spec", spec, timeout=600)
    err = (r.stderr.strip().splitlines() or [""])[-1]
    assert r.returncode == 4 and err.startswith("pgha: error: rolled back:"), r.stdout[-2000:] + r.stderr[-3000:]
    st = _status(base_env, spec)
    assert set(_nodes(st)) == {"pg-1", "pg-2"}
    assert _stored_parameters(base_env) == stored
    for h in hosts:
        for port in (h["rw_port"], h["ro_port"]):
            with lab_connect(base_env, SCOPE, port) as c:
                assert c.execute("show superuser_reserved_connections").fetchone() == preload, (h["name"], port)
    with lab_connect(base_env, SCOPE, hosts[1]["rw_port"]) as c:
        c.execute("create table if not exists ops_t (v text)")
        c.execute("insert into ops_t values ('after the rollback')")


def test_scale_up_onto_the_third_host_and_back_down(two_nodes: dict[str, Any], base_env: dict[str, str]) -> None:
    spec, hosts = str(two_nodes["ops_spec"]), two_nodes["hosts"]
    h3 = _inner(hosts[2])
    # Refused before anything: a 4th node would share h1 with pg-1 (host networking, same ports),
    # and a major upgrade is not built over hosts. Both one line, exit 2, nothing created anywhere.
    for args, line in ((["scale", "--nodes", "4"], "pgha: error: cannot scale pgha-it-ops to 4 nodes: pg-1 and pg-4 "
                                                   "are both on host h1"),
                       (["upgrade", "--major", "17"], "pgha: error: the major upgrade is not built for a cluster "
                                                      "over several hosts")):
        r = pgha(base_env, *args, "--spec", spec, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(line), r.stderr
    for h in hosts:
        names = [c.name for c in _inner(h).containers.list(all=True, filters={"label": f"pgha.cluster={SCOPE}"})]
        assert f"{SCOPE}-pg-4" not in names and not [n for n in names if "green" in str(n)], names

    r = pgha(base_env, "scale", "--nodes", "3", "--spec", spec, "--json", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pg3 = h3.containers.get(f"{SCOPE}-pg-3")  # placement: node 3 on host 3
    assert pg3.status == "running" and pg3.attrs["HostConfig"]["NetworkMode"] == "host"
    for h in hosts[:2]:
        assert not _inner(h).containers.list(all=True, filters={"name": f"{SCOPE}-pg-3"}), h["name"]
    nodes = _nodes(_status(base_env, spec))
    assert set(nodes) == {"pg-1", "pg-2", "pg-3"} and nodes["pg-3"]["pg_state"] == "streaming", nodes
    # EVERY host's HAProxy was reloaded with pg-3, and routes reads to it.
    for h in hosts:
        servers = _eventually(f"{h['name']}'s HAProxy with pg-3 UP",
                              lambda h=h: (s := _haproxy_servers(h))["replicas"].get("pg-3", "").startswith("UP")
                              and s)
        assert set(servers["primary"]) == {"pg-1", "pg-2", "pg-3"}, (h["name"], servers)
    with lab_connect(base_env, SCOPE, hosts[0]["rw_port"]) as c:
        c.execute("create table if not exists ops_t (v text)")
        c.execute("insert into ops_t values ('for pg-3')")
    for h in hosts:
        def served_by_pg3(h: dict[str, Any] = h) -> bool:
            # Round robin over the replicas: new connections reach pg-3 (h3's address) soon.
            with lab_connect(base_env, SCOPE, h["ro_port"]) as c:
                row = c.execute("select host(inet_server_addr()), count(*) from ops_t where v = 'for pg-3'").fetchone()
            return row == (hosts[2]["address"], 1)

        _eventually(f"{h['name']}'s R/O port to reach pg-3 with the row", served_by_pg3)

    r = pgha(base_env, "scale", "--nodes", "2", "--spec", spec, "--json", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # Gone from h3: its container (and no push helper left) and its volumes, data and config.
    assert h3.containers.list(all=True, filters={"label": "pgha.member=pg-3"}) == []
    assert h3.volumes.list(filters={"label": "pgha.member=pg-3"}) == []
    assert not h3.volumes.list(filters={"name": f"{SCOPE}-pg-3"})
    for h in hosts:
        assert set(_haproxy_servers(h)["primary"]) == {"pg-1", "pg-2"}, h["name"]
    assert set(_nodes(_status(base_env, spec))) == {"pg-1", "pg-2"}
    with lab_connect(base_env, SCOPE, hosts[2]["rw_port"]) as c:
        assert c.execute("select count(*) from ops_t where v = 'for pg-3'").fetchone() == (1,)


def test_etcd_replace_of_the_raft_leader_keeps_quorum(two_nodes: dict[str, Any], base_env: dict[str, str]) -> None:
    spec, hosts = str(two_nodes["ops_spec"]), two_nodes["hosts"]
    members = {f"etcd-{i}": h for i, h in enumerate(hosts, start=1)}  # spread: etcd-i on hi
    ep = {m: f"https://{h['address']}:2379" for m, h in members.items()}
    first = _inner(hosts[0]).containers.get(f"{SCOPE}-etcd-1")
    rows = json.loads(first.exec_run(["etcdctl", *ETCD_TLS, f"--endpoints={','.join(ep.values())}", "endpoint",
                                      "status", "-w", "json"]).output)
    leader_ep = next(r["Endpoint"] for r in rows if r["Status"]["leader"] == r["Status"]["header"]["member_id"])
    target = next(m for m, e in ep.items() if e == leader_ep)  # the hardest case: the raft leader
    others = [m for m in members if m != target]
    watcher = _inner(members[others[0]]).containers.get(f"{SCOPE}-{others[0]}")
    eps = ",".join(ep[m] for m in others)
    before = json.loads(watcher.exec_run(["etcdctl", *ETCD_TLS, f"--endpoints={ep[others[0]]}", "member", "list",
                                          "-w", "json"]).output)
    old_container = _inner(members[target]).containers.get(f"{SCOPE}-{target}").id
    failures: list[str] = []
    puts = [0]
    stop = threading.Event()

    def watch() -> None:
        # A write through the surviving members (on their own hosts) needs a raft quorum: every one must succeed.
        while not stop.is_set():
            r = watcher.exec_run(["etcdctl", *ETCD_TLS, f"--endpoints={eps}", "--command-timeout=2s", "put",
                                  "pgha-it-quorum", str(puts[0])])
            puts[0] += 1
            if r.exit_code != 0:
                failures.append(r.output.decode(errors="replace").strip()[:200])
            stop.wait(0.3)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        r = pgha(base_env, "etcd", "replace", target, "--spec", spec, "--json", timeout=600)
    finally:
        stop.set()
        thread.join(10)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert failures == [], f"quorum lost during the replacement: {failures[:3]}"
    assert puts[0] > 5
    res = json.loads(r.stdout)
    old_ids = {m["name"]: m["ID"] for m in before["members"]}
    assert res["old_id"] == f"{old_ids[target]:x}" and res["new_id"] and res["new_id"] != res["old_id"]
    # The new member runs on the same host (host networking, its address), as a fresh container.
    new = _inner(members[target]).containers.get(f"{SCOPE}-{target}")
    assert new.id != old_container and new.status == "running" and new.attrs["HostConfig"]["NetworkMode"] == "host"
    after = json.loads(watcher.exec_run(["etcdctl", *ETCD_TLS, f"--endpoints={ep[others[0]]}", "member", "list",
                                         "-w", "json"]).output)
    assert sorted((m["name"], m["peerURLs"][0]) for m in after["members"]) == sorted(
        (m, f"https://{h['address']}:2380") for m, h in members.items())
    r = watcher.exec_run(["etcdctl", *ETCD_TLS, f"--endpoints={ep[target]}", "endpoint", "health"])
    assert r.exit_code == 0, r.output
    assert set(_nodes(_status(base_env, spec))) == {"pg-1", "pg-2"}


def _leader(st: dict[str, Any]) -> str:
    return next(m for m, n in _nodes(st).items() if n["pg_role"] == "leader")


def test_a_write_through_each_hosts_pooler_reaches_the_primary(two_nodes: dict[str, Any],
                                                               base_env: dict[str, str]) -> None:
    spec, hosts = str(two_nodes["ops_spec"]), two_nodes["hosts"]
    st = _status(base_env, spec)
    assert "pool" in st["endpoints"] and "unreachable" not in st["endpoints"]["pooler"], st["endpoints"]
    for h in hosts:  # h3 runs no Patroni node: its pooler reaches the primary through its own HAProxy
        assert _inner(h).containers.get(f"{SCOPE}-pooler").attrs["HostConfig"]["NetworkMode"] == "host"
        with lab_connect(base_env, SCOPE, h["pool_port"]) as c:  # TLS and SCRAM, as the pooler requires
            c.execute("create table if not exists pool_t (host text)")
            c.execute("insert into pool_t values (%s)", (h["name"],))
            assert c.execute("select pg_is_in_recovery()").fetchone() == (False,)
    # `pgha dsn --pool` names every host's pooler (libpq tries them in turn, read-write).
    r = pgha(base_env, "dsn", "--pool", "--scope", SCOPE, "--show-password")
    assert r.returncode == 0, r.stderr
    uri = r.stdout.strip()
    assert all(f"127.0.0.1:{h['pool_port']}" in uri for h in hosts) and "target_session_attrs=read-write" in uri
    with psycopg.connect(uri, connect_timeout=5) as c:
        got = c.execute("select host from pool_t where host = any(%s)", ([h["name"] for h in hosts],)).fetchall()
    assert sorted(g[0] for g in got) == sorted(h["name"] for h in hosts)


def test_switchover_pauses_and_resumes_every_pooler_with_no_failed_write(two_nodes: dict[str, Any],
                                                                         base_env: dict[str, str]) -> None:
    spec, hosts = str(two_nodes["ops_spec"]), two_nodes["hosts"]
    before = _leader(_status(base_env, spec))
    with lab_connect(base_env, SCOPE, hosts[0]["pool_port"]) as c:
        c.execute("drop table if exists pool_sw")
        c.execute("create table pool_sw (n int primary key)")
    done: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def write(port: int, start: int) -> None:
        # One session each through h2's and h3's poolers; a paused pooler holds the insert, never fails it.
        n = start
        with lab_connect(base_env, SCOPE, port) as c:
            while not stop.is_set():
                try:
                    c.execute("insert into pool_sw values (%s)", (n,))
                    done.append(n)
                except psycopg.Error as exc:
                    failures.append(str(exc).strip()[:200])
                    return
                n += 1
                stop.wait(0.02)

    writers = [threading.Thread(target=write, args=(h["pool_port"], i * 1_000_000), daemon=True)
               for i, h in enumerate(hosts[1:], start=1)]
    for t in writers:
        t.start()
    try:
        r = pgha(base_env, "switchover", "--scope", SCOPE, "--json", timeout=600)
        seen = len(done)
    finally:
        stop.set()
        for t in writers:
            t.join(30)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    times = json.loads(r.stdout)["times"]
    assert times["pooled"] and times["paused_s"] is not None and times["leader"] == before, times
    assert failures == [], f"pooled writes failed during the switchover: {failures[:3]}"
    assert seen > 10, seen  # the writers were writing while it ran
    after = _leader(_status(base_env, spec))
    assert after != before
    with lab_connect(base_env, SCOPE, hosts[0]["rw_port"]) as c:
        rows = {n for (n,) in c.execute("select n from pool_sw").fetchall()}
    assert rows == set(done), f"{len(set(done) - rows)} acknowledged writes lost"
    obs = _status(base_env, spec)["endpoints"]["pooler"]
    assert "unreachable" not in obs, obs
