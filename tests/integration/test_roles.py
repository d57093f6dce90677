"""Declared roles and databases (`roles:`, `databases:`), on one 1-etcd / 2-node cluster with the pooler.

`pgha up` creates them; a second `up` changes nothing (the journal says so); a role altered by
hand is reported by the audit and restored by the next `up`; a database left out of the spec is
not dropped (`prune: false`); pgbench as the declared role through the pooler rides a
`pgha switchover` with 0 failed transactions and 0 lost writes; no declared role's password is
in `docker inspect`, a container's log, PostgreSQL's log, the support report or the Prefect database
(its artifacts).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import psycopg
import pytest
import yaml

from tests.integration.conftest import ROOT, Cluster, pgha, running_cluster, up
from tests.integration.test_pooler import figure, has_open, held_lock, leader

SCOPE = "pgha-it-roles"
PGBENCH = shutil.which("pgbench")
BATCH_PASSWORD = "batch-Secret-0f3c9a"  # the file-password role's; searched for in every log below


def spec_of(pwfile: Path, extra_db: bool = True) -> dict[str, object]:
    dbs: list[dict[str, object]] = [{"name": "app", "owner": "app", "extensions": ["pg_stat_statements", "pgcrypto",
                                                                                "vector", "hypopg"],
                                     "schemas": ["billing"], "pool_size": 15}]
    if extra_db:
        dbs.append({"name": "reports", "owner": "batch"})
    return {"scope": SCOPE, "nodes": 2, "etcd_members": 1,
            "ports": {"rw": 29332, "ro": 29333, "stats": 29304, "pool": 29364},
            "backup": {"enabled": False}, "pooler": {"enabled": True},
            "audit_logging": {"enabled": True, "log": "ddl,role"},
            "roles": [{"name": "app", "connection_limit": 50},
                      {"name": "batch", "member_of": ["app", "pg_read_all_data"], "password": {"file": str(pwfile)}}],
            "databases": dbs}


@pytest.fixture(scope="module")
def cluster(engine: docker.DockerClient, base_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if PGBENCH is None:
        pytest.fail("these tests need pgbench on the host (Debian: postgresql-client)")
    tmp = tmp_path_factory.mktemp("roles")
    pwfile = tmp / "batch.pw"
    pwfile.write_text(BATCH_PASSWORD + "\n")
    pwfile.chmod(0o600)
    with running_cluster(engine, base_env, tmp, spec_of(pwfile)) as c:
        yield c


def superuser(c: Cluster, db: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=c.port("rw"), user="postgres", password=c.secrets["superuser"],
                           dbname=db, autocommit=True, connect_timeout=5)


def app_password(c: Cluster) -> str:
    data = json.loads((Path(c.env["PGHA_STATE_DIR"]) / c.scope / "app-passwords.json").read_text())
    return str(data["app"])


def journal(c: Cluster) -> list[dict[str, object]]:
    path = Path(c.env["PGHA_STATE_DIR"]) / c.scope / "operations.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def role_row(c: Cluster, name: str) -> tuple[object, ...] | None:
    with superuser(c) as conn:
        return conn.execute("select rolcanlogin, rolconnlimit from pg_roles where rolname = %s", (name,)).fetchone()


def test_declared_objects_exist_and_a_second_up_changes_nothing(cluster: Cluster) -> None:
    assert (Path(cluster.env["PGHA_STATE_DIR"]) / SCOPE / "app-passwords.json").stat().st_mode & 0o777 == 0o600
    assert role_row(cluster, "app") == (True, 50)
    with superuser(cluster) as conn:
        owner = conn.execute("select pg_get_userbyid(datdba) from pg_database where datname = 'app'").fetchone()
        member = conn.execute("select pg_has_role('batch', 'pg_read_all_data', 'member'), "
                              "pg_has_role('batch', 'app', 'member')").fetchone()
    assert owner == ("app",) and member == (True, True)
    with superuser(cluster, "app") as conn:
        ext = {r[0] for r in conn.execute("select extname from pg_extension").fetchall()}
        schema = conn.execute("select pg_get_userbyid(nspowner) from pg_namespace where nspname = 'billing'").fetchone()
        preload = conn.execute("show shared_preload_libraries").fetchone()
    assert {"pg_stat_statements", "pgcrypto", "vector", "hypopg"} <= ext and schema == ("app",)
    assert preload is not None and "pg_stat_statements" in str(preload[0])
    # The role logs in with its generated password, through the pooler too, and the file role with its file's.
    dsn = pgha(cluster.env, "dsn", "--scope", SCOPE, "--user", "app", "--db", "app", "--pool", "--show-password")
    assert dsn.returncode == 0, dsn.stderr
    with psycopg.connect(dsn.stdout.strip(), connect_timeout=5) as conn:
        assert conn.execute("select current_user, current_database()").fetchone() == ("app", "app")
        # The image's extensions work for the application: a nearest-neighbour query on a vector
        # column (pgvector) and a hypothetical index (hypopg), no preload needed.
        conn.execute("create temp table items (id int, emb vector(3))")
        conn.execute("insert into items values (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0.9,0.1,0]')")
        near = conn.execute("select id from items order by emb <-> '[1,0,0]' limit 2").fetchall()
        assert near == [(1,), (3,)]
        hypo = conn.execute("select count(*) from hypopg_create_index('create index on items (id)')").fetchone()
        assert hypo == (1,)
    with psycopg.connect(host="127.0.0.1", port=cluster.port("pool"), user="batch", password=BATCH_PASSWORD,
                         dbname="reports", connect_timeout=5) as conn:
        assert conn.execute("select current_user").fetchone() == ("batch",)
    first = [e for e in journal(cluster) if e.get("operation") == "bootstrap"][-1]
    assert "create role app" in first["apps"] and "create database app owned by app" in first["apps"]
    up(cluster)
    again = [e for e in journal(cluster) if e.get("operation") == "bootstrap"][-1]
    assert again["apps"] == ["nothing changed"], again


def test_drift_is_reported_by_the_audit_and_restored_by_up_and_nothing_is_dropped(
        cluster: Cluster, tmp_path: Path) -> None:
    with superuser(cluster) as conn:
        conn.execute("alter role app nologin connection limit 3")
    with superuser(cluster, "app") as conn:
        conn.execute("drop extension pgcrypto")
    res = pgha(cluster.env, "audit", "--json", "--scope", SCOPE)
    rows = [f for f in json.loads(res.stdout)["findings"] if f["check"] == "apps.drift"]
    assert len(rows) == 1 and rows[0]["status"] == "warn", rows
    assert "alter role app" in rows[0]["observed"] and "pgcrypto" in rows[0]["observed"], rows
    # `up` with a spec that no longer declares the `reports` database (prune: false).
    pwfile = Path(str(yaml.safe_load(cluster.spec_file.read_text())["roles"][1]["password"]["file"]))
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(yaml.safe_dump(spec_of(pwfile, extra_db=False)))
    res = pgha(cluster.env, "up", "--spec", str(smaller))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert role_row(cluster, "app") == (True, 50)
    with superuser(cluster, "app") as conn:
        assert conn.execute("select count(*) from pg_extension where extname = 'pgcrypto'").fetchone() == (1,)
    with superuser(cluster) as conn:
        assert conn.execute("select count(*) from pg_database where datname = 'reports'").fetchone() == (1,)
    last = [e for e in journal(cluster) if e.get("operation") == "bootstrap"][-1]
    assert any(str(a).startswith("alter role app") for a in last["apps"]), last  # type: ignore[union-attr]


def test_pgbench_as_the_declared_role_through_the_pooler_rides_a_switchover(cluster: Cluster) -> None:
    res = pgha(cluster.env, "dsn", "--scope", SCOPE, "--user", "app", "--db", "app", "--pool", "--pgpass")
    assert res.returncode == 0, res.stderr
    passfile = Path(cluster.env["PGHA_STATE_DIR"]) / SCOPE / "pgpass-app"
    assert passfile.stat().st_mode & 0o777 == 0o600
    env = {**os.environ, "PGPASSFILE": str(passfile)}

    def bench(port: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PGBENCH or "pgbench", "-h", "127.0.0.1", "-p", str(cluster.port(port)), "-U", "app",
                               *args, "app"], env=env, capture_output=True, text=True, timeout=300, check=False)

    init = bench("rw", "-i", "-q", "-s", "1")
    assert init.returncode == 0, init.stderr[-1500:]
    old = leader(cluster)
    out: dict[str, subprocess.CompletedProcess[str]] = {}
    with held_lock(cluster) as lock:
        sw = subprocess.Popen([sys.executable, "-m", "cli", "switchover", "--json", "--wait", "600", "--scope", SCOPE],
                              cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not has_open(sw.pid, lock):
            assert sw.poll() is None, f"pgha switchover ended early: {sw.communicate()}"
            assert time.monotonic() < deadline, "pgha switchover never reached its flow"
            time.sleep(0.2)
        runner = threading.Thread(target=lambda: out.setdefault("bench", bench("pool", "-c", "10", "-j", "2",
                                                                               "-T", "25")))
        runner.start()
        time.sleep(4)
    stdout, stderr = sw.communicate(timeout=300)
    runner.join(200)
    assert sw.returncode == 0, stderr[-2000:]
    assert json.loads(stdout)["times"]["candidate"] != old
    res = out["bench"]
    assert res.returncode == 0 and "aborted" not in res.stdout + res.stderr, res.stdout[-2000:] + res.stderr[-2000:]
    assert figure(res.stdout, r"number of failed transactions: (\d+)") == 0
    done = figure(res.stdout, r"number of transactions actually processed: (\d+)")
    with superuser(cluster, "app") as conn:
        assert conn.execute("select count(*) from pgbench_history").fetchone() == (done,)
    assert leader(cluster) != old


def test_no_declared_password_in_inspect_logs_the_report_or_the_prefect_database(
        cluster: Cluster, engine: docker.DockerClient, tmp_path: Path) -> None:
    secrets = [app_password(cluster), BATCH_PASSWORD]
    with superuser(cluster, "app") as conn:
        conn.execute("create table if not exists audited_by_pgaudit (id int)")
        conn.execute("alter role batch connection limit 7")  # audited (role class), restored by the next up
        conn.execute("alter role batch connection limit -1")
    node_logs = ""
    for ct in engine.containers.list(all=True, filters={"label": f"pgha.cluster={SCOPE}"}):
        text = json.dumps(ct.attrs) + ct.logs().decode(errors="replace")
        if ct.labels.get("pgha.role") == "patroni":
            node_logs += text
        if ct.labels.get("pgha.role") == "patroni":
            r = ct.exec_run(["sh", "-c", "cat /var/lib/postgresql/data/pgdata/log/* 2>/dev/null; true"])
            text += r.output.decode(errors="replace")
        for s in secrets:
            assert s not in text, f"a declared role's password is in {ct.name}"
    # The support report, with its audit (whose artifacts land in the Prefect database scanned below).
    out = tmp_path / "report.tar.gz"
    res = pgha(cluster.env, "report", "--spec", str(cluster.spec_file), "--output", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    with tarfile.open(out) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        assert any(m.name.endswith("audit.json") for m in members), [m.name for m in members]
        for m in members:
            data = tar.extractfile(m).read()  # type: ignore[union-attr]
            for s in secrets:
                assert s.encode() not in data, f"a declared role's password is in the report's {m.name}"
    prefect = Path(cluster.env["PREFECT_HOME"])
    for f in prefect.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for s in secrets:
                assert s.encode() not in data, f"a declared role's password is in {f}"
    # pgAudit (audit_logging) logs DDL and role statements; pgha's own password statements are not in it.
    assert "AUDIT: SESSION" in node_logs and "audited_by_pgaudit" in node_logs
    assert "SCRAM-SHA-256$" not in node_logs
    assert not [ln for ln in node_logs.splitlines() if "AUDIT" in ln and " password " in ln.lower()]
