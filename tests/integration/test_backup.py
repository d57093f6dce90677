"""Backups on a live cluster: PITR across a switchover, verified restores, retention, dumps, bad input.

One 2-node / 1-etcd cluster is shared by every test; no test relies on another having run
before it. The cluster fixture records what the CLI says while the repository is still
empty; `full_backup` makes sure a full set exists; the corruption test damages a set of its
own and puts the bytes back afterwards. The PITR test restores into a second scope.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import psycopg
import pytest
import yaml

from tests.integration.conftest import Cluster, pgha, remove_scope, running_cluster, up
from tests.support.engine_proxy import EngineRelay

SCOPE = "pgha-it-bk1"
INTO = "pgha-it-bk2"
# A declared role and database (generated password, an extension): a PITR into a new scope keeps them.
APPS = {"roles": [{"name": "app"}], "databases": [{"name": "app", "owner": "app", "extensions": ["pg_stat_statements"]}]}
SPEC = {"scope": SCOPE, "nodes": 2, "etcd_members": 1, "ports": {"rw": 25500, "ro": 25501, "stats": 28500},
        "backup": {"retention_full": 2}, "pooler": {"enabled": False}, **APPS}
INTO_SPEC = {"scope": INTO, "nodes": 2, "etcd_members": 1, "ports": {"rw": 25502, "ro": 25503, "stats": 28502},
             "pooler": {"enabled": False}, **APPS}
INSTALL_MARK = b"install -o postgres -g postgres -m 0600"  # the pgBackRest file installation's command
CHAIN = "pgha-it-bk3"  # the block-incremental chain's PITR target: one node is enough to read it back
CHAIN_SPEC = {"scope": CHAIN, "nodes": 1, "etcd_members": 1, "ports": {"rw": 25506, "ro": 25507, "stats": 28506}, "pooler": {"enabled": False}}


@dataclass
class BackupCluster(Cluster):
    """The shared cluster, and the CLI's answers observed before its first backup."""

    empty_repo: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def cluster_bk(engine: docker.DockerClient, base_env: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackupCluster]:
    """Brought up WITHOUT backups first, then converged by `pgha up` with them (an older cluster).

    Before yielding, it asks the CLI what only an empty repository answers ("no backup
    yet"), so the test of those refusals does not depend on running first.
    """
    remove_scope(engine, INTO)
    old = {**SPEC, "backup": {"enabled": False}}
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("bk"), old) as plain:
        c = BackupCluster(plain.scope, plain.spec_file, plain.env, SPEC)
        c.spec_file.write_text(yaml.safe_dump(SPEC))
        up(c)
        for m in ("pg-1", "pg-2"):
            res = engine.containers.get(c.container(m)).exec_run(
                ["psql", "-h", "/var/run/postgresql", "-XAtc", "show archive_mode"], user="postgres")
            assert res.output.decode().strip() == "on", f"{m}: {res.output.decode()}"
        c.empty_repo = {
            "verify": pgha(c.env, "verify-restore", "--scope", c.scope),
            "restore": pgha(c.env, "restore", "--scope", c.scope, "--to", "2026-01-01 00:00:00+00", "--into", INTO),
        }
        yield c
    remove_scope(engine, INTO)


def repo_sets(engine: docker.DockerClient, c: Cluster) -> list[dict[str, object]]:
    """The stanza's backup sets as `pgbackrest info` reports them (read in pg-1, oldest first)."""
    res = engine.containers.get(c.container("pg-1")).exec_run(
        ["pgbackrest", "--config=/run/pgha/pgbackrest/node.conf", f"--stanza={c.scope}", "info", "--output=json"],
        user="postgres")
    assert res.exit_code == 0, res.output.decode()
    return list(json.loads(res.output.decode())[0].get("backup") or [])


@pytest.fixture
def full_backup(cluster_bk: BackupCluster, engine: docker.DockerClient) -> str:
    """The label of a good full backup set, taken now if the repository holds none."""
    fulls = [b for b in repo_sets(engine, cluster_bk) if b["type"] == "full" and not b.get("error")]
    if fulls:
        return str(fulls[-1]["label"])
    r = ok(pgha(cluster_bk.env, "backup", "--scope", cluster_bk.scope, "--type", "full", "--no-verify", "--json"))
    return str(r["label"])


def sql(c: Cluster, query: str, port: int | None = None, password: str | None = None) -> list[tuple[object, ...]]:
    with psycopg.connect(host="127.0.0.1", port=port or c.port("rw"), user="postgres",
                         password=password or c.secrets["superuser"], dbname="postgres",
                         autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


def ok(res: object) -> dict[str, object]:
    assert res.returncode == 0, f"exit {res.returncode}:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"  # type: ignore[attr-defined]
    return dict(json.loads(res.stdout))  # type: ignore[attr-defined]


def refused(res: object, needle: str) -> str:
    """A user mistake: non-zero exit and one readable line naming the problem, no traceback."""
    assert res.returncode != 0, res.stdout  # type: ignore[attr-defined]
    err = res.stderr.strip().splitlines()  # type: ignore[attr-defined]
    line = [ln for ln in err if ln.startswith("pgha: error:")]
    assert line, res.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in res.stderr, res.stderr  # type: ignore[attr-defined]
    assert needle in line[-1], line[-1]
    return line[-1]


def scratch_leftovers(engine: docker.DockerClient, scope: str) -> list[str]:
    flt = {"label": [f"pgha.cluster={scope}", "pgha.role=verify"]}
    return ([str(c.name) for c in engine.containers.list(all=True, filters=flt)]
            + [str(v.name) for v in engine.volumes.list(filters=flt)])


def test_bad_input_refused_and_nothing_changed(cluster_bk: BackupCluster, engine: docker.DockerClient) -> None:
    c = cluster_bk
    # Asked by the fixture while the repository was empty (no test had backed up yet).
    refused(c.empty_repo["verify"], "no backup yet")
    refused(c.empty_repo["restore"], "no backup to restore from")
    refused(pgha(c.env, "backup", "--scope", c.scope, "--type", "weekly"), "'weekly' is not one of 'full', 'diff', 'incr'")
    refused(pgha(c.env, "restore", "--scope", c.scope, "--to", "yesterday", "--into", INTO), "cannot read")
    refused(pgha(c.env, "restore", "--scope", c.scope, "--to", "2026-01-01 00:00:00", "--into", INTO), "no time zone")
    refused(pgha(c.env, "restore", "--scope", c.scope, "--to", "2026-01-01 00:00:00+00", "--in-place"), "--yes")
    # Before the oldest backup (or before any): outside the recoverable range, nothing created.
    refused(pgha(c.env, "restore", "--scope", c.scope, "--to", "2026-01-01 00:00:00+00", "--into", INTO),
            "no backup to restore from" if not repo_sets(engine, c) else "outside the recoverable range")
    assert scratch_leftovers(engine, c.scope) == []
    assert engine.containers.list(all=True, filters={"label": f"pgha.cluster={INTO}"}) == []
    assert engine.volumes.list(filters={"label": f"pgha.cluster={INTO}"}) == []


def test_backup_refused_without_a_healthy_replica(cluster_bk: BackupCluster, engine: docker.DockerClient) -> None:
    """backup.allow_primary false and the replica stopped: refused, the repository untouched."""
    c = cluster_bk
    sets_before = [b["label"] for b in repo_sets(engine, c)]
    replica = next(m for m, role in patroni_roles(c).items() if role != "leader")
    engine.containers.get(c.container(replica)).stop(timeout=30)
    try:
        refused(pgha(c.env, "backup", "--scope", c.scope), "no healthy streaming replica")
    finally:
        engine.containers.get(c.container(replica)).start()
        deadline = time.monotonic() + 120
        while pgha(c.env, "status", "--scope", c.scope).returncode != 0:
            assert time.monotonic() < deadline, "cluster not whole again after restarting the replica"
            time.sleep(2)
    assert [b["label"] for b in repo_sets(engine, c)] == sets_before


def patroni_roles(c: Cluster) -> dict[str, str]:
    st = json.loads(pgha(c.env, "status", "--json", "--scope", c.scope).stdout)
    return {m["member"]: m["pg_role"] for m in st["members"] if m["role"] == "patroni"}


def test_pitr_into_new_scope_across_switchover(cluster_bk: BackupCluster, engine: docker.DockerClient,
                                               tmp_path: Path) -> None:
    c = cluster_bk
    sql(c, "drop table if exists pitr")
    sql(c, "create table pitr (tag text not null, at timestamptz default clock_timestamp())")
    sql(c, "insert into pitr (tag) values ('t1')")
    r = ok(pgha(c.env, "backup", "--scope", c.scope, "--type", "full", "--json"))
    assert r["type"] == "full" and r["from_standby"] is True
    v = r["verification"]
    assert v["ok"] is True and v["label"] == r["label"] and "present" in v["canary"]  # type: ignore[index,operator]
    assert scratch_leftovers(engine, c.scope) == []

    sql(c, "insert into pitr (tag) values ('t2')")
    time.sleep(1.5)
    noted = dt.datetime.now(dt.UTC)
    time.sleep(1.5)
    sql(c, "insert into pitr (tag) values ('t3')")

    roles = patroni_roles(c)
    leader = next(m for m, role in roles.items() if role == "leader")
    other = next(m for m in roles if m != leader)
    sw = engine.containers.get(c.container(leader)).exec_run(
        ["patronictl", "-c", "/run/pgha/patroni.yml", "switchover", "--leader", leader, "--candidate", other,
         "--force", c.scope])
    assert sw.exit_code == 0, sw.output.decode()
    deadline = time.monotonic() + 90
    while True:
        try:
            sql(c, "insert into pitr (tag) values ('t4')")
            break
        except psycopg.Error:
            assert time.monotonic() < deadline, "no writable primary after the switchover"
            time.sleep(0.5)

    # A target in the future is refused with the range; nothing is created.
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S+00")
    refused(pgha(c.env, "restore", "--scope", c.scope, "--to", future, "--into", INTO), "outside the recoverable range")
    # Restoring "into" the running source scope is refused.
    refused(pgha(c.env, "restore", "--scope", c.scope, "--to", noted.isoformat(), "--into", c.scope), "another scope")
    assert engine.volumes.list(filters={"label": f"pgha.cluster={INTO}"}) == []

    into_file = tmp_path / "into.yaml"
    into_file.write_text(yaml.safe_dump(INTO_SPEC))
    try:
        res = pgha(c.env, "restore", "--scope", c.scope, "--to", noted.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
                   "--into-spec", str(into_file), "--json")
        r = ok(res)
        assert r["into"] == INTO and r["from_set"]
        into_secrets = json.loads((Path(c.env["PGHA_STATE_DIR"]) / INTO / "secrets.json").read_text())
        tags = [row[0] for row in sql(c, "select tag from pitr order by at", port=25502,
                                      password=into_secrets["superuser"])]
        assert tags == ["t1", "t2"], tags
        # The declared role keeps its password (the source's generated one) and its database its extension.
        app_pw = json.loads((Path(c.env["PGHA_STATE_DIR"]) / SCOPE / "app-passwords.json").read_text())["app"]
        with psycopg.connect(host="127.0.0.1", port=25502, user="app", password=app_pw, dbname="app",
                             connect_timeout=5) as conn:
            assert conn.execute("select count(*) from pg_extension where extname = 'pg_stat_statements'").fetchone() == (1,)
        # The live cluster still has everything, on its new primary.
        assert [row[0] for row in sql(c, "select tag from pitr order by at")] == ["t1", "t2", "t3", "t4"]
        # Restoring again into the (now existing) scope is refused.
        refused(pgha(c.env, "restore", "--scope", c.scope, "--to", noted.isoformat(), "--into-spec", str(into_file)),
                "already has")
    finally:
        pgha(c.env, "down", "--volumes", "--yes", "--purge-backups", "--spec", str(into_file))
        remove_scope(engine, INTO)


def test_diff_incr_and_retention(cluster_bk: BackupCluster, full_backup: str, tmp_path: Path) -> None:
    c = cluster_bk
    d = ok(pgha(c.env, "backup", "--scope", c.scope, "--type", "diff", "--no-verify", "--json"))
    # The incremental goes through a relay in front of the engine that cuts the output of the
    # pgBackRest file installation three times in a row (what a busy engine did in CI once): the
    # node-level retries are used up, the flow runs its steps again after its first delay, and the
    # night's backup exists.
    with EngineRelay(tmp_path / "engine.sock") as relay:
        relay.cut_exec_output(INSTALL_MARK, 3)
        res = pgha({**c.env, "DOCKER_HOST": relay.url}, "backup", "--scope", c.scope, "--type", "incr",
                   "--no-verify", "--json")
        i = ok(res)
        assert relay.cut == 3, relay.cut
    assert re.search(rf"backup attempt 1 of {c.scope} failed on a transient engine error \(cannot install pgBackRest "
                     r"files in pg-\d: .*the engine cut this command's output short", res.stdout + res.stderr), \
        res.stderr[-3000:]
    assert d["type"] == "diff" and str(d["label"]).endswith("D")
    assert i["type"] == "incr" and str(i["label"]).endswith("I")
    first_full = str(d["label"]).split("_")[0]
    assert first_full == full_backup  # a diff builds on the newest full
    f2 = ok(pgha(c.env, "backup", "--scope", c.scope, "--type", "full", "--no-verify", "--json"))
    # retention_full 2: the first full and its diff/incr are still kept.
    assert {first_full, d["label"], i["label"], f2["label"]} <= set(f2["sets"])  # type: ignore[arg-type]
    f3 = ok(pgha(c.env, "backup", "--scope", c.scope, "--type", "full", "--no-verify", "--json"))
    assert f3["sets"] == [f2["label"], f3["label"]], f3["sets"]
    assert first_full in str(f3["expired"]) and str(d["label"]) in str(f3["expired"])
    # An expired set cannot be verified: refused with one line.
    refused(pgha(c.env, "verify-restore", "--scope", c.scope, "--set", first_full), "no backup set")
    # `pgha backups` lists what the repository holds, newest first, and the window PITR reaches.
    b = ok(pgha(c.env, "backups", "--scope", c.scope, "--json"))
    rows = {str(s["label"]): s for s in b["sets"]}  # type: ignore[union-attr]
    assert str(b["sets"][0]["label"]) == f3["label"] and f2["label"] in rows, b  # type: ignore[index]
    assert first_full not in rows and rows[str(f3["label"])]["type"] == "full", b
    assert rows[str(f3["label"])]["wal_start"] and rows[str(f3["label"])]["verified"] == "never", b
    assert "" < str(b["recoverable_from"]) < str(b["recoverable_to"]), b


def test_dump_is_readable_by_pg_restore(cluster_bk: BackupCluster, engine: docker.DockerClient) -> None:
    c = cluster_bk
    sql(c, "create table if not exists dumped (id int primary key)")
    r = ok(pgha(c.env, "dump", "--scope", c.scope, "--json"))
    files = {f["database"]: f["file"] for f in r["files"]}  # type: ignore[attr-defined]
    assert "postgres" in files
    res = engine.containers.get(c.container(str(r["source"]))).exec_run(
        ["pg_restore", "--list", files["postgres"]], user="postgres")
    assert res.exit_code == 0, res.output.decode()
    assert "TABLE public dumped" in res.output.decode()


@pytest.fixture
def damaged_set(cluster_bk: BackupCluster, engine: docker.DockerClient) -> Iterator[str]:
    """A full set of its own with one stored relation file damaged; its bytes are put back afterwards.

    So the repository the other tests share is whole again whatever this test does.
    """
    c = cluster_bk
    r = ok(pgha(c.env, "backup", "--scope", c.scope, "--type", "full", "--no-verify", "--json"))
    label = str(r["label"])
    node = engine.containers.get(c.container("pg-1"))
    # The set's largest stored file: a relation stored on its own or a bundle of small files
    # (backup.block_incremental bundles them); either way, bytes pgBackRest must notice.
    find = node.exec_run(["sh", "-c", f"find /var/lib/pgbackrest/backup/{c.scope}/{label} -type f "
                                      "! -name 'backup.manifest*' -printf '%s %p\\n' | sort -n | tail -1"])
    victim = find.output.decode().strip().partition(" ")[2]
    assert find.exit_code == 0 and victim, find.output.decode()
    keep = node.exec_run(["cp", "-p", victim, "/tmp/pgha-test-undamaged"])
    assert keep.exit_code == 0, keep.output.decode()
    try:
        # Same size, different bytes.
        dd = node.exec_run(["sh", "-c", f"printf 'pgha-corruption-test' | dd of={victim} bs=1 seek=40 conv=notrunc"])
        assert dd.exit_code == 0, dd.output.decode()
        yield label
    finally:
        back = node.exec_run(["sh", "-c", f"cat /tmp/pgha-test-undamaged > {victim} && rm /tmp/pgha-test-undamaged"])
        assert back.exit_code == 0, back.output.decode()


def test_corrupt_repository_fails_verification(cluster_bk: BackupCluster, engine: docker.DockerClient,
                                               damaged_set: str) -> None:
    c, label = cluster_bk, damaged_set
    res = pgha(c.env, "verify-restore", "--scope", c.scope, "--set", label)
    # Not a user mistake but a failed check inside the flow: the run ends Failed (Prefect logs
    # its traceback) and the CLI's last line says what was found.
    assert res.returncode == 1, res.stdout
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("pgha: error:")][-1]
    assert "pgbackrest verify found a problem" in line and "checksum invalid: 1" in line, line
    assert scratch_leftovers(engine, c.scope) == []
    # A restore whose base set is damaged is refused before anything is created.
    time.sleep(1)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S+00")
    refused(pgha(c.env, "restore", "--scope", c.scope, "--to", now, "--into", INTO), f"backup set {label}")
    assert engine.volumes.list(filters={"label": f"pgha.cluster={INTO}"}) == []
    assert not (Path(c.env["PGHA_STATE_DIR"]) / INTO / "secrets.json").exists()


def test_block_incremental_chain_stores_changed_blocks_and_restores(cluster_bk: BackupCluster,
                                                                     engine: docker.DockerClient,
                                                                     tmp_path: Path) -> None:
    """full → 1 % of a table's rows changed → incr → incr: each incr stores the changed blocks, not
    whole files; the chain's last set restores verified, and a PITR inside the chain's window
    reads back what was committed before the target."""
    c = cluster_bk
    sql(c, "drop table if exists blk")
    # Random hex (compresses about 2:1), so the stored sizes measure pages, not zstd's luck.
    sql(c, "create table blk (id int primary key, pad text) with (fillfactor = 100)")
    sql(c, "insert into blk select g, md5(g::text || random()::text) || md5(random()::text) || "
           "md5(random()::text) || md5(random()::text) from generate_series(1, 200000) g")
    # A freshly loaded table's first vacuum sets every page's all-visible flag: every page changes,
    # and the next backup stores the table again (seen: 16.1 of 19.6 MB). Vacuum it before the full.
    sql(c, "vacuum (freeze) blk")
    pages = int(sql(c, "select pg_relation_size('blk') / 8192")[0][0])  # type: ignore[call-overload]
    full = ok(pgha(c.env, "backup", "--scope", c.scope, "--type", "full", "--no-verify", "--json"))
    sql(c, "update blk set pad = upper(pad) where id <= 2000")  # a contiguous 1 % of the rows
    i1 = ok(pgha(c.env, "backup", "--scope", c.scope, "--type", "incr", "--no-verify", "--json"))
    sql(c, "update blk set pad = upper(pad) where id > 198000")
    sql(c, "create table if not exists blk_mark (tag text)")
    sql(c, "insert into blk_mark values ('before')")
    time.sleep(1.5)
    target = dt.datetime.now(dt.UTC)
    time.sleep(1.5)
    sql(c, "insert into blk_mark values ('after')")
    i2 = ok(pgha(c.env, "backup", "--scope", c.scope, "--type", "incr", "--json"))
    full_mb, i1_mb, i2_mb = float(full["stored_mb"]), float(i1["stored_mb"]), float(i2["stored_mb"])  # type: ignore[arg-type]
    print(f"\nblock incremental: table {pages} pages; full {full['size_mb']} MB ({full_mb} MB stored, "
          f"{full['duration_s']} s); incr {i1_mb} MB stored ({i1['duration_s']} s), incr {i2_mb} MB stored; "
          f"incr / full stored {i1_mb / full_mb:.3f}")
    assert str(i1["label"]).startswith(str(full["label"])) and str(i2["label"]).startswith(str(full["label"]))
    # Without blocks, an incr stores every changed file whole: the table's file alone would be ~ the full.
    assert i1_mb <= 0.15 * full_mb and i2_mb <= 0.15 * full_mb, (full_mb, i1_mb, i2_mb)
    v = i2["verification"]
    assert v["ok"] is True and v["label"] == i2["label"], v  # type: ignore[index]

    remove_scope(engine, CHAIN)
    into_file = tmp_path / "chain.yaml"
    into_file.write_text(yaml.safe_dump(CHAIN_SPEC))
    try:
        r = ok(pgha(c.env, "restore", "--scope", c.scope, "--to", target.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
                    "--into-spec", str(into_file), "--json"))
        assert r["from_set"] == i1["label"], r  # the newest set before the target: the chain's first incr
        pw = json.loads((Path(c.env["PGHA_STATE_DIR"]) / CHAIN / "secrets.json").read_text())["superuser"]
        assert [row[0] for row in sql(c, "select tag from blk_mark", port=25506, password=pw)] == ["before"]
        upper = sql(c, "select count(*) filter (where pad = upper(pad)) from blk", port=25506, password=pw)
        assert upper[0][0] == 4000, upper  # both changed ranges, replayed on top of the incr
    finally:
        pgha(c.env, "down", "--volumes", "--yes", "--purge-backups", "--spec", str(into_file))
        remove_scope(engine, CHAIN)
