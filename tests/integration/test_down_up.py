"""A 1-etcd, 2-node cluster with POSTGRES_PASSWORD: down then up keeps the data."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import docker
import psycopg
import pytest

from tests.integration.conftest import Cluster, pgha, running_cluster, up

SEED_PASSWORD = "seed-Password-for-it-b"  # the seed stack's POSTGRES_PASSWORD, chosen by the user


@pytest.fixture(scope="module")
def cluster_b(engine: docker.DockerClient, base_env: dict[str, str],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    spec = {"scope": "pgha-it-b", "nodes": 2, "etcd_members": 1,
            "ports": {"rw": 25442, "ro": 25443, "stats": 28414}, "pooler": {"enabled": False}}
    env = {**base_env, "POSTGRES_PASSWORD": SEED_PASSWORD}
    with running_cluster(engine, env, tmp_path_factory.mktemp("b"), spec) as c:
        yield c


def rw(c: Cluster) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=c.port("rw"), user="postgres", password=SEED_PASSWORD,
                           dbname="postgres", connect_timeout=5, autocommit=True)


def test_small_cluster_uses_postgres_password(cluster_b: Cluster) -> None:
    assert cluster_b.secrets["superuser"] == SEED_PASSWORD
    with rw(cluster_b) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (False,)


def test_other_postgres_password_is_refused(cluster_b: Cluster) -> None:
    res = pgha({**cluster_b.env, "POSTGRES_PASSWORD": "another-one"}, "up", "--spec", str(cluster_b.spec_file))
    assert res.returncode == 3
    assert res.stderr.strip().startswith("pgha: error: POSTGRES_PASSWORD differs")
    assert "another-one" not in res.stdout + res.stderr and SEED_PASSWORD not in res.stdout + res.stderr


def test_down_then_up_keeps_data_and_down_volumes_removes_it(cluster_b: Cluster, engine: docker.DockerClient) -> None:
    flt = {"label": f"pgha.cluster={cluster_b.scope}"}
    with rw(cluster_b) as conn:
        conn.execute("create table if not exists kept (v text)")  # a rerun finds the first attempt's
        conn.execute("delete from kept")
        conn.execute("insert into kept values ('survives down/up')")

    res = pgha(cluster_b.env, "down", "--spec", str(cluster_b.spec_file))
    assert res.returncode == 0, res.stderr
    assert engine.containers.list(all=True, filters=flt) == []
    assert engine.networks.list(filters=flt) == []
    assert sorted(v.name for v in engine.volumes.list(filters=flt)) == [
        "pgha-it-b-etcd-1-data", "pgha-it-b-pg-1-data", "pgha-it-b-pg-2-data", "pgha-it-b-pgbackrest"]

    up(cluster_b)
    with rw(cluster_b) as conn:
        assert conn.execute("select v from kept").fetchall() == [("survives down/up",)]
    # `up` returns once the cluster is whole; seconds later Patroni may still be choosing the
    # synchronous standby again, which `status` reports (exit 1): it must be healthy within 60 s.
    deadline = time.monotonic() + 60
    while (status := pgha(cluster_b.env, "status", "--scope", cluster_b.scope)).returncode != 0:
        assert time.monotonic() < deadline, status.stdout[-2000:] + status.stderr[-1000:]
        time.sleep(2)

    res = pgha(cluster_b.env, "down", "--volumes", "--yes", "--purge-backups", "--scope", cluster_b.scope)
    assert res.returncode == 0, res.stderr
    assert engine.volumes.list(filters=flt) == []
    assert not (Path(cluster_b.env["PGHA_STATE_DIR"]) / cluster_b.scope).exists()
