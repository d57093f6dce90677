"""A site switchover between two sites on one engine, under a write probe; then back.

Site A: 1 etcd / 1 node, the primary site. Site B: 1 etcd / 1 node, its standby cluster.
`pgha site switchover --scope B --yes` while a client writes every 50 ms (through A's R/W port,
then B's): every acknowledged write is on B (0 lost), the write gap is reported; A follows B
(a row written on B appears on A); the stored specs are swapped, so `status`, `audit` and
`site status` treat A as B's standby; then the switchover back. Refusals: one line, nothing
changed. The site drills on the same two sites: `pgha drill site-switchover` (0 lost) and
`pgha drill site-loss` (the primary site killed, the standby promoted, RPO and RTO reported, the
dead site rebuilt and following). Pooler and backups off: not the point.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import psycopg
import pytest

from stack.wait import wait_for
from tests.integration.conftest import Cluster, make_cluster, pgha, remove_scope, up

SCOPE_A = "pgha-it-sw-a"
SCOPE_B = "pgha-it-sw-b"
SPEC_A = {"scope": SCOPE_A, "nodes": 1, "etcd_members": 1, "ports": {"rw": 29630, "ro": 29631, "stats": 29632},
          "backup": {"enabled": False}, "pooler": {"enabled": False}}
SPEC_B = {"scope": SCOPE_B, "nodes": 1, "etcd_members": 1, "ports": {"rw": 29640, "ro": 29641, "stats": 29642},
          "backup": {"enabled": False}, "pooler": {"enabled": False}, "standby_of": {"scope": SCOPE_A}}


def connect(c: Cluster, timeout: int = 5) -> psycopg.Connection:
    ca = Path(c.env["PGHA_STATE_DIR"]) / c.scope / "tls" / "ca.crt"
    return psycopg.connect(host="127.0.0.1", port=c.port("rw"), user="postgres", password=c.secrets["superuser"],
                           dbname="postgres", autocommit=True, connect_timeout=timeout, sslmode="verify-full",
                           sslrootcert=str(ca))


def one(c: Cluster, sql: str) -> object:
    with connect(c) as conn:
        row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
    return row[0] if row else None


class WriteProbe:
    """A client inserting one row every 50 ms through whichever site's R/W port takes writes;
    the ids of the inserts acknowledged (committed without error) and when."""

    def __init__(self, sites: list[Cluster]) -> None:
        self.sites, self.acked, self.stop = sites, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        conn: psycopg.Connection | None = None
        n, turn = 0, 0
        while not self.stop.is_set():
            n += 1
            try:
                if conn is None:
                    conn = connect(self.sites[turn % len(self.sites)], timeout=1)
                conn.execute("insert into probe values (%s, now())", (n,))
                self.acked.append((n, time.monotonic()))
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn, turn = None, turn + 1  # the other site's R/W port next
            self.stop.wait(0.05)
        if conn is not None:
            conn.close()

    def __enter__(self) -> WriteProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def gap(self) -> float:
        times = [t for _, t in self.acked]
        return round(max(b - a for a, b in zip(times, times[1:], strict=False)), 2) if len(times) > 1 else 0.0


def clear(engine: docker.DockerClient) -> None:
    """Both sites removed: each site's nodes may sit on the other's network, so every container first."""
    for scope in (SCOPE_B, SCOPE_A):
        for ct in engine.containers.list(all=True, filters={"label": f"pgha.cluster={scope}"}):
            ct.remove(force=True)
    for scope in (SCOPE_B, SCOPE_A):
        remove_scope(engine, scope)


@pytest.fixture(scope="module")
def sites(engine: docker.DockerClient, base_env: dict[str, str],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Cluster]]:
    tmp = tmp_path_factory.mktemp("switchover")
    clear(engine)
    a = make_cluster(engine, base_env, tmp, SPEC_A)
    b = make_cluster(engine, base_env, tmp, SPEC_B)
    try:
        up(a)
        with connect(a) as conn:
            conn.execute("create table probe (id int primary key, at timestamptz not null)")
        up(b)
        yield a, b
    finally:
        clear(engine)
        for c in (b, a):
            shutil.rmtree(Path(base_env["PGHA_STATE_DIR"]) / c.scope, ignore_errors=True)


def switch(new: Cluster, old: Cluster) -> dict[str, object]:
    """`pgha site switchover --scope <new>` under the write probe: no acknowledged write lost."""
    wait_for(f"{new.scope} to replay what {old.scope} has", lambda: pgha(new.env, "site", "status", "--json",
                                                                         "--scope", new.scope),
             lambda r: r.returncode == 0 and any(s["scope"] == new.scope and s["streaming"]
                                                 for s in json.loads(r.stdout)["sites"]), timeout=60, interval=1)
    with connect(old) as conn:
        conn.execute("truncate probe")
    with WriteProbe([old, new]) as probe:
        wait_for("the probe's first writes", lambda: len(probe.acked), lambda n: n >= 10, timeout=30, interval=0.1)
        res = pgha(new.env, "site", "switchover", "--yes", "--json", "--scope", new.scope)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        before = len(probe.acked)
        wait_for("writes on the new primary site", lambda: len(probe.acked), lambda n: n >= before + 10,
                 timeout=30, interval=0.1)
    out = json.loads(res.stdout)
    acked = {i for i, _ in probe.acked}
    with connect(new) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (False,)
        have = {r[0] for r in conn.execute("select id from probe").fetchall()}
    lost = sorted(acked - have)
    print(f"\nsite switchover to {new.scope}: {len(acked)} writes acknowledged, {len(lost)} lost, write gap "
          f"{probe.gap()} s (flow: demotion to writable {out['write_gap_s']} s, caught up {out['caught_up_s']} s, "
          f"{out['elapsed_s']} s in all)")
    assert lost == [], f"acknowledged writes missing on {new.scope}: {lost[:20]}"
    assert out["old_primary"] == old.scope and out["old_primary_follows"] is True, out
    return out


def follows(standby: Cluster, primary: Cluster, row: int) -> None:
    with connect(primary) as conn:
        conn.execute("insert into probe values (%s, now())", (row,))
    got = wait_for(f"the row written on {primary.scope} to reach {standby.scope}",
                   lambda: one(standby, f"select count(*) from probe where id = {row}"),  # noqa: S608 - an int
                   lambda n: n == 1, timeout=30, interval=0.2)
    assert got == 1 and one(standby, "select pg_is_in_recovery()") is True


def roles(sites: tuple[Cluster, Cluster]) -> tuple[Cluster, Cluster]:
    """(the primary site, its standby) as the sites run now: each test starts from what it finds."""
    a, b = sites
    return (a, b) if one(a, "select pg_is_in_recovery()") is False else (b, a)


def test_refusals_change_nothing(sites: tuple[Cluster, Cluster]) -> None:
    p, s = roles(sites)
    for args, fragment in ((("--scope", s.scope), "add --yes"), (("--yes", "--scope", p.scope), "not a standby")):
        res = pgha(s.env, "site", "switchover", *args)
        assert res.returncode != 0 and fragment in res.stderr and len(res.stderr.strip().splitlines()) == 1, \
            res.stderr[-2000:]
    res = pgha(s.env, "site", "failover", "--scope", s.scope)
    assert res.returncode != 0 and "add --yes" in res.stderr, res.stderr[-2000:]
    for c, kind, fragment in ((p, "site-loss", "runs on a standby site"), (s, "hard-kill", "is a standby site"),
                              (s, "site-switchover --to pg-1", "does not apply")):
        res = pgha(c.env, "drill", *kind.split(), "--scope", c.scope)
        assert res.returncode != 0 and fragment in res.stderr and len(res.stderr.strip().splitlines()) == 1, \
            res.stderr[-2000:]
    assert one(s, "select pg_is_in_recovery()") is True and one(p, "select pg_is_in_recovery()") is False


def test_switchover_loses_no_write_the_old_site_follows_and_back(sites: tuple[Cluster, Cluster],
                                                                 tmp_path: Path) -> None:
    p, s = roles(sites)
    switch(s, p)
    follows(p, s, 1_000_001)
    res = pgha(p.env, "site", "status", "--json", "--scope", p.scope)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    rows = {r["scope"]: r for r in json.loads(res.stdout)["sites"]}
    assert rows[s.scope]["role"] == "primary" and rows[p.scope]["role"] == "standby", rows
    assert rows[p.scope]["follows"] == s.scope and rows[p.scope]["streaming"] is True, rows
    # The audit of the new standby site passes once the switchover has settled (a point-in-time
    # check: on a loaded machine HAProxy may still be marking its standby leader up).
    res = wait_for(f"{p.scope}'s audit to pass", lambda: pgha(p.env, "audit", "--json", "--scope", p.scope),
                   lambda r: r.returncode == 0, timeout=120, interval=2,
                   describe=lambda r: r.stderr[-500:] + json.dumps(
                       [f for f in json.loads(r.stdout or '{"findings": []}')["findings"] if f["status"] != "ok"]))
    findings = json.loads(res.stdout)["findings"]
    assert [f for f in findings if f["status"] == "critical"] == [], findings
    assert [f["observed"][:9] for f in findings if f["check"] == "site.standby"] == ["streaming"], findings
    # Its spec as a primary site (no standby_of): `pgha up` of it is refused, naming the site it follows.
    old = tmp_path / "old-primary.yaml"
    old.write_text(json.dumps({k: v for k, v in p.spec.items() if k != "standby_of"}))
    res = pgha(p.env, "up", "--spec", str(old))
    assert res.returncode != 0 and f"runs as a standby of {s.scope}" in res.stderr \
        and len(res.stderr.strip().splitlines()) == 1, res.stderr[-2000:]
    # And back: the sites as they were.
    switch(p, s)
    follows(s, p, 1_000_002)
    res = pgha(s.env, "status", "--json", "--scope", s.scope)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]


def test_failover_fences_and_the_old_site_is_rebuilt(sites: tuple[Cluster, Cluster],
                                                      engine: docker.DockerClient) -> None:
    a, b = roles(sites)  # a: the primary site now, b: its standby (whichever scope each is)
    res = pgha(b.env, "site", "failover", "--yes", "--json", "--scope", b.scope)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["fenced"] == [a.container("pg-1")] and out["operator_action"] is None, out
    assert engine.containers.get(a.container("pg-1")).status == "exited"
    print(f"\nsite failover: {b.scope} writable after {out['writable_after_s']} s, {out['elapsed_s']} s in all")
    with connect(b) as conn:
        conn.execute("insert into probe values (2000001, now())")
    for args, fragment in ((("--standby-of", b.scope), "add --yes"),
                           (("--standby-of", a.scope, "--yes"), "itself"),
                           (("--standby-of", "pgha-it-sw-none", "--yes"), "no cluster 'pgha-it-sw-none'")):
        res = pgha(a.env, "site", "rebuild", "--scope", a.scope, *args)
        assert res.returncode != 0 and fragment in res.stderr and len(res.stderr.strip().splitlines()) == 1, \
            res.stderr[-2000:]
    res = pgha(b.env, "site", "rebuild", "--scope", b.scope, "--standby-of", a.scope, "--yes")
    assert res.returncode != 0 and "not a writable primary site" in res.stderr, res.stderr[-2000:]
    # The fresh clone, asked for (the site-loss drill below covers the rewind).
    res = pgha(a.env, "site", "rebuild", "--yes", "--json", "--clone", "--scope", a.scope, "--standby-of", b.scope)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["streaming"] is True and out["method"] == "cloned afresh" and "--clone" in out["why"], out
    assert a.container("pg-1") in out["removed"], out
    print(f"site rebuild: {a.scope} cloned from {b.scope} in {out['elapsed_s']} s")
    assert one(a, "select count(*) from probe where id = 2000001") == 1
    follows(a, b, 2000002)


def drill(standby: Cluster, kind: str) -> dict[str, object]:
    started = time.monotonic()
    res = pgha(standby.env, "drill", kind, "--json", "--scope", standby.scope, "--heal-timeout", "300")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(res.stdout)
    print(f"\n{kind} drill to {standby.scope} in {time.monotonic() - started:.1f} s: write gap {out['write_gap_s']} s, "
          f"{out['writes_acked']} acknowledged, {len(out['lost_writes'])} lost, RPO {out['rpo_s']} s, "
          f"RTO {out['rto_s']} s, failover {out['failover_s']} s")
    assert out["old_site"] != standby.scope and out["new_site"] == standby.scope and out["healed"] is True, out
    assert Path(str(out["chart_png"])).exists(), out
    return out


def test_site_switchover_drill_loses_nothing(sites: tuple[Cluster, Cluster]) -> None:
    p, s = roles(sites)
    out = drill(s, "site-switchover")
    assert out["lost_writes"] == [] and float(out["write_gap_s"]) < 30, out  # goal 10 s; generous on 2 shared cores
    assert roles(sites) == (s, p)
    follows(p, s, 3_000_001)


def test_site_loss_drill_promotes_and_rebuilds(sites: tuple[Cluster, Cluster], engine: docker.DockerClient) -> None:
    p, s = roles(sites)
    out = drill(s, "site-loss")
    # Goals: RPO <= 1 s of writes, RTO <= 30 s; the ceilings here are generous (2 shared cores).
    assert out["rto_s"] is not None and float(out["rto_s"]) < 90, out
    assert out["rpo_s"] is not None and float(out["rpo_s"]) < 10, out
    assert out["rejoin"] == "rebuilt", out
    # The killed site's data kept: Patroni rewound it onto the promoted site's timeline.
    assert out["rebuild"] == "rewound" and out["rebuild_discarded_commits"] >= len(out["lost_writes"]), out
    assert roles(sites) == (s, p)
    assert engine.containers.get(p.container("pg-1")).status == "running"
    follows(p, s, 3_000_002)
