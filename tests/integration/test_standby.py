"""A second site on one engine: a standby cluster (`standby_of:`) follows a primary site.

Site A: 1 etcd / 1 node. Site B: 1 etcd / 2 nodes, its standby leader streaming from A's
HAProxy through a slot on A, its replica following the standby leader. A row written on A
appears on B; `pgha status` and the audit accept B's standby leader; `pgha site status` shows
B's lag; bad standby specs are refused in one line with nothing created; then site A is lost
(every container killed) and `pgha site promote --yes` makes B a primary site that accepts
writes. Pooler and backups off: not the point.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import docker
import psycopg
import pytest

from stack.wait import wait_for
from tests.integration.conftest import Cluster, assert_refused, make_cluster, pgha, remove_scope, up

SCOPE_A = "pgha-it-site-a"
SCOPE_B = "pgha-it-site-b"
BAD = "pgha-it-site-bad"
SPEC_A = {"scope": SCOPE_A, "nodes": 1, "etcd_members": 1, "ports": {"rw": 29600, "ro": 29601, "stats": 29602},
          "backup": {"enabled": False}, "pooler": {"enabled": False}}
SPEC_B = {"scope": SCOPE_B, "nodes": 2, "etcd_members": 1, "ports": {"rw": 29610, "ro": 29611, "stats": 29612},
          "backup": {"enabled": False}, "pooler": {"enabled": False}, "standby_of": {"scope": SCOPE_A}}
BAD_PORTS = {"rw": 29620, "ro": 29621, "stats": 29622}


def connect(c: Cluster, read_only: bool = False) -> psycopg.Connection:
    ca = Path(c.env["PGHA_STATE_DIR"]) / c.scope / "tls" / "ca.crt"
    return psycopg.connect(host="127.0.0.1", port=c.port("ro" if read_only else "rw"), user="postgres",
                           password=c.secrets["superuser"], dbname="postgres", autocommit=True, connect_timeout=5,
                           sslmode="verify-full", sslrootcert=str(ca))


def one(c: Cluster, sql: str, read_only: bool = False) -> object:
    with connect(c, read_only) as conn:
        row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
    return row[0] if row else None


@pytest.fixture(scope="module")
def sites(engine: docker.DockerClient, base_env: dict[str, str],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Cluster]]:
    tmp = tmp_path_factory.mktemp("standby")
    remove_scope(engine, SCOPE_B)  # B's nodes sit on A's network: B goes first
    a = make_cluster(engine, base_env, tmp, SPEC_A)
    b = make_cluster(engine, base_env, tmp, SPEC_B)
    try:
        up(a)
        with connect(a) as conn:
            conn.execute("create table site_rows (id int primary key, site text not null)")
            conn.execute("insert into site_rows values (1, 'written on A before B existed')")
        up(b)
        yield a, b
    finally:
        for c in (b, a):
            remove_scope(engine, c.scope)
            shutil.rmtree(Path(base_env["PGHA_STATE_DIR"]) / c.scope, ignore_errors=True)


def test_site_b_follows_site_a(sites: tuple[Cluster, Cluster]) -> None:
    a, b = sites
    assert b.secrets["superuser"] == a.secrets["superuser"] and b.secrets["restapi"] != a.secrets["restapi"]
    with connect(a) as conn:
        conn.execute("insert into site_rows values (2, 'written on A')")
    for read_only in (False, True):  # the standby leader (R/W port, read-only) and B's replica (R/O port)
        got = wait_for("the row written on A to reach B", lambda ro=read_only: one(b, "select count(*) from site_rows "
                                                                                      "where id = 2", ro),
                       lambda n: n == 1, timeout=30, interval=0.2)
        assert got == 1
    assert one(b, "select pg_is_in_recovery()") is True
    res = pgha(b.env, "status", "--json", "--scope", SCOPE_B)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    roles = {m["member"]: m["pg_role"] for m in json.loads(res.stdout)["members"] if m["role"] == "patroni"}
    assert roles == {"pg-1": "standby_leader", "pg-2": "replica"} or roles == {"pg-2": "standby_leader",
                                                                              "pg-1": "replica"}, roles
    res = pgha(b.env, "audit", "--json", "--scope", SCOPE_B)
    findings = json.loads(res.stdout)["findings"]
    critical = [f for f in findings if f["status"] == "critical"]
    assert res.returncode == 0 and critical == [], critical or res.stderr[-2000:]
    link = [f for f in findings if f["check"] == "site.standby"]
    assert len(link) == 1 and link[0]["observed"].startswith("streaming"), link


def test_site_status_shows_the_lag(sites: tuple[Cluster, Cluster]) -> None:
    _, b = sites
    res = pgha(b.env, "site", "status", "--json", "--scope", SCOPE_B)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    rows = {s["scope"]: s for s in json.loads(res.stdout)["sites"]}
    assert rows[SCOPE_A]["role"] == "primary" and rows[SCOPE_A]["receive_lsn"], rows
    mine = rows[SCOPE_B]
    assert mine["role"] == "standby" and mine["follows"] == SCOPE_A and mine["streaming"] is True, mine
    assert isinstance(mine["lag_bytes"], int) and mine["lag_bytes"] >= 0 and mine["replay_lsn"], mine
    assert mine["lag_bytes"] > 0 or mine["lag_s"] == 0, mine


@pytest.mark.parametrize(("change", "fragment"), [
    ({"standby_of": {"scope": BAD}}, "own scope"),
    ({"standby_of": {"scope": "pgha-it-site-none"}}, "no cluster 'pgha-it-site-none'"),
    ({"postgres_version": 15}, "needs the same major version"),
])
def test_bad_standby_specs_are_refused(sites: tuple[Cluster, Cluster], engine: docker.DockerClient,
                                       tmp_path: Path, change: dict[str, object], fragment: str) -> None:
    a, _ = sites
    spec = {**SPEC_B, "scope": BAD, "ports": BAD_PORTS, "pooler": {"enabled": False}, **change}
    assert_refused(a.env, tmp_path, engine, spec, fragment, scope=BAD)


def test_a_standby_with_another_password_is_refused(sites: tuple[Cluster, Cluster], engine: docker.DockerClient,
                                                    tmp_path: Path) -> None:
    a, _ = sites
    env = {**a.env, "POSTGRES_PASSWORD": "not-the-primary-sites-password"}
    assert_refused(env, tmp_path, engine, {**SPEC_B, "scope": BAD, "ports": BAD_PORTS, "pooler": {"enabled": False}},
                   "differs from the primary site", scope=BAD)


def test_promote_after_site_a_is_lost(sites: tuple[Cluster, Cluster], engine: docker.DockerClient) -> None:
    a, b = sites
    res = pgha(b.env, "site", "promote", "--scope", SCOPE_B)
    assert res.returncode != 0 and "add --yes" in res.stderr, res.stderr
    res = pgha(b.env, "site", "promote", "--yes", "--scope", SCOPE_B)
    assert res.returncode != 0 and "still accepts writes" in res.stderr, res.stderr
    assert one(b, "select pg_is_in_recovery()") is True  # refused: nothing changed
    for ct in engine.containers.list(filters={"label": f"pgha.cluster={SCOPE_A}"}):
        ct.kill()  # the whole primary site lost at once
    res = pgha(b.env, "site", "promote", "--yes", "--json", "--scope", SCOPE_B)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["primary_site"] == SCOPE_A and out["primary_was_writable"] is False, out
    print(f"\nsite promote: writable after {out['writable_after_s']} s, {out['elapsed_s']} s in all")
    with connect(b) as conn:
        conn.execute("insert into site_rows values (3, 'written on B after the promotion')")
        assert conn.execute("select count(*) from site_rows").fetchone() == (3,)
    res = pgha(b.env, "up", "--spec", str(b.spec_file))  # the spec file still says standby_of
    assert res.returncode != 0 and "was promoted" in res.stderr and len(res.stderr.strip().splitlines()) == 1, \
        res.stderr[-2000:]
    # The lost site is cleared away; B's nodes, still attached to its network, lose that link only.
    res = pgha(a.env, "down", "--volumes", "--yes", "--scope", SCOPE_A)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert one(b, "select count(*) from site_rows") == 3
