"""A real 3-node cluster: routing, replication, idempotency, labels, secrets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import docker
import psycopg
import pytest

from tests.integration.conftest import Cluster, assert_refused, pgha


def connect(c: Cluster, port_name: str, password: str | None = None) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=c.port(port_name), user="postgres",
                           password=password or c.secrets["superuser"], dbname="postgres",
                           connect_timeout=5, autocommit=True)


def test_write_through_rw_read_from_replica_through_ro(cluster_a: Cluster) -> None:
    marker = f"row-{time.time_ns()}"
    with connect(cluster_a, "rw") as rw:
        assert rw.execute("select pg_is_in_recovery()").fetchone() == (False,)
        rw.execute("create table if not exists it_rows (id bigserial primary key, v text not null)")
        rw.execute("insert into it_rows (v) values (%s)", (marker,))
    deadline = time.monotonic() + 15
    with connect(cluster_a, "ro") as ro:
        assert ro.execute("select pg_is_in_recovery()").fetchone() == (True,)
        while True:
            if ro.execute("select count(*) from it_rows where v = %s", (marker,)).fetchone() == (1,):
                break
            assert time.monotonic() < deadline, "row never reached the replica behind the R/O port"
            time.sleep(0.2)


def test_ro_port_refuses_writes(cluster_a: Cluster) -> None:
    with connect(cluster_a, "ro") as ro, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        ro.execute("create table nope (i int)")


def test_wrong_password_is_refused(cluster_a: Cluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(cluster_a, "rw", password="not-the-password")


def test_scram_only_and_checksums(cluster_a: Cluster) -> None:
    with connect(cluster_a, "rw") as rw:
        assert rw.execute("show password_encryption").fetchone() == ("scram-sha-256",)
        assert rw.execute("show data_checksums").fetchone() == ("on",)
        row = rw.execute("select rolpassword from pg_authid where rolname = 'postgres'").fetchone()
        assert row is not None and str(row[0]).startswith("SCRAM-SHA-256$")
        assert rw.execute("select count(*) from pg_hba_file_rules where auth_method in ('trust', 'md5', 'password')"
                          ).fetchone() == (0,)


def test_patronictl_shows_one_leader_and_two_streaming_replicas(cluster_a: Cluster,
                                                                engine: docker.DockerClient) -> None:
    ct = engine.containers.get(cluster_a.container("pg-1"))
    res = ct.exec_run(["patronictl", "-c", "/run/pgha/patroni.yml", "list", "-f", "json"])
    assert res.exit_code == 0, res.output
    members = json.loads(res.output)
    roles = sorted(m["Role"] for m in members)
    assert roles == ["Leader", "Replica", "Sync Standby"]
    for m in members:
        if m["Role"] != "Leader":
            assert m["State"] == "streaming"


def test_status_json_is_healthy(cluster_a: Cluster) -> None:
    res = pgha(cluster_a.env, "status", "--json", "--scope", cluster_a.scope)
    assert res.returncode == 0, res.stdout + res.stderr
    st = json.loads(res.stdout)
    assert st["healthy"] is True and st["problems"] == []
    pg = [m for m in st["members"] if m["role"] == "patroni"]
    assert sorted(m["pg_role"] for m in pg) == ["leader", "replica", "sync_standby"]
    assert sorted(m["pg_state"] for m in pg) == ["running", "streaming", "streaming"], pg
    assert st["endpoints"]["rw"].startswith(f"postgresql://postgres@127.0.0.1:{cluster_a.port('rw')}/postgres?")
    assert "sslmode=verify-full" in st["endpoints"]["rw"]  # TLS by default (README "Hardening: TLS")


def test_dsn_password_only_on_request(cluster_a: Cluster) -> None:
    plain = pgha(cluster_a.env, "dsn", "--scope", cluster_a.scope)
    assert plain.returncode == 0 and cluster_a.secrets["superuser"] not in plain.stdout
    shown = pgha(cluster_a.env, "dsn", "--ro", "--show-password", "--scope", cluster_a.scope)
    assert shown.returncode == 0
    with psycopg.connect(shown.stdout.strip(), connect_timeout=5) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (True,)


def test_second_up_changes_no_container(cluster_a: Cluster, engine: docker.DockerClient) -> None:
    def snapshot() -> dict[str, tuple[str, str]]:
        cts = engine.containers.list(all=True, filters={"label": f"pgha.cluster={cluster_a.scope}"})
        return {c.name: (c.id, c.attrs["State"]["StartedAt"]) for c in cts}

    before = snapshot()
    assert len(before) == 8  # 3 etcd, 3 nodes, HAProxy, the fencing watcher
    res = pgha(cluster_a.env, "up", "--spec", str(cluster_a.spec_file))
    assert res.returncode == 0, res.stderr
    assert "nothing changed" in res.stdout
    assert snapshot() == before


def test_every_resource_labelled_and_ports_on_loopback_only(cluster_a: Cluster, engine: docker.DockerClient) -> None:
    flt = {"label": f"pgha.cluster={cluster_a.scope}"}
    cts = engine.containers.list(all=True, filters=flt)
    assert sorted(c.labels["pgha.role"] for c in cts) == ["etcd"] * 3 + ["fencer", "haproxy"] + ["patroni"] * 3
    assert sorted(c.labels["pgha.member"] for c in cts) == [
        "etcd-1", "etcd-2", "etcd-3", "fencer", "haproxy", "pg-1", "pg-2", "pg-3"]
    vols = engine.volumes.list(filters=flt)
    # 3 etcd + 3 nodes + the pgBackRest repository + the tmpfs volume of HAProxy's runtime-API socket
    # (HAProxy and the fencing watcher share it)
    assert len(vols) == 8, sorted(v.name for v in vols)
    api = engine.volumes.get(f"{cluster_a.scope}-haproxy-api")
    assert (api.attrs.get("Options") or {}).get("type") == "tmpfs", api.attrs
    assert len(engine.networks.list(filters=flt)) == 1
    published = []
    for c in cts:
        for bindings in (c.attrs["NetworkSettings"]["Ports"] or {}).values():
            for b in bindings or []:
                published.append((b["HostIp"], int(b["HostPort"])))
    assert sorted(published) == sorted(("127.0.0.1", cluster_a.port(p)) for p in ("rw", "ro", "stats"))


def test_passwords_absent_from_inspect_and_image_history(cluster_a: Cluster, engine: docker.DockerClient) -> None:
    secrets = list(cluster_a.secrets.values())
    cts = engine.containers.list(all=True, filters={"label": f"pgha.cluster={cluster_a.scope}"})
    images = set()
    for c in cts:
        blob = json.dumps(c.attrs)
        for pw in secrets:
            assert pw not in blob, f"a password is visible in docker inspect {c.name}"
        images.add(c.image.id)
    for image_id in images:
        img = engine.images.get(image_id)
        blob = json.dumps(img.attrs) + json.dumps(img.history())
        for pw in secrets:
            assert pw not in blob


def test_haproxy_metrics_on_stats_port(cluster_a: Cluster) -> None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{cluster_a.port('stats')}/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    assert 'haproxy_server_status{proxy="primary",server="pg-' in text


def test_port_of_another_cluster_creates_nothing(cluster_a: Cluster, base_env: dict[str, str], tmp_path: Path,
                                                 engine: docker.DockerClient) -> None:
    """Here, not in test_bad_input.py: every test of the shared cluster_a lives in one file (one xdist worker)."""
    spec = {"scope": "pgha-it-bad2", "nodes": 1, "etcd_members": 1,
            "ports": {"rw": cluster_a.port("rw"), "ro": 25466, "stats": 28436}, "pooler": {"enabled": False}}
    assert_refused(base_env, tmp_path, engine, spec, f"already published by pgha cluster '{cluster_a.scope}'",
                   scope="pgha-it-bad2")
