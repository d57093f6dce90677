"""Two sites over hosts, in a lab: one lab of 2 simulated hosts split between two specs.

Site A (the primary site) runs on lab host h1 (1 etcd, 1 node, its HAProxy); site B, its standby
cluster, on h2 (the same). B's standby leader streams from A's HAProxy R/W port at h1's lab
address; each site's pg_hba admits the other's host. A row written on A appears on B; then the
site drills over hosts: `drill site-switchover` (A demoted, B promoted under a write probe, 0
lost, A follows B), `drill site-loss` (B's containers killed on h2, A promoted, RPO and RTO
reported, B rebuilt as A's standby by a rewind: its data and system identifier kept) and `drill
site-loss --kill-hosts` (A's lab host h1 killed, B promoted; h1 boots again and A's old primary
takes writes; the rebuild stops it and, A having promoted itself onto B's timeline number,
clones it afresh: those writes are gone). Pooler, backups and fencing off: not the point.

Ports: 20700-20707 (the lab hosts' R/W and R/O ports, and their pool ports' places, on
127.0.0.1); lab `itsite`, scopes `pgha-it-lsa` / `pgha-it-lsb`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from stack.wait import wait_for
from tests.integration.conftest import lab_cluster, lab_connect, pgha

LAB, SCOPE_A, SCOPE_B, PORT_BASE = "itsite", "pgha-it-lsa", "pgha-it-lsb", 20700


def one_host(data: dict[str, Any], index: int, scope: str) -> dict[str, Any]:
    """The lab's spec cut down to one of its hosts: a site of 1 etcd member and 1 node."""
    return {**data, "scope": scope, "nodes": 1, "etcd_members": 1, "hosts": [data["hosts"][index]],
            "allow_unsafe_placement": True}


@pytest.fixture(scope="module")
def sites(engine: docker.DockerClient, base_env: dict[str, str],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("labsite")
    state = Path(base_env["PGHA_STATE_DIR"])
    for scope in (SCOPE_A, SCOPE_B):
        shutil.rmtree(state / scope, ignore_errors=True)
    lab_spec: dict[str, Any] = {}

    def site_a(data: dict[str, Any]) -> dict[str, Any]:
        lab_spec.update(data)
        return one_host(data, 0, SCOPE_A)

    try:
        with lab_cluster(engine, base_env, LAB, SCOPE_A, PORT_BASE, 2, edit=site_a,
                         spec_path=tmp / "a.yaml") as st:
            b = {**one_host(lab_spec, 1, SCOPE_B), "standby_of": {"scope": SCOPE_A}}
            (tmp / "b.yaml").write_text(yaml.safe_dump(b))
            with lab_connect(base_env, SCOPE_A, st["hosts"][0]["rw_port"]) as c:
                c.execute("create table site_t (v text)")
            r = pgha(base_env, "up", "--spec", str(tmp / "b.yaml"), timeout=600)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            yield {**st, "a": str(tmp / "a.yaml"), "b": str(tmp / "b.yaml"),
                   "ports": {SCOPE_A: st["hosts"][0]["rw_port"], SCOPE_B: st["hosts"][1]["rw_port"]}}
    finally:
        for scope in (SCOPE_A, SCOPE_B):
            shutil.rmtree(state / scope, ignore_errors=True)


def site_status(env: dict[str, str], scope: str) -> dict[str, Any]:
    r = pgha(env, "site", "status", "--scope", scope, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def appears(env: dict[str, str], scope: str, port: object, value: str) -> None:
    """`value` is in site_t on the site `scope` (through its R/W port: a standby leader serves reads)."""
    def count() -> int:
        with lab_connect(env, scope, port) as c:
            row = c.execute("select count(*) from site_t where v = %s", (value,)).fetchone()
        return int(row[0]) if row else 0

    wait_for(f"'{value}' on {scope}", count, lambda n: n == 1, timeout=60, interval=0.3)


def test_standby_site_follows_over_hosts(sites: dict[str, Any], base_env: dict[str, str]) -> None:
    ports = sites["ports"]
    with lab_connect(base_env, SCOPE_A, ports[SCOPE_A]) as c:
        c.execute("insert into site_t values ('from site A')")
    appears(base_env, SCOPE_B, ports[SCOPE_B], "from site A")
    with lab_connect(base_env, SCOPE_B, ports[SCOPE_B]) as c:
        assert c.execute("select pg_is_in_recovery()").fetchone() == (True,)
    stored = yaml.safe_load((Path(base_env["PGHA_STATE_DIR"]) / SCOPE_B / "spec.yaml").read_text())
    h1 = sites["hosts"][0]["address"]
    assert stored["standby_of"]["hosts"] == [h1], stored["standby_of"]


def roles(env: dict[str, str], ports: dict[str, object]) -> tuple[str, str]:
    """(the primary site, its standby) as the sites run now."""
    with lab_connect(env, SCOPE_A, ports[SCOPE_A]) as c:
        a_standby = c.execute("select pg_is_in_recovery()").fetchone() == (True,)
    return (SCOPE_B, SCOPE_A) if a_standby else (SCOPE_A, SCOPE_B)


def drill(env: dict[str, str], standby: str, kind: str, *extra: str) -> dict[str, Any]:
    started = time.monotonic()
    res = pgha(env, "drill", kind, "--json", "--scope", standby, "--heal-timeout", "300", *extra, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out: dict[str, Any] = json.loads(res.stdout)
    print(f"\n{kind} drill to {standby} over hosts in {time.monotonic() - started:.1f} s: write gap "
          f"{out['write_gap_s']} s, {out['writes_acked']} acknowledged, {len(out['lost_writes'])} lost, "
          f"RPO {out['rpo_s']} s, RTO {out['rto_s']} s, failover {out['failover_s']} s")
    assert out["new_site"] == standby and out["healed"] is True, out
    return out


def test_site_switchover_drill_over_hosts_loses_nothing(sites: dict[str, Any], base_env: dict[str, str]) -> None:
    ports = sites["ports"]
    p, s = roles(base_env, ports)
    out = drill(base_env, s, "site-switchover")
    assert out["lost_writes"] == [] and float(out["write_gap_s"]) < 30, out  # goal 10 s; generous on 2 shared cores
    assert roles(base_env, ports) == (s, p)
    with lab_connect(base_env, s, ports[s]) as c:
        c.execute("insert into site_t values ('after the switchover')")
    appears(base_env, p, ports[p], "after the switchover")  # the old primary site follows, over hosts
    if p == SCOPE_A:  # its spec file as written, without standby_of: `pgha up` of it refused, naming B
        res = pgha(base_env, "up", "--spec", sites["a"])
        assert res.returncode != 0 and f"runs as a standby of {s}" in res.stderr \
            and len(res.stderr.strip().splitlines()) == 1, res.stderr[-2000:]


def system_id(env: dict[str, str], scope: str, port: object) -> str:
    with lab_connect(env, scope, port) as c:
        row = c.execute("select system_identifier::text from pg_control_system()").fetchone()
    assert row is not None
    return str(row[0])


def test_site_loss_drill_over_hosts_promotes_and_rewinds(sites: dict[str, Any], base_env: dict[str, str]) -> None:
    """Every container of the primary site killed, the standby site promoted; the rebuild keeps the
    dead site's data and Patroni rewinds it onto the promoted site's timeline."""
    ports = sites["ports"]
    p, s = roles(base_env, ports)
    sysid = system_id(base_env, p, ports[p])
    out = drill(base_env, s, "site-loss")
    # Goals: RPO <= 1 s of writes, RTO <= 30 s; the ceilings here are generous (2 shared cores).
    assert out["rto_s"] is not None and float(out["rto_s"]) < 90, out
    assert out["rpo_s"] is not None and float(out["rpo_s"]) < 10, out
    assert out["rejoin"] == "rebuilt", out
    print("rebuild: " + "; ".join(n for n in out["notes"] if "rebuilt as a standby" in n))
    # Rewound: the data kept, what the dead site wrote that the promoted one never received counted
    # (the probe's lost writes are among those commits).
    assert out["rebuild"] == "rewound", out
    assert out["rebuild_discarded_commits"] is not None \
        and out["rebuild_discarded_commits"] >= len(out["lost_writes"]), out
    assert roles(base_env, ports) == (s, p)
    assert system_id(base_env, p, ports[p]) == sysid
    with lab_connect(base_env, s, ports[s]) as c:
        c.execute("insert into site_t values ('after the site loss')")
    appears(base_env, p, ports[p], "after the site loss")  # the rebuilt site follows, over hosts
    with lab_connect(base_env, p, ports[p]) as c:  # the rows written before, on the promoted site, are on it
        have = c.execute("select count(*) from site_t").fetchone()
    assert have is not None and have[0] >= 2


def test_site_loss_killing_the_host_fences_the_returning_site(sites: dict[str, Any],
                                                               base_env: dict[str, str]) -> None:
    """The primary site's lab host killed (not only its containers): the failover cannot reach it
    and says what to do; the host boots again, its engine restarts the old primary, which promotes
    itself and takes writes (the drill writes 5 rows on it); the rebuild stops it first. It promoted
    onto the timeline number the new site took, so it cannot be rewound: cloned afresh, saying why,
    and the 5 rows are gone."""
    ports = sites["ports"]
    p, s = roles(base_env, ports)
    out = drill(base_env, s, "site-loss", "--kill-hosts")
    fence = [n for n in out["notes"] if n.startswith("failover: ")]
    assert fence and "not answer" in fence[0] and f"pgha site rebuild --scope {p}" in fence[0], out["notes"]
    rebuilt = [n for n in out["notes"] if "rebuilt as a standby" in n]
    print(f"returning site took {out['returned_writes']} writes; rebuild: {rebuilt}")
    assert out["returned_writes"] == 5 and out["returned_kept"] == 0, out
    assert out["rebuild"] == "cloned afresh" and rebuilt and "promoted itself onto timeline" in rebuilt[0], out
    assert out["rebuild_discarded_commits"] is not None and out["rebuild_discarded_commits"] >= 5, out  # its own timeline
    assert roles(base_env, ports) == (s, p)
    with lab_connect(base_env, s, ports[s]) as c:
        c.execute("insert into site_t values ('after the host loss')")
    appears(base_env, p, ports[p], "after the host loss")
