"""Bounded growth on a live cluster: the audit's size rows (WAL per node, the repository, the
server's database) read real values, a backup moves the repository row, and a moved-aside
state directory is pruned once the repository it belonged to is gone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration.conftest import Cluster, pgha, running_cluster, up

SCOPE = "pgha-it-sizes"


@pytest.fixture(scope="module")
def cluster(engine: docker.DockerClient, base_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    spec = {"scope": SCOPE, "nodes": 2, "etcd_members": 1,
            "ports": {"rw": 26760, "ro": 26761, "stats": 26762}, "pooler": {"enabled": False}}
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("sizes"), spec) as c:
        yield c


def audit(c: Cluster) -> dict[str, Any]:
    res = pgha(c.env, "audit", "--spec", str(c.spec_file), "--json")
    assert res.returncode in (0, 1), res.stdout[-2000:] + res.stderr[-2000:]
    return dict(json.loads(res.stdout))


def rows(report: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["check"] == check]


def test_the_audit_reports_wal_repository_and_server_database(cluster: Cluster) -> None:
    report = audit(cluster)
    wal = rows(report, "disk.wal")
    assert sorted(f["target"] for f in wal) == ["pg-1", "pg-2"], wal
    for f in wal:
        assert f["status"] == "ok" and " in pg_wal " in f["observed"] and "1.1 GiB" in f["threshold"], f
    repo = rows(report, "backup.repository_size")
    assert len(repo) == 1 and "in the repository; filesystem" in repo[0]["observed"], repo
    db = rows(report, "server.database")
    assert len(db) == 1 and db[0]["status"] == "ok", db
    # The CLI's own Prefect API writes $PREFECT_HOME/prefect.db: the audit finds it there.
    assert cluster.env["PREFECT_HOME"] in db[0]["observed"] or db[0]["observed"].startswith("size unknown"), db
    print(f"audit of {SCOPE}: {report['elapsed_s']} s, {len(report['findings'])} rows")


def test_a_backup_is_the_repositorys_yardstick(cluster: Cluster) -> None:
    res = pgha(cluster.env, "backup", "--spec", str(cluster.spec_file), "--type", "full")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    repo = rows(audit(cluster), "backup.repository_size")[0]
    assert repo["status"] == "ok" and "the newest full" in repo["observed"], repo


def test_a_moved_aside_directory_goes_when_its_repository_does(cluster: Cluster,
                                                              engine: docker.DockerClient) -> None:
    state = Path(cluster.env["PGHA_STATE_DIR"])
    res = pgha(cluster.env, "down", "--volumes", "--yes", "--spec", str(cluster.spec_file))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    first = sorted(state.glob(f"{SCOPE}.removed-*"))
    assert len(first) == 1 and (first[0] / "secrets.json").is_file()  # kept: its repository is kept
    # The repository goes (as an operator deleting it by hand would); a new cluster of the scope
    # makes a new one, and its teardown deletes the first directory, whose repository is gone.
    engine.volumes.get(f"{SCOPE}-pgbackrest").remove(force=True)
    up(cluster)
    res = pgha(cluster.env, "down", "--volumes", "--yes", "--spec", str(cluster.spec_file))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    now = sorted(state.glob(f"{SCOPE}.removed-*"))
    assert first[0] not in now and len(now) == 1, now  # the second one stays: its repository is kept
