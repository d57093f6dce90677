"""Fencing over several hosts, in a 2-host lab: one watcher per host that runs a Patroni node.

Lab `itfence` (2 simulated hosts), scope `pgha-it-hostfence` (not `pgha-it-fence`: that is
test_fencing.py's single-engine cluster, and files never share a scope): 1 etcd member (on h1)
and 2 Patroni nodes, one per host (`allow_unsafe_placement`: surviving a host is test_lab.py's
subject), backups off, fencing ON (the lab's ready spec has it off; this file turns it on).
One lab and one cluster for the file; a fixture brings the watchers back (`pgha up`) before
each test that needs them, so no test depends on another's leftovers.

Ports: 27500-27599 (lab hosts' R/W and R/O on 127.0.0.1).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from stack.spec import parse_spec
from tests.integration.conftest import lab_cluster, pgha

LAB, SCOPE, PORT_BASE = "itfence", "pgha-it-hostfence", 27500
HARD_KILL_CEILING_S = 8.0  # fenced: a few seconds; unfenced it is the ttl (20 s)
WATCHERS = ["fencer-h1", "fencer-h2"]


@pytest.fixture(scope="module")
def lab(engine: docker.DockerClient, base_env: dict[str, str],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    lab_spec: dict[str, Any] = {}

    def fenced(data: dict[str, Any]) -> dict[str, Any]:
        assert data["fencing"] is False  # the lab's own spec: fencing off
        lab_spec.update(data)
        return {**data, "fencing": True}

    with lab_cluster(engine, base_env, LAB, SCOPE, PORT_BASE, 2, edit=fenced,
                     spec_path=tmp_path_factory.mktemp("hostfence") / "spec.yaml") as st:
        st["fenced_spec"], st["data"] = st["cluster_spec"], lab_spec
        yield st


def _inner(lab: dict[str, Any], host: str) -> docker.DockerClient:
    h = next(h for h in lab["hosts"] if h["name"] == host)
    return docker.DockerClient(base_url=h["docker"], timeout=30)


def _status(base_env: dict[str, str], spec: str, within_s: float = 60) -> dict[str, Any]:
    """`pgha status --json` once it says healthy (exit 0), asked again for up to `within_s`."""
    deadline = time.monotonic() + within_s
    while (r := pgha(base_env, "status", "--spec", spec, "--json")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(1)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return dict(json.loads(r.stdout))


def _fencers(st: dict[str, Any]) -> dict[str, str]:
    return {m["member"]: m["container_state"] for m in st["members"] if m["role"] == "fencer"}


@pytest.fixture
def fenced(lab: dict[str, Any], base_env: dict[str, str]) -> dict[str, Any]:
    """The lab's cluster, healthy, with both watchers running (`pgha up` when a test left them off)."""
    spec = str(lab["fenced_spec"])
    if _fencers(_status(base_env, spec)) != dict.fromkeys(WATCHERS, "running"):
        r = pgha(base_env, "up", "--spec", spec, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return lab


@pytest.mark.timing_sensitive
def test_a_watcher_on_each_host_watching_its_own_engine(fenced: dict[str, Any], base_env: dict[str, str]) -> None:
    st = _status(base_env, str(fenced["fenced_spec"]))
    assert _fencers(st) == dict.fromkeys(WATCHERS, "running"), st["members"]
    for host in ("h1", "h2"):
        inner = _inner(fenced, host)
        try:
            cts = inner.containers.list(all=True, filters={"label": [f"pgha.cluster={SCOPE}", "pgha.role=fencer"]})
            assert [c.name for c in cts] == [f"{SCOPE}-fencer-{host}"], (host, [c.name for c in cts])
            ct = cts[0]
            assert ct.labels["pgha.member"] == f"fencer-{host}"
            hc = ct.attrs["HostConfig"]
            assert hc["NetworkMode"] == "host" and hc["ReadonlyRootfs"] is True and hc["CapDrop"] == ["ALL"]
            sock = next(m for m in ct.attrs["Mounts"] if m["Destination"] == "/var/run/docker.sock")
            assert sock["Source"] == "/run/lab/docker.sock" and sock["RW"] is False  # this host's own engine
            etc = next(m for m in ct.attrs["Mounts"] if m["Destination"] == "/etc/pgha")
            assert etc["Type"] == "volume" and etc["RW"] is False  # its files pushed through the engine API
            # The agent's GET-only proxy: a private unix socket (nothing on the host's loopback);
            # inspection passes, a kill is refused before it reaches the engine.
            probe = ("import http.client,socket,sys\n"
                     "def ask(m,p):\n"
                     "    c=http.client.HTTPConnection('localhost');s=socket.socket(socket.AF_UNIX)\n"
                     "    s.connect('/run/pgha/engine/proxy.sock');c.sock=s;c.request(m,p);return c.getresponse().status\n"
                     f"print(ask('GET','/containers/{SCOPE}-pg-{host[1]}/json'),"
                     f"ask('POST','/containers/{SCOPE}-pg-{host[1]}/kill'))\n")
            code, out = ct.exec_run(["python3", "-c", probe], user="nobody")
            assert code == 0 and out.decode().split() == ["200", "403"], out.decode()
            stats = json.loads(ct.exec_run(["cat", "/run/pgha/fencer-stats.json"], user="nobody")[1])
            assert time.time() - stats["heartbeat_at"] < 30, stats
        finally:
            inner.close()


@pytest.mark.timing_sensitive
def test_hard_kill_is_fenced_by_the_leaders_host_watcher(fenced: dict[str, Any], base_env: dict[str, str]) -> None:
    spec = str(fenced["fenced_spec"])
    t0 = time.time()
    r = pgha(base_env, "drill", "hard-kill", "--spec", spec, "--json", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    d = json.loads(r.stdout)
    assert d["lost_writes"] == [] and d["healed"], d
    assert d["new_leader"] != d["old_leader"], d
    assert d["write_gap_s"] < HARD_KILL_CEILING_S, d["timeline"]
    host = parse_spec(fenced["data"]).host_of(d["old_leader"])
    print(f"hard-kill of {d['old_leader']} on {host}, fenced: write gap {d['write_gap_s']:.2f} s, "
          f"read gap {d['read_gap_s']:.2f} s, {d['writes_acked']} acked, 0 lost, whole after {d['whole_s']} s")
    inner = _inner(fenced, str(host))
    try:
        text = inner.containers.get(f"{SCOPE}-fencer-{host}").logs(since=int(t0)).decode(errors="replace")
    finally:
        inner.close()
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    mine = [x for x in rows if x.get("member") == d["old_leader"] and "outcome" in x]
    fenced_rows = [x for x in mine if x["outcome"] == "fenced"]
    assert fenced_rows, mine
    assert "exit code 137" in fenced_rows[0]["engine"] and f"names {d['old_leader']}" in fenced_rows[0]["key"]
    print(f"the watcher on {host}: event {fenced_rows[0]['event']} seen {fenced_rows[0]['event_age_ms']} ms "
          f"after the engine stamped it, fenced in {fenced_rows[0]['total_ms']} ms")
    # The old leader is back, as a streaming replica on its host; one leader.
    st = _status(base_env, spec)
    roles = {m["member"]: (m["pg_role"], m["pg_state"]) for m in st["members"] if m["role"] == "patroni"}
    assert roles[d["old_leader"]][0] in ("replica", "sync_standby"), roles
    assert roles[d["old_leader"]][1] == "streaming", roles
    assert [m for m, (role, _) in roles.items() if role == "leader"] == [d["new_leader"]], roles
    # The audit reads each host's watcher: both alive, the leader's host's one counted the fencing.
    a = pgha(base_env, "audit", "--spec", spec, "--json", timeout=300)
    assert a.stdout.startswith("{"), a.stdout[-2000:] + a.stderr[-2000:]
    findings = {(f["check"], f["target"]): f for f in json.loads(a.stdout)["findings"]}
    for w in WATCHERS:
        assert findings[("fencing.watcher", w)]["status"] == "ok", findings[("fencing.watcher", w)]
        assert findings[("container.running", w)]["status"] == "ok", findings[("container.running", w)]
    assert "fenced 1" in findings[("fencing.watcher", f"fencer-{host}")]["observed"], findings


def test_fencing_off_removes_every_watcher(fenced: dict[str, Any], base_env: dict[str, str]) -> None:
    r = pgha(base_env, "up", "--spec", str(fenced["spec"]), timeout=600)  # the lab's spec: fencing false
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for host in ("h1", "h2"):
        inner = _inner(fenced, host)
        try:
            left = inner.containers.list(all=True, filters={"label": [f"pgha.cluster={SCOPE}", "pgha.role=fencer"]})
            assert left == [], (host, [c.name for c in left])
            vols = [v.name for v in inner.volumes.list(filters={"label": f"pgha.cluster={SCOPE}"})]
            assert f"{SCOPE}-fencer-{host}-etc" not in vols, vols  # its files (the etcd client key) gone too
            assert f"{SCOPE}-pg-{host[1]}-etc" in vols, vols  # the nodes' are not touched
        finally:
            inner.close()
    st = _status(base_env, str(fenced["spec"]))
    assert _fencers(st) == {}, st["members"]
