"""Backups across hosts through a pgBackRest repository host (`backup.repo_host`), in a 2-host lab;
and on the same lab cluster the flows that act on every node: a point-in-time restore in place and a
rolling minor upgrade.

Lab `itrepo` (2 simulated hosts), scope `pgha-it-repo`: 1 etcd member (on h1) and 2 Patroni
nodes, one per host (`allow_unsafe_placement`: 2 hosts cannot survive losing one, which is not
the point here; 3 hosts would cost a third lab host and its image load for nothing this file
checks). The repository host is on h2, so h1's node archives across hosts over TLS. One lab and
one cluster for the file; the teardown checks (`down --volumes --yes` keeps the repository,
`--purge-backups` removes it) run in the fixture's end, where the cluster goes anyway.

Ports: 27000-27099 (lab hosts' R/W and R/O on 127.0.0.1).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import psycopg
import pytest
import yaml

from stack.backup_decisions import CANARY_TABLE
from tests.integration.conftest import lab_cluster, pgha

LAB, SCOPE, PORT_BASE = "itrepo", "pgha-it-repo", 27000
REPO = f"{SCOPE}-repo"
REPO_VOLUME = f"{SCOPE}-pgbackrest"
MARKERS = 5


def _inner(host: dict[str, object]) -> docker.DockerClient:
    return docker.DockerClient(base_url=str(host["docker"]), timeout=60)


def _teardown_keeps_then_purges_the_repository(env: dict[str, str], spec: str, h2: docker.DockerClient) -> None:
    r = pgha(env, "down", "--volumes", "--yes", "--spec", spec, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert h2.containers.list(all=True, filters={"label": f"pgha.cluster={SCOPE}"}) == []
    assert [v.name for v in h2.volumes.list(filters={"label": f"pgha.cluster={SCOPE}"})] == [REPO_VOLUME]
    r = pgha(env, "down", "--volumes", "--purge-backups", "--yes", "--spec", spec, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert h2.volumes.list(filters={"label": f"pgha.cluster={SCOPE}"}) == []


@pytest.fixture(scope="module")
def lab(engine: docker.DockerClient, base_env: dict[str, str],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    def with_repo_host(data: dict[str, Any]) -> dict[str, Any]:
        assert data["nodes"] == 2 and data["etcd_members"] == 1 and data["allow_unsafe_placement"] is True
        return {**data, "backup": {"enabled": True, "repo_host": "h2"}}

    with lab_cluster(engine, base_env, LAB, SCOPE, PORT_BASE, 2, edit=with_repo_host,
                     spec_path=tmp_path_factory.mktemp("repo") / "spec.yaml") as st:
        st["repo_spec"] = st["cluster_spec"]
        yield st
        _teardown_keeps_then_purges_the_repository(base_env, st["repo_spec"], _inner(st["hosts"][1]))


def _password(env: dict[str, str]) -> str:
    return str(json.loads((Path(env["PGHA_STATE_DIR"]) / SCOPE / "secrets.json").read_text())["superuser"])


def test_repository_lives_in_the_repo_host_container_on_h2(lab: dict[str, object]) -> None:
    h1, h2 = (_inner(h) for h in lab["hosts"])  # type: ignore[attr-defined]
    repo = h2.containers.get(REPO)
    assert repo.status == "running" and repo.labels["pgha.role"] == "repo"
    assert repo.attrs["HostConfig"]["NetworkMode"] == "host" and repo.attrs["HostConfig"]["ReadonlyRootfs"]
    # Its volumes: the repository, and (many hosts) its config files pushed to h2, read-only at /etc/pgha.
    assert sorted((m["Name"], m["Destination"], m["RW"]) for m in repo.attrs["Mounts"] if m["Type"] == "volume") == sorted([
        (f"{REPO}-etc", "/etc/pgha", False), (REPO_VOLUME, "/var/lib/pgbackrest", True)])
    assert not h1.volumes.list(filters={"name": REPO_VOLUME})
    # The nodes mount no repository: archive-push crosses to the repository host over TLS.
    for client, member in ((h1, "pg-1"), (h2, "pg-2")):
        mounts = [m["Destination"] for m in client.containers.get(f"{SCOPE}-{member}").attrs["Mounts"]]
        assert "/var/lib/pgbackrest" not in mounts, (member, mounts)


def test_backup_to_the_repo_host_and_verified_restore(lab: dict[str, object], base_env: dict[str, str]) -> None:
    spec = str(lab["repo_spec"])
    assert CANARY_TABLE == "pgha_backup_canary"
    h1 = lab["hosts"][0]  # type: ignore[index]
    # Marker rows in the table whose row count the verified restore compares with the count at
    # backup time: the restored copy must hold every one of them (and pgha's own canary row).
    with psycopg.connect(host="127.0.0.1", port=h1["rw_port"], user="postgres", password=_password(base_env),
                         dbname="postgres", connect_timeout=5, autocommit=True) as c:
        c.execute("create table if not exists pgha_backup_canary (id bigserial primary key, token text not null, "
                  "written_at timestamptz not null default now())")
        c.execute("delete from pgha_backup_canary")
        for i in range(MARKERS):
            c.execute("insert into pgha_backup_canary (token) values (%s)", (f"marker-{i}",))
    r = pgha(base_env, "backup", "--spec", spec, "--json", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["type"] == "full" and res["from_standby"] is True
    assert res["canary_count"] == MARKERS + 1
    v = res["verification"]
    assert v["ok"] is True and v["label"] == res["label"], v
    assert v["canary"] == f"row {res['canary']} present, {MARKERS + 1} rows as when backed up", v
    # The set is in the repository host's volume, encrypted (OpenSSL's header, not zstd's magic).
    h2 = _inner(lab["hosts"][1])  # type: ignore[index]
    repo = h2.containers.get(REPO)
    code, out = repo.exec_run(["ls", f"/var/lib/pgbackrest/backup/{SCOPE}"], user="postgres")
    assert code == 0 and res["label"] in out.decode(), out
    code, out = repo.exec_run(["sh", "-c", f"find /var/lib/pgbackrest/archive/{SCOPE} -name '0000*' -type f "
                                           "| head -n1 | xargs head -c 8"], user="postgres")
    assert code == 0 and out == b"Salted__", out
    # `pgha backups` reads the repository host and shows the verification.
    r = pgha(base_env, "backups", "--spec", spec, "--json", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    sets = {s["label"]: s for s in json.loads(r.stdout)["sets"]}
    assert sets[res["label"]]["verified"] == "passed"
    # The audit's backup rows: archiving across hosts works, a fresh full backup, encrypted.
    r = pgha(base_env, "audit", "--spec", spec, "--json", timeout=300)
    rows = {f["check"]: f for f in json.loads(r.stdout)["findings"] if f["check"].startswith("backup.")}
    assert rows, r.stdout[-2000:]
    assert not [f for f in rows.values() if f["status"] == "critical"], rows
    assert rows["backup.archiving"]["status"] == "ok" and rows["backup.full_age"]["status"] == "ok", rows
    assert rows["backup.encryption"]["status"] == "ok", rows


def test_in_place_restore_reads_the_repo_host_over_tls(lab: dict[str, object], base_env: dict[str, str]) -> None:
    """Point in time, in place: the restore box on h1 reads the repository host on h2 over TLS."""
    spec = str(lab["repo_spec"])
    h1, h2 = lab["hosts"]  # type: ignore[misc]

    def q(sql: str) -> list[tuple[object, ...]]:
        with psycopg.connect(host="127.0.0.1", port=h1["rw_port"], user="postgres", password=_password(base_env),
                             dbname="postgres", connect_timeout=5, autocommit=True) as c:
            cur = c.execute(sql)
            return cur.fetchall() if cur.description else []

    q("create table if not exists rh_pitr (tag text)")
    q("delete from rh_pitr")
    r = pgha(base_env, "backup", "--spec", spec, "--type", "full", "--no-verify", "--json", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    q("insert into rh_pitr values ('kept')")
    time.sleep(1.5)
    noted = dt.datetime.now(dt.UTC)
    time.sleep(1.5)
    q("insert into rh_pitr values ('discarded')")
    repo_volume = _inner(h2).volumes.get(REPO_VOLUME).attrs["CreatedAt"]
    r = pgha(base_env, "restore", "--spec", spec, "--to", noted.strftime("%Y-%m-%d %H:%M:%S.%f+00"), "--in-place",
             "--yes", "--json", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["in_place"] is True and res["timeline"] and res["timeline"] > 1, res
    assert q("select tag from rh_pitr") == [("kept",)]
    # The repository was only read (its volume is the same; the container follows the node list, so the
    # one-node phase of the rebuild recreates it), and h1 never got a repository volume of its own.
    assert _inner(h2).volumes.get(REPO_VOLUME).attrs["CreatedAt"] == repo_volume
    assert _inner(h2).containers.get(REPO).status == "running"
    assert not _inner(h1).volumes.list(filters={"name": REPO_VOLUME})
    # --into a new scope is refused in one line: a second cluster could not bind these hosts' ports.
    r = pgha(base_env, "restore", "--spec", spec, "--to", noted.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
             "--into", "pgha-it-repo2", timeout=120)
    assert r.returncode != 0 and "(--in-place --yes)" in r.stderr and len(r.stderr.strip().splitlines()) == 1, \
        r.stderr


def test_rolling_upgrade_over_the_hosts(lab: dict[str, object], base_env: dict[str, str],
                                        engine: docker.DockerClient) -> None:
    """The minor upgrade over hosts: the target image, built on this machine only, is loaded into both hosts'
    engines and each node recreated on its own host (a new tag of the running image: the rolling path is the
    same whatever the image holds, and it costs no build)."""
    spec = str(lab["repo_spec"])
    h1, h2 = (_inner(h) for h in lab["hosts"])  # type: ignore[attr-defined]
    current = h1.containers.get(f"{SCOPE}-pg-1").attrs["Config"]["Image"]
    target = "pgha/node:pg17-itrepo-upgrade"
    assert engine.images.get(current).tag(target)
    try:
        assert not h1.images.list(name=target) and not h2.images.list(name=target)
        r = pgha(base_env, "upgrade", "--spec", spec, "--image", target, "--json", timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        res = json.loads(r.stdout)
        assert sorted(row["node"] for row in res["rows"] if row["image after"] == target) == ["pg-1", "pg-2"], res
        for client, member in ((h1, "pg-1"), (h2, "pg-2")):
            assert client.containers.get(f"{SCOPE}-{member}").attrs["Config"]["Image"] == target, member
        host1, host2 = lab["hosts"]  # type: ignore[misc]
        with psycopg.connect(host="127.0.0.1", port=host1["rw_port"], user="postgres", password=_password(base_env),
                             dbname="postgres", connect_timeout=5, autocommit=True) as c:
            c.execute("create table if not exists rh_up (v text)")
            c.execute("delete from rh_up")
            c.execute("insert into rh_up values ('after the upgrade')")
        deadline = time.monotonic() + 30
        while True:  # the replica on the other host replays it
            with psycopg.connect(host="127.0.0.1", port=host2["ro_port"], user="postgres",
                                 password=_password(base_env), dbname="postgres", connect_timeout=5,
                                 autocommit=True) as c:
                try:
                    if c.execute("select count(*) from rh_up").fetchone() == (1,):
                        break
                except psycopg.errors.UndefinedTable:
                    pass
            assert time.monotonic() < deadline, "the write on host 1 never reached host 2's replica"
            time.sleep(0.5)
    finally:
        engine.images.remove(target, noprune=True)  # this machine's extra tag; the lab hosts go with the lab


def test_repo_host_naming_an_unknown_host_creates_nothing(lab: dict[str, object], base_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    data = yaml.safe_load(Path(str(lab["repo_spec"])).read_text())
    data["scope"] = "pgha-it-rbad"
    data["backup"] = {"enabled": True, "repo_host": "h7"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    r = pgha(base_env, "up", "--spec", str(path), timeout=300)
    assert r.returncode != 0
    assert "backup.repo_host names unknown host 'h7' (hosts: h1, h2)" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for h in lab["hosts"]:  # type: ignore[attr-defined]
        inner = _inner(h)
        flt = {"label": "pgha.cluster=pgha-it-rbad"}
        assert not inner.containers.list(all=True, filters=flt) and not inner.volumes.list(filters=flt)
    assert not (Path(base_env["PGHA_STATE_DIR"]) / "pgha-it-rbad").exists()
