"""Blue/green major upgrade 15 -> 17 on a live 2-node / 1-etcd cluster, through the real CLI.

A PostgreSQL 15 cluster (bookworm image) with a pgbench database, a sequence-backed table and a
table without a primary key, under the write probe: the upgrade refuses until
`--replica-identity-full`; a failure injected before the cutover (green's network name taken by
a foreign network, so green cannot be created) leaves blue serving with nothing lost; the
upgrade to 17 (trixie image) keeps every row, checksum and sequence, loses no acknowledged
write and keeps the write gap under a ceiling; writes made on 17 are on 15 after
`--rollback`; upgrading again and `--finish --yes` removes blue's nodes while the clients'
ports stay on 17.

Each test starts from the blue cluster it needs (`blue15`), whatever ran before it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import psycopg
import pytest

from stack.spec import parse_spec
from tasks.host.secrets import load_or_create
from tests.integration.conftest import Cluster, make_cluster, pgha, remove_scope, up
from tests.support.traffic import Traffic, measured

SCOPE = "pgha-it-mu1"
GREEN = f"{SCOPE}-green"
SPEC = {"scope": SCOPE, "nodes": 2, "etcd_members": 1, "postgres_version": 15,
        "ports": {"rw": 26100, "ro": 26101, "stats": 26102},  # green: +10 (major.green_port_offset)
        "pooler": {"enabled": False},
        # A declared role (generated password) and its database with an extension: green keeps them.
        "roles": [{"name": "app"}],
        "databases": [{"name": "app", "owner": "app", "extensions": ["pg_stat_statements"]}]}
GAP_CEILING_S = 20.0  # generous: the cutover measures ~3-4 s here (benchmarks/major_upgrade.py)
BENCH_TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "nokey", "items"]


@pytest.fixture(scope="module")
def cluster(engine: docker.DockerClient, base_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = make_cluster(engine, base_env, tmp_path_factory.mktemp("mu"), SPEC)
    remove_scope(engine, GREEN)
    try:
        yield c
    finally:
        pgha(c.env, "down", "--volumes", "--yes", "--purge-backups", "--spec", str(c.spec_file))
        remove_scope(engine, c.scope)
        remove_scope(engine, GREEN)


def psql(engine: docker.DockerClient, container: str, sql: str, db: str = "bench") -> str:
    r = engine.containers.get(container).exec_run(
        ["psql", "-XAtq", "-h", "/var/run/postgresql", "-d", db, "-v", "ON_ERROR_STOP=1", "-c", sql], user="postgres")
    assert r.exit_code == 0, r.output.decode()
    return r.output.decode().strip()


def primary(engine: docker.DockerClient, scope: str) -> str:
    """The container of `scope`'s writable primary (asked of each node)."""
    for m in ("pg-1", "pg-2"):
        if psql(engine, f"{scope}-{m}", "select pg_is_in_recovery()", "postgres") == "f":
            return f"{scope}-{m}"
    raise AssertionError(f"{scope} has no primary")


def connect(c: Cluster, db: str = "bench") -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=c.port("rw"), user="postgres", password=c.secrets["superuser"],
                           dbname=db, connect_timeout=5, autocommit=True)


def fingerprint(engine: docker.DockerClient, container: str) -> dict[str, tuple[str, str]]:
    """Row count and an order-independent checksum of every bench table."""
    out = {}
    for t in BENCH_TABLES:
        row = psql(engine, container, f"select count(*), coalesce(md5(string_agg(md5(x::text), '' order by "  # noqa: S608
                                      f"md5(x::text))), '') from {t} x")
        n, digest = row.split("|")
        out[t] = (n, digest)
    return out


def sequences(engine: docker.DockerClient, container: str) -> dict[str, int]:
    rows = psql(engine, container, "select sequencename, coalesce(last_value, 0) from pg_sequences")
    return {ln.split("|")[0]: int(ln.split("|")[1]) for ln in rows.splitlines()}


def traffic(c: Cluster):  # noqa: ANN201 - a context manager yielding Traffic
    secrets = load_or_create(Path(c.env["PGHA_STATE_DIR"]) / c.scope / "secrets.json", env={})
    return measured(parse_spec(c.spec), secrets)


def check_traffic(t: Traffic) -> None:
    assert t.lost == [], f"acknowledged writes lost: {t.lost[:10]}"
    assert t.writes_acked > 20, t
    assert t.write_gap_s < GAP_CEILING_S, t


def state_file(c: Cluster) -> Path:
    return Path(c.env["PGHA_STATE_DIR"]) / c.scope / "major-upgrade.json"


def green_containers(engine: docker.DockerClient) -> list[str]:
    return [str(x.name) for x in engine.containers.list(all=True, filters={"label": f"pgha.cluster={GREEN}"})]


@pytest.fixture
def blue15(engine: docker.DockerClient, cluster: Cluster) -> Cluster:
    """A healthy PostgreSQL 15 blue with the bench data and no upgrade in progress (made afresh if needed)."""
    healthy = pgha(cluster.env, "status", "--spec", str(cluster.spec_file)).returncode == 0
    if not healthy or state_file(cluster).exists() or green_containers(engine):
        remove_scope(engine, cluster.scope)
        remove_scope(engine, GREEN)
        for scope in (cluster.scope, GREEN):
            shutil.rmtree(Path(cluster.env["PGHA_STATE_DIR"]) / scope, ignore_errors=True)
        healthy = False
    if not healthy:
        up(cluster)
    lead = primary(engine, SCOPE)
    if psql(engine, lead, "select count(*) from pg_database where datname = 'bench'", "postgres") == "0":
        psql(engine, lead, "create database bench", "postgres")
        r = engine.containers.get(lead).exec_run(["pgbench", "-h", "/var/run/postgresql", "-i", "-s", "2", "-q",
                                                  "bench"], user="postgres")
        assert r.exit_code == 0, r.output.decode()[-500:]
        psql(engine, lead, "create table nokey (a int, b text); insert into nokey select g, md5(g::text) "
                           "from generate_series(1, 500) g; create table items (id serial primary key, v text); "
                           "insert into items (v) select 'v' || g from generate_series(1, 300) g")
    return cluster


def test_refusal_then_a_failure_before_cutover_leaves_blue_serving(engine: docker.DockerClient,
                                                                   blue15: Cluster) -> None:
    c = blue15
    before = fingerprint(engine, primary(engine, SCOPE))
    res = pgha(c.env, "upgrade", "--major", "17", "--scope", SCOPE)
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 3 and "pgbench_history" in last and "bench.public.nokey" in last, res.stderr
    assert "--replica-identity-full" in last and not green_containers(engine) and not state_file(c).exists()

    foreign = engine.networks.create(f"{GREEN}-net", driver="bridge")  # not pgha's: green cannot be created
    try:
        with traffic(c) as t:
            res = pgha(c.env, "upgrade", "--major", "17", "--scope", SCOPE, "--replica-identity-full")
    finally:
        foreign.remove()
    assert res.returncode != 0
    assert "failed before cutover" in res.stderr and "blue untouched" in res.stderr, res.stderr[-1500:]
    check_traffic(t)
    assert not green_containers(engine) and not state_file(c).exists()
    lead = primary(engine, SCOPE)
    assert psql(engine, lead, "select count(*) from pg_replication_slots where slot_type = 'logical'") == "0"
    assert psql(engine, lead, "show wal_level") == "logical"  # set on the way, by a rolling restart
    assert fingerprint(engine, lead) == before
    with connect(c) as conn:
        assert conn.execute("show server_version_num").fetchone()[0].startswith("15")
        conn.execute("insert into items (v) values ('after the failure')")


@pytest.mark.timing_sensitive
def test_upgrade_then_rollback(engine: docker.DockerClient, blue15: Cluster) -> None:
    c = blue15
    started = time.monotonic()
    lead15 = primary(engine, SCOPE)
    with connect(c) as conn:
        conn.execute("select nextval('items_id_seq') from generate_series(1, 5)")
    seq_before = sequences(engine, lead15)

    with traffic(c) as t:
        res = pgha(c.env, "upgrade", "--major", "17", "--scope", SCOPE, "--replica-identity-full", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    check_traffic(t)
    out = json.loads(res.stdout)
    assert (out["version_before"], out["version_after"], out["phase"]) == (15, 17, "on-green")
    assert out["write_gap_s"] < GAP_CEILING_S and out["bytes_copied"] > 0
    # Afterwards: green's own first full backup, its restore verified, and green's audit.
    assert out["backup_label"].endswith("F") and out["backup_verified"] is True, out
    assert out["audit"].split(":")[0] in ("ok", "warn"), out["audit"]
    for m in ("pg-1", "pg-2"):
        assert psql(engine, f"{GREEN}-{m}", "show server_version_num", "postgres").startswith("17")
    lead17 = primary(engine, GREEN)
    assert fingerprint(engine, lead17) == fingerprint(engine, primary(engine, SCOPE))
    seq_after = sequences(engine, lead17)
    assert all(seq_after[name] >= value for name, value in seq_before.items()), (seq_before, seq_after)
    with connect(c) as conn:  # the clients' port, unchanged, now reaches 17
        assert conn.execute("show server_version_num").fetchone()[0].startswith("17")
        new_id = conn.execute("insert into items (v) values ('written on 17') returning id").fetchone()[0]
        assert new_id > seq_before["items_id_seq"]
    status = pgha(c.env, "status", "--scope", SCOPE)
    assert GREEN in status.stdout, status.stdout
    # The declared role logs in on 17 with the password it had on 15; its database has its extension.
    app_pw = json.loads((Path(c.env["PGHA_STATE_DIR"]) / SCOPE / "app-passwords.json").read_text())["app"]
    with psycopg.connect(host="127.0.0.1", port=c.port("rw"), user="app", password=app_pw, dbname="app",
                         connect_timeout=5) as conn:
        assert conn.execute("show server_version_num").fetchone()[0].startswith("17")
        assert conn.execute("select count(*) from pg_extension where extname = 'pg_stat_statements'").fetchone() == (1,)

    with traffic(c) as t:
        res = pgha(c.env, "upgrade", "--major", "--rollback", "--scope", SCOPE, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    check_traffic(t)
    assert json.loads(res.stdout)["version_after"] == 15
    with connect(c) as conn:
        assert conn.execute("show server_version_num").fetchone()[0].startswith("15")
        assert conn.execute("select v from items where id = %s", (new_id,)).fetchone() == ("written on 17",)
        assert conn.execute("select nextval('items_id_seq')").fetchone()[0] > new_id
    assert not green_containers(engine) and not state_file(c).exists()
    assert psql(engine, primary(engine, SCOPE), "select count(*) from pg_replication_slots") == "1"  # the replica's
    assert psql(engine, primary(engine, SCOPE), "select to_regclass('public.pgha_major_marker')") == ""

    res = pgha(c.env, "upgrade", "--major", "--finish", "--yes", "--scope", SCOPE)
    assert res.returncode != 0 and "nothing to finish" in res.stderr, res.stderr[-1000:]
    print(f"lifecycle test took {time.monotonic() - started:.0f}s")  # noqa: T201
