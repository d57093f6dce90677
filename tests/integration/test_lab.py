"""Many hosts, in a lab: 3 simulated hosts (Docker in Docker), one etcd member and one Patroni
node per host, HAProxy on every host. One lab and one cluster for the whole file (a lab host
loads slowly): each host drill (loss of the leader's, a replica's and the sync standby's host,
a partition of the leader's host) heals what it breaks, and the bad-input tests create nothing.

Ports: 26900-26999 (lab hosts' R/W and R/O on 127.0.0.1); lab `ithost`, scope `pgha-it-host`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import psycopg
import pytest
import yaml

from tests.integration.conftest import lab_cluster, lab_connect, pgha

LAB, SCOPE, PORT_BASE = "ithost", "pgha-it-host", 26900


@pytest.fixture(scope="module")
def lab(engine: docker.DockerClient, base_env: dict[str, str]) -> Iterator[dict[str, object]]:
    with lab_cluster(engine, base_env, LAB, SCOPE, PORT_BASE, 3) as st:
        yield st


def test_lab_status_lists_each_host(lab: dict[str, object], base_env: dict[str, str]) -> None:
    r = pgha(base_env, "lab", "status", "--name", LAB, "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    hosts = st["hosts"]
    assert [h["name"] for h in hosts] == ["h1", "h2", "h3"]
    assert len({h["rw_port"] for h in hosts} | {h["ro_port"] for h in hosts}) == 6
    assert all(h["docker"].startswith("unix://") and h["state"] == "running" for h in hosts)
    assert all(h["container"] == f"pgha-lab-{LAB}-{h['name']}" for h in hosts)
    assert Path(st["spec"]).exists()
    # Each host's /var/lib/docker was copied from the lab seed, not loaded (the load is the fallback).
    assert st["images"] == "node image: h1 from the seed, h2 from the seed, h3 from the seed", st["images"]


def test_the_lab_seed_is_no_labs_resource(lab: dict[str, object], engine: docker.DockerClient) -> None:
    seeds = engine.volumes.list(filters={"label": "pgha.lab-seed"})
    assert len(seeds) == 1, [v.name for v in seeds]  # one kept, the other image pairs' removed
    labels = seeds[0].attrs["Labels"]
    assert "pgha.lab" not in labels and str(seeds[0].name) == f"pgha-lab-seed-{labels['pgha.lab-seed']}"


def test_members_spread_one_per_host(lab: dict[str, object]) -> None:
    hosts = lab["hosts"]
    assert isinstance(hosts, list)
    for i, h in enumerate(hosts, start=1):
        inner = docker.DockerClient(base_url=h["docker"], timeout=30)
        names = sorted(str(c.name) for c in inner.containers.list(filters={"label": f"pgha.cluster={SCOPE}"}))
        assert names == sorted([f"{SCOPE}-etcd-{i}", f"{SCOPE}-pg-{i}", f"{SCOPE}-haproxy"]), (h["name"], names)


def test_write_on_host1_read_on_host2(lab: dict[str, object], base_env: dict[str, str]) -> None:
    hosts = lab["hosts"]
    assert isinstance(hosts, list)
    with lab_connect(base_env, SCOPE, hosts[0]["rw_port"]) as c:
        c.execute("create table if not exists lab_t (v text)")
        c.execute("insert into lab_t values ('from host 1')")
    with lab_connect(base_env, SCOPE, hosts[1]["ro_port"]) as c:
        row = c.execute("select pg_is_in_recovery(), count(*) from lab_t where v = 'from host 1'").fetchone()
    assert row == (True, 1)


def test_audit_over_the_hosts_is_clean(lab: dict[str, object], base_env: dict[str, str]) -> None:
    """The health audit reads every host: which node each HAProxy port reached (host addresses), etcd, Patroni."""
    r = pgha(base_env, "audit", "--spec", str(lab["spec"]), "--json", timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = {f"{f['check']} {f['target']}": f["status"] for f in json.loads(r.stdout)["findings"]}
    assert rows["haproxy.rw_port 5000"] == "ok" and rows["haproxy.ro_port 5001"] == "ok", rows
    assert "critical" not in rows.values(), rows


def test_dsn_is_a_multi_host_uri_that_connects(lab: dict[str, object], base_env: dict[str, str]) -> None:
    r = pgha(base_env, "dsn", "--spec", str(lab["spec"]), "--show-password")
    assert r.returncode == 0, r.stderr
    uri = r.stdout.strip()
    assert "target_session_attrs=read-write" in uri and uri.count("127.0.0.1:") == 3
    with psycopg.connect(uri, connect_timeout=5) as c:
        assert c.execute("select pg_is_in_recovery()").fetchone() == (False,)
    r = pgha(base_env, "dsn", "--spec", str(lab["spec"]), "--ro")
    assert "target_session_attrs=prefer-standby" in r.stdout


def _roles(base_env: dict[str, str], spec: str, within_s: float = 30) -> dict[str, str]:
    """host -> the Patroni role of the node on it, once `pgha status` says healthy (exit 0) within `within_s`.

    Asked again rather than once: on a busy machine an HAProxy check (500 ms timeout, over TLS)
    can time out twice and show the primary down for a second.
    """
    deadline = time.monotonic() + within_s
    while (r := pgha(base_env, "status", "--spec", spec, "--json")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(1)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    members = json.loads(r.stdout)["members"]
    return {f"h{m['member'].split('-')[1]}": m["pg_role"] for m in members if m["role"] == "patroni"}


def _host_with(roles: dict[str, str], role: str) -> str:
    return next(h for h, r in roles.items() if r == role)


@pytest.mark.timing_sensitive
def test_host_loss_of_the_leaders_host(lab: dict[str, object], base_env: dict[str, str]) -> None:
    spec = str(lab["spec"])
    host = _host_with(_roles(base_env, spec), "leader")
    r = pgha(base_env, "drill", "host-loss", "--host", host, "--spec", spec, "--json", timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["lost_writes"] == [] and res["writes_acked"] > 0
    assert res["new_leader"] != res["old_leader"] and res["healed"] is True
    assert res["write_gap_s"] < 60  # generous: ttl 20 + detection on a shared CPU
    # Healthy (the lost host is back and whole) with the leader on another host ...
    assert _host_with(_roles(base_env, spec), "leader") != host
    # ... and the multi-host URI serves writes again.
    r = pgha(base_env, "dsn", "--spec", spec, "--show-password")
    with psycopg.connect(r.stdout.strip(), connect_timeout=5) as c:
        assert c.execute("select pg_is_in_recovery()").fetchone() == (False,)


# The lab's spec runs the fast profile, so synchronous_mode: one replica is the synchronous
# standby, the other asynchronous. Losing the async replica's host, the writes barely stop;
# losing the sync standby's host, commits wait until Patroni names the other replica (the
# benchmark's medians: 0.32 s and 1.61 s). The ceilings are generous for a shared CPU.
@pytest.mark.timing_sensitive
@pytest.mark.parametrize(("role", "ceiling_s"), [("replica", 5.0), ("sync_standby", 15.0)])
def test_host_loss_of_a_standbys_host(lab: dict[str, object], base_env: dict[str, str], role: str,
                                      ceiling_s: float) -> None:
    spec = str(lab["spec"])
    before = _roles(base_env, spec)
    assert sorted(before.values()) == ["leader", "replica", "sync_standby"], before
    host, leader = _host_with(before, role), f"pg-{_host_with(before, 'leader')[1:]}"
    r = pgha(base_env, "drill", "host-loss", "--host", host, "--spec", spec, "--json", timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["target"] == f"pg-{host[1:]}"
    assert res["lost_writes"] == [] and res["writes_acked"] > 0 and res["healed"] is True
    assert res["old_leader"] == res["new_leader"] == leader  # no failover ...
    assert res["timeline_after"] == res["timeline_before"]  # ... not even a brief one
    assert res["write_gap_s"] < ceiling_s, (res["write_gap_s"], res["write_errors_seen"])
    # Whole again: healthy, the same leader, the lost host's node back as a standby, one sync standby.
    after = _roles(base_env, spec)
    assert f"pg-{_host_with(after, 'leader')[1:]}" == leader
    assert sorted(after.values()) == ["leader", "replica", "sync_standby"], after


def _started(lab: dict[str, object]) -> dict[str, str]:
    """Every container on every lab host and when it started."""
    out = {}
    for h in lab["hosts"]:  # type: ignore[attr-defined]
        inner = docker.DockerClient(base_url=h["docker"], timeout=30)
        out |= {str(c.name): str(c.attrs["State"]["StartedAt"]) for c in inner.containers.list(all=True)}
    return out


@pytest.mark.parametrize("case", ["unknown", "no-member", "not-a-host-drill"])
def test_host_drill_refuses_a_bad_host_in_one_line(lab: dict[str, object], base_env: dict[str, str],
                                                   tmp_path: Path, case: str) -> None:
    spec, kind, host = Path(str(lab["spec"])), "host-loss", "h9"
    expect = "--host h9 is not one of the spec's hosts (h1, h2, h3)"
    if case == "no-member":  # a 4th host: spread placement leaves it only HAProxy
        data = yaml.safe_load(spec.read_text())
        h3 = data["hosts"][2]
        data["hosts"].append({**h3, "name": "h4", "docker": "unix:///nonexistent/pgha-lab-h4.sock",
                              "address": h3["address"].rsplit(".", 1)[0] + ".14",
                              "rw_port": h3["rw_port"] + 2, "ro_port": h3["ro_port"] + 2})
        spec = tmp_path / "four-hosts.yaml"
        spec.write_text(yaml.safe_dump(data))
        host, expect = "h4", "host h4 runs no member of the cluster but HAProxy"
    elif case == "not-a-host-drill":
        kind, host, expect = "hard-kill", "h1", "--host only applies to host-loss and host-partition, not hard-kill"
    before = _started(lab)
    r = pgha(base_env, "drill", kind, "--host", host, "--spec", str(spec), timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgha: error: ") and expect in lines[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert _started(lab) == before  # nothing was killed, stopped or restarted


def _spec_with(lab: dict[str, object], tmp_path: Path, **change: object) -> Path:
    data = yaml.safe_load(Path(str(lab["spec"])).read_text())
    data["scope"] = "pgha-it-hbad"
    data.update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _nothing_created(lab: dict[str, object], engine: docker.DockerClient) -> None:
    flt = {"label": "pgha.cluster=pgha-it-hbad"}
    assert not engine.containers.list(all=True, filters=flt)
    for h in lab["hosts"]:  # type: ignore[attr-defined]
        inner = docker.DockerClient(base_url=h["docker"], timeout=30)
        assert not inner.containers.list(all=True, filters=flt) and not inner.volumes.list(filters=flt)


@pytest.mark.parametrize("case", ["unreachable", "duplicate", "unsafe"])
def test_bad_hosts_refused_before_anything_is_created(lab: dict[str, object], base_env: dict[str, str],
                                                       engine: docker.DockerClient, tmp_path: Path, case: str) -> None:
    hosts = [dict(h) for h in yaml.safe_load(Path(str(lab["spec"])).read_text())["hosts"]]
    if case == "unreachable":
        hosts[2]["docker"] = "unix:///nonexistent/pgha-lab.sock"
        expect = "no Docker engine answers at unix:///nonexistent/pgha-lab.sock (host h3"
    elif case == "duplicate":
        hosts[2]["name"] = "h1"
        expect = "two hosts have the same name 'h1'"
    else:
        hosts = hosts[:2]
        expect = "unsafe placement: losing host h1 (it holds 2 of 3 etcd members)"
    r = pgha(base_env, "up", "--spec", str(_spec_with(lab, tmp_path, hosts=hosts)), timeout=300)
    assert r.returncode != 0
    assert expect in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    _nothing_created(lab, engine)


def test_host_partition_of_the_leaders_host(lab: dict[str, object], base_env: dict[str, str]) -> None:
    spec = str(lab["spec"])
    host = _host_with(_roles(base_env, spec), "leader")
    r = pgha(base_env, "drill", "host-partition", "--host", host, "--spec", spec, "--json", timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["lost_writes"] == [] and res["healed"] is True and res["new_leader"] != res["old_leader"]
    assert any("no split brain" in n for n in res["notes"]), res["notes"]
    r = pgha(base_env, "lab", "status", "--name", LAB, "--json")
    hosts = {h["name"]: h for h in json.loads(r.stdout)["hosts"]}
    # Reconnected with its address: its HAProxy answers on its own published port again.
    with lab_connect(base_env, SCOPE, hosts[host]["rw_port"]) as c:
        assert c.execute("select pg_is_in_recovery()").fetchone() == (False,)
