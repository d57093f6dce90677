"""In-place point-in-time restore of a live cluster (`pgha restore --in-place --yes`).

One 2-node / 1-etcd cluster: write t1, full backup, write t2, note the time, write t3; a
target outside the range is refused with nothing changed; then the in-place restore to the
noted time keeps t1 and t2, drops t3, re-clones the replica, opens a new timeline, and
archiving (and a later backup) works on it. The restored copy was made beside the live data
and swapped in; once the rebuilt cluster is healthy neither the staged copy nor the old data
directories remain in the volumes. (A restore that fails before the swap, with missing WAL:
tests/integration/test_backup_hardening.py.)
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator

import docker
import psycopg
import pytest

from tests.integration.conftest import Cluster, pgha, running_cluster
from tests.integration.test_backup import ok, refused, sql

SCOPE = "pgha-it-bk3"
SPEC_NODES = ("pg-1", "pg-2")
SPEC = {"scope": SCOPE, "nodes": 2, "etcd_members": 1, "ports": {"rw": 25516, "ro": 25517, "stats": 28516}, "pooler": {"enabled": False}}


@pytest.fixture(scope="module")
def cluster_ip(engine: docker.DockerClient, base_env: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("ip"), SPEC) as c:
        yield c


def members(c: Cluster) -> dict[str, dict[str, object]]:
    st = json.loads(pgha(c.env, "status", "--json", "--scope", c.scope).stdout)
    return {m["member"]: m for m in st["members"] if m["role"] == "patroni"}


def node_ids(engine: docker.DockerClient, c: Cluster) -> dict[str, str]:
    return {m: str(engine.containers.get(c.container(m)).id) for m in ("pg-1", "pg-2")}


def tags(c: Cluster) -> list[str]:
    deadline = time.monotonic() + 60
    while True:
        try:
            return [str(r[0]) for r in sql(c, "select tag from pitr order by at")]
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "the R/W port does not answer"
            time.sleep(1)


def timeline(c: Cluster) -> int:
    """The primary's current timeline, from the name of the WAL file it writes."""
    return int(str(sql(c, "select pg_walfile_name(pg_current_wal_lsn())")[0][0])[:8], 16)


def test_in_place_restore(cluster_ip: Cluster, engine: docker.DockerClient) -> None:
    c = cluster_ip
    sql(c, "create table pitr (tag text not null, at timestamptz default clock_timestamp())")
    sql(c, "insert into pitr (tag) values ('t1')")
    ok(pgha(c.env, "backup", "--scope", c.scope, "--type", "full", "--no-verify", "--json"))
    sql(c, "insert into pitr (tag) values ('t2')")
    time.sleep(1.5)
    noted = dt.datetime.now(dt.UTC)
    time.sleep(1.5)
    sql(c, "insert into pitr (tag) values ('t3')")
    timeline_before = timeline(c)

    # Refused before anything changes (the range is named); --in-place without --yes is
    # refused by the CLI's argument check (tests/unit/test_backup.py, test_backup.py).
    before = node_ids(engine, c)
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S+00")
    line = refused(pgha(c.env, "restore", "--scope", c.scope, "--to", future, "--in-place", "--yes"),
                   "outside the recoverable range")
    assert " .. " in line, line
    assert node_ids(engine, c) == before
    assert tags(c) == ["t1", "t2", "t3"]

    res = pgha(c.env, "restore", "--scope", c.scope, "--to", noted.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
               "--in-place", "--yes", "--json")
    r = ok(res)
    assert "is discarded" in res.stderr, res.stderr
    assert r["in_place"] is True and r["into"] == c.scope and r["from_set"]
    assert tags(c) == ["t1", "t2"]
    # Rebuilt: new containers, both members up, the replica streaming on a new timeline.
    assert set(node_ids(engine, c).values()).isdisjoint(before.values())
    ms = members(c)
    leaders = [name for name, m in ms.items() if m["pg_role"] == "leader"]
    assert len(leaders) == 1, ms
    others = {name: (m["pg_role"], m["pg_state"]) for name, m in ms.items() if name != leaders[0]}
    assert sorted(others) == sorted(set(SPEC_NODES) - set(leaders)), ms
    assert all(role in ("replica", "sync_standby") and state == "streaming" for role, state in others.values()), ms
    assert int(r["timeline"]) > timeline_before, (r, timeline_before)  # type: ignore[call-overload]
    assert {int(m["timeline"]) for m in ms.values()} == {int(r["timeline"])}, ms  # type: ignore[call-overload]
    assert timeline(c) == r["timeline"]
    print("in-place restore:", {k: v for k, v in r.items() if k.endswith("_s")})  # noqa: T201
    assert str(r["history_archived"]).endswith(".history"), r
    for m in SPEC_NODES:  # the swap's leftovers are gone once the rebuilt cluster is healthy
        left = engine.containers.get(c.container(m)).exec_run(["ls", "-a", "/var/lib/postgresql/data"]).output.decode()
        assert "pgdata.restored" not in left and "pgdata.pre-restore" not in left, (m, left)
    # The restored cluster takes writes and its archiving works: a new backup (from the
    # re-cloned replica, on the new timeline) succeeds.
    sql(c, "insert into pitr (tag) values ('t4')")
    b = ok(pgha(c.env, "backup", "--scope", c.scope, "--type", "incr", "--no-verify", "--json"))
    assert b["type"] == "incr" and b["from_standby"] is True
    assert tags(c) == ["t1", "t2", "t4"]
