"""Failsafe mode when etcd loses its quorum and the member Patroni talks to still answers.

An etcd member without quorum does not fall silent: it answers the leader's lease keepalive,
after its request timeout, with `etcdserver: no leader`. Patroni as Debian ships it reads that
answer as a refused leader lock and demotes the primary at once, failsafe_mode or not (Patroni
issue 3572); only a member that does not answer at all lets failsafe keep the primary. The node
image carries a patch for it (stack/image/patroni-*-etcd3-failsafe.patch).

Two levels, both on the images pgha ships:
- Patroni's own etcd3 client, inside each node image (pg15 bookworm, pg17 trixie), against a
  stub etcd that gives exactly the answers of an etcd without quorum: the outcome must be
  "dcs unreachable" (failsafe applies), never "lock lost" (demote). Deterministic, seconds.
- A live cluster (3 etcd, 2 nodes, failsafe on, backups off): the two etcd members the leader
  is not connected to stop for OUTAGE_S, so the one it talks to stays up without quorum; a
  writer through the R/W port every 50 ms; writes go on, nothing is lost, the same single
  primary afterwards, and the audit's failsafe row (`patroni.failsafe_active`) said the leader
  ran on failsafe.

Scope `pgha-it-fs`, ports 29500-29502. No reruns: both must pass every time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from flows.audit import gather_failsafe
from stack import audit
from stack.audit import Finding, Level
from stack.spec import ClusterSpec, parse_spec
from tasks import images
from tasks.host.secrets import load_or_create
from tests.integration.conftest import Cluster, pgha, remove_scope, running_cluster
from tests.support.traffic import measured

SCOPE = "pgha-it-fs"
PROBE = Path(__file__).resolve().parent.parent / "support" / "patroni_etcd_probe.py"
OUTAGE_S = 35.0
# Failsafe held: the primary never stops (0.13 s measured). A demotion costs the whole outage
# (the primary is read-only until etcd is back), so 5 s leaves room for a slow machine and
# still tells the two apart.
WRITE_GAP_CEILING_S = 5.0

# What an etcd 3.5 member without quorum answers the lease keepalive (gateway, HTTP/JSON): after
# its request timeout "no leader"; while it shuts down, a stream closed under the request.
NO_QUORUM_ANSWERS = {
    "no-leader": {"status": 503, "body": {"error": {"code": 14, "message": "etcdserver: no leader"}}},
    "stream-closed": {"status": 500,
                      "body": {"error": {"code": 13, "message": "server closed the stream without sending trailers"}}},
}


def probe(engine: docker.DockerClient, image: str, answer: dict[str, Any]) -> dict[str, str]:
    """Patroni's update_leader in `image` against a stub etcd giving `answer`: its outcome."""
    out = engine.containers.run(image, ["-c", PROBE.read_text(), json.dumps(answer)], entrypoint=["python3"],
                                network_mode="none", remove=True, stderr=False,
                                labels={"pgha.cluster": SCOPE, "pgha.role": "probe"})
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


@pytest.mark.parametrize("answer", sorted(NO_QUORUM_ANSWERS))
@pytest.mark.parametrize("postgres_version", [15, 17])
def test_patroni_takes_an_etcd_without_quorum_for_an_unreachable_dcs(
        engine: docker.DockerClient, base_env: dict[str, str], postgres_version: int, answer: str) -> None:
    image, _ = images.ensure_image(parse_spec({"scope": SCOPE, "postgres_version": postgres_version}))
    r = probe(engine, image, NO_QUORUM_ANSWERS[answer])
    assert r["outcome"] == "dcs unreachable", f"Patroni {r['patroni']} in {image}: {r['outcome']}"


def test_an_answer_that_decides_still_loses_the_lock(engine: docker.DockerClient, base_env: dict[str, str]) -> None:
    """The patch is narrow: an etcd that says the lease is gone still costs the lock (Patroni's own rule)."""
    image, _ = images.ensure_image(parse_spec({"scope": SCOPE}))
    r = probe(engine, image, {"status": 404, "body": {"error": "etcdserver: requested lease not found", "code": 5}})
    assert r["outcome"] == "lock lost", r


@pytest.fixture(scope="module")
def cluster_fs(engine: docker.DockerClient, base_env: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    spec = {"scope": SCOPE, "nodes": 2, "etcd_members": 3, "failsafe_mode": True, "fencing": False,
            "backup": {"enabled": False}, "ports": {"rw": 29500, "ro": 29501, "stats": 29502}}
    try:
        with running_cluster(engine, base_env, tmp_path_factory.mktemp("fs"), spec) as c:
            yield c
    finally:
        remove_scope(engine, SCOPE)


def status(c: Cluster) -> tuple[int, dict[str, Any]]:
    res = pgha(c.env, "status", "--json", "--scope", c.scope)
    return res.returncode, json.loads(res.stdout)


def wait_healthy(c: Cluster, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (st := status(c))[0] != 0:
        assert time.monotonic() < deadline, f"cluster not healthy after {timeout:.0f} s: {st[1].get('problems')}"
        time.sleep(1)
    return st[1]


def leaders(st: dict[str, Any]) -> list[str]:
    return [m["member"] for m in st["members"] if m["role"] == "patroni" and m["pg_role"] == "leader"]


def etcd_member_of(engine: docker.DockerClient, c: Cluster, node: str) -> str:
    """The etcd member `node`'s Patroni talks to: the one it holds the most client connections to
    (its requests and its watch go to one member; another may hold one left from start-up)."""
    by_ip: dict[str, str] = {}
    for m in ("etcd-1", "etcd-2", "etcd-3"):
        nets = engine.containers.get(c.container(m)).attrs["NetworkSettings"]["Networks"]
        by_ip.update({n["IPAddress"]: m for n in nets.values() if n.get("IPAddress")})
    tcp = engine.containers.get(c.container(node)).exec_run(["cat", "/proc/net/tcp"]).output.decode()
    counts: dict[str, int] = {}
    for line in tcp.splitlines()[1:]:
        f = line.split()
        ip_hex, port_hex = f[2].split(":")
        if f[3] == "01" and int(port_hex, 16) == 2379:  # ESTABLISHED, to etcd's client port
            ip = ".".join(str(int(ip_hex[i:i + 2], 16)) for i in (6, 4, 2, 0))
            if ip in by_ip:
                counts[by_ip[ip]] = counts.get(by_ip[ip], 0) + 1
    assert counts, f"{node} holds no connection to etcd: {tcp[:500]}"
    return max(sorted(counts), key=lambda m: counts[m])


def failsafe_row(spec: ClusterSpec) -> Finding:
    """The audit's `patroni.failsafe_active` row, gathered and judged as `pgha audit` does (its own
    task and check, run here in-process: no Prefect API to start on a busy machine mid-outage)."""
    fs, err = gather_failsafe.fn(spec)
    rows = audit.check_failsafe(fs[0] if fs else None, fs[1] if fs else [], spec, err)
    return next(f for f in rows if f.check == "patroni.failsafe_active")


def test_quorum_loss_with_patronis_member_surviving_keeps_writing(cluster_fs: Cluster,
                                                                   engine: docker.DockerClient) -> None:
    st = wait_healthy(cluster_fs)
    (leader,) = leaders(st)
    survivor = etcd_member_of(engine, cluster_fs, leader)
    stopped = [m for m in ("etcd-1", "etcd-2", "etcd-3") if m != survivor]
    spec = parse_spec(cluster_fs.spec)
    secrets = load_or_create(Path(cluster_fs.env["PGHA_STATE_DIR"]) / cluster_fs.scope / "secrets.json", env={})
    rows: list[Finding] = []
    with measured(spec, secrets) as traffic:
        t0 = time.monotonic()
        for m in stopped:  # as `pgha drill etcd-quorum-loss` does: one after the other
            engine.containers.get(cluster_fs.container(m)).stop(timeout=10)
        while time.monotonic() - t0 < OUTAGE_S:
            rows.append(failsafe_row(spec))
            time.sleep(2)
        for m in stopped:
            engine.containers.get(cluster_fs.container(m)).start()
        after = wait_healthy(cluster_fs)
    print(f"\nfailsafe: {leader}'s etcd member {survivor} left alone for {OUTAGE_S:.0f} s: write gap "
          f"{traffic.write_gap_s} s, {traffic.writes_acked} writes acknowledged, {len(traffic.lost)} lost")
    assert traffic.lost == [], traffic.lost[:10]
    assert traffic.write_gap_s < WRITE_GAP_CEILING_S, (
        f"writes stopped {traffic.write_gap_s} s with {leader}'s etcd member {survivor} up without quorum")
    assert leaders(after) == [leader], after["members"]
    assert any(r.status == Level.WARN and leader in r.observed for r in rows), [r.observed for r in rows]
