"""etcd least privilege and the fencer's socket proxy: one 1-etcd / 2-node cluster (pooler on, backups
off) shared by every test here.

From inside each kind of container, with the credentials that container holds, a probe tries to
write the cluster's configuration key and delete its leader key. It sends both in one etcd
transaction whose comparison is false (the config key's version is never 0), so etcd checks the
permissions of both operations and applies neither: 200 means allowed, 403 refused, and nothing
changes either way. Only the Patroni nodes (etcd's `patroni` user) and pgha (its client
certificate, held by the etcd members where pgha runs etcdctl) are allowed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import Cluster, pgha, running_cluster

SCOPE = "pgha-it-er-rbac"
SPEC = {"scope": SCOPE, "nodes": 2, "etcd_members": 1, "fencing": True, "pooler": {"enabled": True},
        "ports": {"rw": 29200, "ro": 29201, "stats": 29202, "pool": 29203},
        "backup": {"enabled": False}}
CONFIG_KEY = f"/service/{SCOPE}/config"
LEADER_KEY = f"/service/{SCOPE}/leader"

# Run with python3 inside a container (pgha's image everywhere); prints one JSON line. Reads only
# files the container holds, as root, from /etc/pgha (the mounted copies).
PROBE = r"""
import base64, json, ssl, sys, urllib.error, urllib.request
a = json.loads(sys.argv[1])
b64 = lambda s: base64.b64encode(s.encode()).decode()
ctx = ssl.create_default_context(cafile="/etc/pgha/tls/ca.crt")
if a.get("cert"):
    ctx.load_cert_chain(a["cert"], a["key"])
def call(path, body, token=None):
    h = {"Content-Type": "application/json", **({"Authorization": token} if token else {})}
    req = urllib.request.Request(a["url"] + path, data=json.dumps(body).encode(), headers=h)
    try:
        r = urllib.request.urlopen(req, context=ctx, timeout=5)
        return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")[:200]
    except Exception as e:
        return 0, type(e).__name__ + ": " + str(e)[:200]
out, token = {}, None
if a.get("user"):
    if a["password_from"].endswith(".yml"):
        import yaml
        pw = yaml.safe_load(open(a["password_from"]))["etcd3"]["password"]
    else:
        pw = open(a["password_from"]).read().strip()
    out["auth"], reply = call("/v3/auth/authenticate", {"name": a["user"], "password": pw})
    token = reply.get("token") if isinstance(reply, dict) else None
txn = {"compare": [{"target": "VERSION", "key": b64(a["config"]), "result": "EQUAL", "version": "0"}],
       "success": [{"request_put": {"key": b64(a["config"]), "value": b64("archive_command: evil")}},
                   {"request_delete_range": {"key": b64(a["leader"])}}],
       "failure": []}
out["txn"], reply = call("/v3/kv/txn", txn, token)
out["detail"] = reply if not isinstance(reply, dict) else {"succeeded": bool(reply.get("succeeded"))}
out["other_scope"], _ = call("/v3/kv/put", {"key": b64("/service/another-scope/config"), "value": b64("x")}, token)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def cluster(engine: docker.DockerClient, base_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("rbac"), SPEC) as c:
        yield c


def run(engine: docker.DockerClient, c: Cluster, member: str, cmd: list[str], user: str = "root") -> tuple[int, str]:
    r = engine.containers.get(c.container(member)).exec_run(cmd, user=user, demux=True)
    out, err = r.output
    return r.exit_code, (out or b"").decode(errors="replace") + (err or b"").decode(errors="replace")


def probe(engine: docker.DockerClient, c: Cluster, member: str, **creds: str) -> dict[str, object]:
    args = {"url": f"https://{c.container('etcd-1')}:2379", "config": CONFIG_KEY, "leader": LEADER_KEY, **creds}
    code, out = run(engine, c, member, ["python3", "-c", PROBE, json.dumps(args)])
    assert code == 0, out
    return dict(json.loads(out.strip().splitlines()[-1]))


def tls_files(engine: docker.DockerClient, c: Cluster, member: str) -> set[str]:
    code, out = run(engine, c, member, ["ls", "/etc/pgha/tls"])
    assert code == 0, out
    return set(out.split())


def test_each_role_holds_only_the_keys_it_uses(engine: docker.DockerClient, cluster: Cluster) -> None:
    assert tls_files(engine, cluster, "haproxy") == {"ca.crt"}
    assert tls_files(engine, cluster, "pooler") == {"ca.crt", "pooler.crt", "pooler.key"}  # its clients' TLS
    assert tls_files(engine, cluster, "fencer") == {"ca.crt", "gateway.crt", "gateway.key"}
    for m in ("pg-1", "pg-2"):
        assert tls_files(engine, cluster, m) == {"ca.crt", "member.crt", "member.key", "gateway.crt", "gateway.key"}
    assert tls_files(engine, cluster, "etcd-1") == {"ca.crt", "member.crt", "member.key", "client.crt", "client.key",
                                                    "peer.crt", "peer.key"}
    code, out = run(engine, cluster, "etcd-1", ["ls", "/etc/pgha"])
    assert "etcd-auth" not in out or run(engine, cluster, "etcd-1", ["ls", "/etc/pgha/etcd-auth"])[1].strip() == ""


# Run with python3 in a container: a TLS handshake with etcd's peer port (2380) presenting a client
# certificate, then GET /version; prints the HTTP status, or the handshake's error.
PEER_PROBE = r"""
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile="/etc/pgha/tls/ca.crt")
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
try:
    print(urllib.request.urlopen(sys.argv[1] + "/version", context=ctx, timeout=5).status)
except Exception as e:
    print("refused:", type(e).__name__, str(e)[:160])
"""


def test_only_etcd_members_can_talk_to_etcd_as_a_peer(engine: docker.DockerClient, cluster: Cluster) -> None:
    """etcd's peer port accepts only etcd's own peer certificate: a Patroni node presenting the member
    certificate it holds (same CA) is refused in the handshake, an etcd member presenting its peer
    certificate is served."""
    url = f"https://{cluster.container('etcd-1')}:2380"
    code, out = run(engine, cluster, "pg-1", ["python3", "-c", PEER_PROBE, url, "/etc/pgha/tls/member.crt",
                                              "/etc/pgha/tls/member.key"])
    assert code == 0 and out.startswith("refused:"), out
    code, out = run(engine, cluster, "etcd-1", ["python3", "-c", PEER_PROBE, url, "/etc/pgha/tls/peer.crt",
                                                "/etc/pgha/tls/peer.key"])
    assert code == 0 and out.strip() == "200", out


def test_only_patroni_and_pgha_may_write_the_clusters_keys(engine: docker.DockerClient, cluster: Cluster) -> None:
    # HAProxy and the pooler: no client certificate at all, so etcd refuses them in the handshake.
    for m in ("haproxy", "pooler"):
        r = probe(engine, cluster, m)
        assert r["txn"] == 0 and r["other_scope"] == 0, (m, r)
    # The pooler's own certificate (its clients' TLS) is for server auth only: etcd refuses it.
    code, out = run(engine, cluster, "pooler", [
        "etcdctl", f"--endpoints=https://{cluster.container('etcd-1')}:2379", "--cacert=/etc/pgha/tls/ca.crt",
        "--cert=/etc/pgha/tls/pooler.crt", "--key=/etc/pgha/tls/pooler.key", "--command-timeout=5s",
        "put", CONFIG_KEY, "x"])
    assert code != 0 and "executable file not found" not in out, out
    # The fencer: the gateway certificate and etcd's `fencer` user (the leader key alone, for its
    # compare-and-delete): the config key is refused, and so is any key outside its grant.
    fencer = probe(engine, cluster, "fencer", cert="/etc/pgha/tls/gateway.crt", key="/etc/pgha/tls/gateway.key",
                   user="fencer", password_from="/etc/pgha/etcd-password")
    assert fencer["auth"] == 200 and fencer["txn"] == 403 and fencer["other_scope"] == 403, fencer
    # The gateway certificate has no common name: over gRPC (etcdctl) it is no user at all.
    code, out = run(engine, cluster, "fencer", [
        "etcdctl", f"--endpoints=https://{cluster.container('etcd-1')}:2379", "--cacert=/etc/pgha/tls/ca.crt",
        "--cert=/etc/pgha/tls/gateway.crt", "--key=/etc/pgha/tls/gateway.key", "--command-timeout=5s",
        "put", CONFIG_KEY, "x"])
    assert code != 0 and ("permission denied" in out or "user name" in out), out
    # A Patroni node: its member certificate and etcd's `patroni` user: allowed (the probe's
    # transaction applies nothing), but only under its own scope's prefix.
    for m in ("pg-1", "pg-2"):
        node = probe(engine, cluster, m, cert="/etc/pgha/tls/gateway.crt", key="/etc/pgha/tls/gateway.key",
                     user="patroni", password_from="/etc/pgha/patroni.yml")
        assert node["auth"] == 200 and node["txn"] == 200 and node["detail"] == {"succeeded": False}, node
        assert node["other_scope"] == 403, node
        # Without the password, its member certificate alone (gRPC) grants nothing.
        code, out = run(engine, cluster, m, [
            "etcdctl", f"--endpoints=https://{cluster.container('etcd-1')}:2379", "--cacert=/etc/pgha/tls/ca.crt",
            "--cert=/etc/pgha/tls/member.crt", "--key=/etc/pgha/tls/member.key", "--command-timeout=5s",
            "put", CONFIG_KEY, "x"])
        assert code != 0 and ("permission denied" in out or "user name" in out), out
    # pgha (its client certificate, in the etcd member, over gRPC): the root role.
    etcdctl = ["etcdctl", "--endpoints=https://localhost:2379", "--cacert=/etc/pgha/tls/ca.crt",
               "--cert=/etc/pgha/tls/client.crt", "--key=/etc/pgha/tls/client.key", "--command-timeout=5s"]
    code, out = run(engine, cluster, "etcd-1", [*etcdctl, "put", f"/service/{SCOPE}/rbac-probe", "x"])
    assert code == 0, out
    code, out = run(engine, cluster, "etcd-1", [*etcdctl, "del", f"/service/{SCOPE}/rbac-probe"])
    assert code == 0, out
    # Auth is on: without a user, nothing is readable.
    code, out = run(engine, cluster, "etcd-1", [*etcdctl[:3], "--cert=/etc/pgha/tls/member.crt",
                                                "--key=/etc/pgha/tls/member.key", "--command-timeout=5s",
                                                "get", CONFIG_KEY])
    assert code != 0, out


def test_fencers_proxy_runs_without_root_and_refuses_other_containers(engine: docker.DockerClient,
                                                                       cluster: Cluster) -> None:
    # The proxy's process: haproxy's user, not root.
    code, out = run(engine, cluster, "fencer", ["sh", "-c", "for p in /proc/[0-9]*; do "
                                                "[ \"$(cat $p/comm 2>/dev/null)\" = haproxy ] && grep ^Uid: $p/status; "
                                                "done"])
    uids = {line.split()[1] for line in out.splitlines() if line.startswith("Uid:")}
    assert uids and "0" not in uids, out
    get = ("import sys, urllib.request, urllib.error\n"
           "try:\n    print(urllib.request.urlopen('http://127.0.0.1:2375' + sys.argv[1], timeout=5).status)\n"
           "except urllib.error.HTTPError as e:\n    print(e.code)\n")

    def status(path: str) -> str:
        code, out = run(engine, cluster, "fencer", ["python3", "-c", get, path], user="nobody")
        return out.strip().splitlines()[-1]

    assert status(f"/containers/{cluster.container('pg-1')}/json") == "200"
    for other in (cluster.container("etcd-1"), cluster.container("haproxy"), "pgha-it-er-outside"):
        assert status(f"/containers/{other}/json") == "403", other
    assert status("/containers/json") == "403"
    assert status("/events") == "403"  # only the agent's own filter (this cluster's nodes) passes


def test_cluster_healthy_and_switchover_works_with_auth_on(cluster: Cluster) -> None:
    res = pgha(cluster.env, "switchover", "--scope", SCOPE, "--json")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    res = pgha(cluster.env, "status", "--scope", SCOPE, "--json")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    roles = [m["pg_role"] for m in json.loads(res.stdout)["members"] if m["role"] == "patroni"]
    assert len(roles) == 2 and any(r in ("primary", "leader") for r in roles), res.stdout[-2000:]


def test_audit_reports_etcd_auth_and_what_a_cluster_without_it_should_do(engine: docker.DockerClient,
                                                                         cluster: Cluster) -> None:
    """The `etcd.leader_key` row reads Patroni's real keys and leases (ok).
    The `etcd.auth` row from a real `etcdctl auth status`: ok with auth on; a warning with the
    rebuild to do when it is off and pgha never switched it on (the marker absent: a cluster made
    before etcd authentication). State put back in `finally`."""
    etcdctl = ["etcdctl", "--endpoints=https://localhost:2379", "--cacert=/etc/pgha/tls/ca.crt",
               "--cert=/etc/pgha/tls/client.crt", "--key=/etc/pgha/tls/client.key", "--command-timeout=5s"]
    marker = Path(cluster.env["PGHA_STATE_DIR"]) / SCOPE / "etcd-auth-on"

    def row(check: str = "etcd.auth") -> dict[str, str]:
        res = pgha(cluster.env, "audit", "--scope", SCOPE, "--json")
        rows = [f for f in json.loads(res.stdout)["findings"] if f["check"] in (check, "etcd.leader_key")]
        assert len(rows) == 2, res.stdout[-2000:] + res.stderr[-2000:]
        # The leader key as Patroni wrote it: its lease is its holder's session (a fencer's write could not be).
        key = next(f for f in rows if f["check"] == "etcd.leader_key")
        assert key["status"] == "ok" and key["observed"].startswith("pg-"), key
        return dict(next(f for f in rows if f["check"] == check))

    assert marker.exists()
    ok = row()
    assert ok["status"] == "ok" and ok["observed"] == "on", ok
    hidden = marker.with_name("etcd-auth-on.hidden")
    try:
        code, out = run(engine, cluster, "etcd-1", [*etcdctl, "auth", "disable"])
        assert code == 0, out
        marker.rename(hidden)  # (off with the marker present is critical instead: tests/unit)
        legacy = row()
        assert legacy["status"] == "warn" and "made before etcd authentication" in legacy["observed"], legacy
        assert "pgha restore --into NEW-SCOPE" in legacy["hint"], legacy
    finally:
        if hidden.exists():
            hidden.rename(marker)
        code, out = run(engine, cluster, "etcd-1", [*etcdctl, "auth", "enable"])
        assert code == 0, out


# Run with python3 in the fencer's container, with its credentials. "txn": a transaction whose
# comparison is false (the leader key's version is never 0) holding one put of the leader key, with
# or without a lease: etcd checks its permissions and applies nothing. "put": a plain put of the
# leader key with its current value and lease (no change even if allowed). Prints the HTTP status
# (200 allowed, 403 refused).
FENCER_PUT = r"""
import base64, json, ssl, sys, urllib.error, urllib.request
url, key, lease, value, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
b64 = lambda s: base64.b64encode(s.encode()).decode()
ctx = ssl.create_default_context(cafile="/etc/pgha/tls/ca.crt")
ctx.load_cert_chain("/etc/pgha/tls/gateway.crt", "/etc/pgha/tls/gateway.key")
def call(path, body, token=None):
    h = {"Content-Type": "application/json", **({"Authorization": token} if token else {})}
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers=h)
    try:
        r = urllib.request.urlopen(req, context=ctx, timeout=5)
        return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
pw = open("/etc/pgha/etcd-password").read().strip()
token = json.loads(call("/v3/auth/authenticate", {"name": "fencer", "password": pw})[1])["token"]
put = {"key": b64(key), "value": b64(value), **({"lease": str(lease)} if lease else {})}
if mode == "put":
    print(call("/v3/kv/put", put, token)[0])
else:
    txn = {"compare": [{"target": "VERSION", "key": b64(key), "result": "EQUAL", "version": "0"}],
           "success": [{"request_put": put}], "failure": []}
    print(call("/v3/kv/txn", txn, token)[0])
"""


def test_what_the_fencer_may_still_write(engine: docker.DockerClient, cluster: Cluster) -> None:
    """What remains of the fencer's write (etcd has no delete-only permission), pinned so the docs
    stay true: a plain put attaching the leader's session (lease) is refused (etcd checks the
    lease's other keys: the leader's member key), but inside a transaction it may put the leader
    key without a lease and with that session alike. The audit's `etcd.leader_key` row therefore
    catches a rewrite that does not carry the named member's session, not one that does
    (docs/threat-model.md)."""
    etcdctl = ["etcdctl", "--endpoints=https://localhost:2379", "--cacert=/etc/pgha/tls/ca.crt",
               "--cert=/etc/pgha/tls/client.crt", "--key=/etc/pgha/tls/client.key", "--command-timeout=5s"]
    code, out = run(engine, cluster, "etcd-1", [*etcdctl, "get", LEADER_KEY, "-w", "json"])
    assert code == 0, out
    kv = json.loads(out)["kvs"][0]
    lease, holder = int(kv["lease"]), base64.b64decode(kv["value"]).decode()
    url = f"https://{cluster.container('etcd-1')}:2379"
    for with_lease, mode, expected in ((lease, "put", "403"), (0, "txn", "200"), (lease, "txn", "200")):
        code, out = run(engine, cluster, "fencer", ["python3", "-c", FENCER_PUT, url, LEADER_KEY, str(with_lease),
                                                    holder, mode])
        assert code == 0 and out.strip().splitlines()[-1] == expected, (with_lease, mode, out)
