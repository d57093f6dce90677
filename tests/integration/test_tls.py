"""TLS and authentication (hardening issue): one 2-node / 1-etcd cluster shared by the read-only
checks; the rotation runs last.

Real parts only: a scratch container on the cluster's network plays the stranger that reaches
etcd and Patroni without a certificate or credentials; psycopg and the host's psql play the
clients; `pgha certs rotate` runs under the drill's write probe.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import psycopg
import pytest

from stack import metrics as M
from stack.fencing import Counters
from stack.secrets import Secrets
from stack.spec import parse_spec
from tasks.docker_engine import Engine
from tasks.host.secrets import load_or_create
from tasks.node_exec import NodeExec
from tests.integration.conftest import Cluster, pgha, running_cluster
from tests.support import prometheus
from tests.support.traffic import measured

SCOPE = "pgha-it-tls"
# pgha's exporter rides along (metrics.enabled): its scrape test needs a live cluster, and this one's
# TLS is the case worth scraping (https to every node, the certificates' expiry).
SPEC = {"scope": SCOPE, "nodes": 2, "etcd_members": 1,
        "ports": {"rw": 26632, "ro": 26633, "stats": 26604, "metrics": 23100},
        "backup": {"enabled": False}, "pooler": {"enabled": False}, "metrics": {"enabled": True, "interval_s": 2}}
PROMETHEUS_PORT = 23101


@pytest.fixture(scope="module")
def cluster(engine: docker.DockerClient, base_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("tls"), SPEC) as c:
        yield c


def state(c: Cluster) -> Path:
    return Path(c.env["PGHA_STATE_DIR"]) / c.scope


@pytest.fixture(scope="module")
def stranger(engine: docker.DockerClient, cluster: Cluster) -> Iterator[NodeExec]:
    """A scratch container on the cluster network, pgha's image, no certificate and no password."""
    eng = Engine()
    name = f"{SCOPE}-stranger"
    image = engine.containers.get(cluster.container("pg-1")).attrs["Config"]["Image"]
    eng.run_scratch(name, image, SCOPE, "stranger", f"{SCOPE}-net", [])
    try:
        yield NodeExec(eng, name)
    finally:
        eng.remove_container(name)


def test_etcd_refuses_a_client_without_a_certificate(engine: docker.DockerClient, cluster: Cluster,
                                                     stranger: NodeExec) -> None:
    host = f"https://{cluster.container('etcd-1')}:2379"
    since = int(time.time()) - 1
    ca = (state(cluster) / "tls" / "ca.crt").read_text()
    stranger.put_file("/tmp/ca.crt", ca, 0o644)
    # No client certificate (the server is verified with the CA): refused in the TLS handshake.
    r = stranger.run(["etcdctl", f"--endpoints={host}", "--cacert=/tmp/ca.crt", "--command-timeout=3s",
                      "get", "/service", "--prefix", "--keys-only"], user="root", timeout=15)
    assert not r.ok, r.out + r.err
    # etcd says why: the TLS handshake lacked a client certificate.
    logs = engine.containers.get(cluster.container("etcd-1")).logs(since=since).decode(errors="replace")
    assert "rejected connection" in logs and "certificate" in logs, logs[-1500:]
    # Plain HTTP: nothing answers.
    r = stranger.run(["etcdctl", f"--endpoints=http://{cluster.container('etcd-1')}:2379", "--command-timeout=3s",
                      "put", "/service/x", "y"], user="root", timeout=15)
    assert not r.ok
    # The control: with pgha's client certificate the same call works (the refusal was the certificate).
    for f in ("client.crt", "client.key"):
        stranger.put_file(f"/tmp/{f}", (state(cluster) / "tls" / f).read_text(), 0o600)
    r = stranger.run(["etcdctl", f"--endpoints={host}", "--cacert=/tmp/ca.crt", "--cert=/tmp/client.crt",
                      "--key=/tmp/client.key", "--command-timeout=3s", "endpoint", "health"], user="root", timeout=15)
    assert r.ok and "is healthy" in r.out + r.err, r.out + r.err
    stranger.run(["rm", "-f", "/tmp/client.crt", "/tmp/client.key"], user="root")


def test_patroni_unsafe_endpoint_needs_credentials_and_tls(cluster: Cluster, stranger: NodeExec) -> None:
    api = f"{cluster.container('pg-1')}:8008"
    stranger.put_file("/tmp/ca.crt", (state(cluster) / "tls" / "ca.crt").read_text(), 0o644)

    def curl(*args: str) -> str:
        r = stranger.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", *args],
                         user="root", timeout=15)
        return r.out.strip()

    assert curl("--cacert", "/tmp/ca.crt", f"https://{api}/health") == "200"  # reads stay open (HAProxy checks)
    # No credentials, no client certificate: refused, nothing restarted.
    code = curl("--cacert", "/tmp/ca.crt", "-X", "POST", f"https://{api}/restart")
    assert code in ("401", "403"), code
    # With the password but no client certificate: still refused.
    cred = cluster.secrets["restapi"]
    stranger.put_file("/tmp/auth", f'user = "patroni:{cred}"\n', 0o600)
    code = curl("--cacert", "/tmp/ca.crt", "-K", "/tmp/auth", "-X", "POST", f"https://{api}/restart")
    assert code in ("401", "403"), code
    stranger.run(["rm", "-f", "/tmp/auth"], user="root")
    # Plain HTTP: the API speaks TLS only (curl gets no HTTP answer).
    assert curl(f"http://{api}/health") in ("000", "400")


def test_postgres_refuses_plain_tcp_and_dsn_verifies(cluster: Cluster) -> None:
    pw = cluster.secrets["superuser"]
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(host="127.0.0.1", port=cluster.port("rw"), user="postgres", password=pw,
                        dbname="postgres", sslmode="disable", connect_timeout=5)
    res = pgha(cluster.env, "dsn", "--scope", SCOPE)
    assert res.returncode == 0, res.stdout + res.stderr
    uri = res.stdout.strip()
    assert "sslmode=verify-full" in uri and f"sslrootcert={state(cluster)}/tls/ca.crt" in uri and pw not in uri
    with psycopg.connect(uri, password=pw, connect_timeout=5) as conn:
        row = conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone()
        assert row == (True,)
        # replication between the nodes is TLS too
        rows = conn.execute("select s.ssl from pg_stat_replication r join pg_stat_ssl s using (pid)").fetchall()
        assert rows and all(r[0] for r in rows)


def test_pgpass_file_is_private_and_works(cluster: Cluster) -> None:
    res = pgha(cluster.env, "dsn", "--pgpass", "--ro", "--scope", SCOPE)
    assert res.returncode == 0, res.stdout + res.stderr
    uri = res.stdout.strip()
    pgpass = state(cluster) / "pgpass"
    assert cluster.secrets["superuser"] not in uri and f"passfile={pgpass}" in uri
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    psql = shutil.which("psql")
    assert psql, "this test needs psql on the host (Debian: postgresql-client)"
    out = subprocess.run([psql, uri, "-XAtc", "select pg_is_in_recovery()"], capture_output=True, text=True,
                         timeout=20, env={"PATH": "/usr/bin:/bin"}, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "t", out.stderr
    res = pgha(cluster.env, "dsn", "--pgpass", "--show-password", "--scope", SCOPE)
    assert res.returncode != 0 and res.stdout == "" and len(res.stderr.strip().splitlines()) == 1


def test_audit_reports_certificate_expiry(cluster: Cluster) -> None:
    res = pgha(cluster.env, "audit", "--json", "--scope", SCOPE, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    rows = {r["check"]: r for r in json.loads(res.stdout)["findings"]}
    assert rows["tls.cert_expiry"]["status"] == "ok" and "member.crt expires" in rows["tls.cert_expiry"]["observed"]
    # Patroni, HAProxy and the fencer all reach their peers over TLS.
    assert rows["fencing.watcher"]["status"] == "ok" and rows["haproxy.primary_backend"]["status"] == "ok"
    # The audit's sample, beside the exporter's files (metrics.enabled), for it to serve.
    sample = M.audit_from_json((state(cluster) / "config" / "metrics" / "audit.json").read_text())
    assert sample is not None and ("tls.cert_expiry", SCOPE, "ok") in {(c.check, c.target, c.status)
                                                                      for c in sample.checks}
    assert {f.member for f in sample.fencers} == {"fencer"}


def test_prometheus_scrapes_the_exporter(engine: docker.DockerClient, cluster: Cluster, tmp_path: Path) -> None:
    """A real Prometheus scrapes pgha's exporter and HAProxy's own /metrics, with the shipped rules
    loaded: both members up, one leader, the certificates' expiry, the audit's rows, no alert."""
    ct = engine.containers.get(cluster.container("metrics"))
    cfg, host = ct.attrs["Config"], ct.attrs["HostConfig"]
    assert host["RestartPolicy"]["Name"] == "unless-stopped" and host["ReadonlyRootfs"] and not host["CapAdd"]
    assert host["LogConfig"]["Config"].get("max-size") and cfg["Labels"]["pgha.role"] == "metrics"
    secrets = [v for v in cluster.secrets.values() if isinstance(v, str) and len(v) >= 8]
    shown = json.dumps([cfg.get("Env"), cfg.get("Cmd"), cfg.get("Entrypoint"), cfg.get("Labels")])
    assert not [s for s in secrets if s in shown]
    assert host["PortBindings"] == {"9188/tcp": [{"HostIp": "127.0.0.1", "HostPort": "23100"}]}

    # What `pgha audit` writes there (test_audit_reports_certificate_expiry checks that it does).
    audit = M.audit_sample(time.time(), [("tls.cert_expiry", SCOPE, "ok")], fencers={"fencer": Counters(events=3)})
    (state(cluster) / "config" / "metrics" / "audit.json").write_text(M.audit_to_json(audit))
    rules = Path(__file__).resolve().parents[2] / "deployments" / "prometheus" / "pgha-rules.yml"
    targets = {"pgha": ["127.0.0.1:23100"], "haproxy": [f"127.0.0.1:{cluster.port('stats')}"]}
    with prometheus.running(PROMETHEUS_PORT, tmp_path / "prometheus", targets, [rules]) as prom:
        up = prom.wait("Prometheus to see both members up",
                       lambda: {r["metric"]["member"] for r in prom.query("pgha_member_up == 1")} == {"pg-1", "pg-2"})
        assert up
        assert len(prom.query('pgha_member_role{role="leader"} == 1')) == 1
        assert len(prom.query('pgha_member_role{role=~"sync_standby|replica"} == 1')) == 1
        certs = prom.query("pgha_certificate_expiry_seconds > 86400")
        assert {r["metric"]["member"] for r in certs} == {"pg-1", "pg-2"}
        assert prom.query('pgha_check_status{check="tls.cert_expiry"} == 0')
        assert prom.query('pgha_fencer_events_total{fencer="fencer"} == 3')
        assert prom.query('pgha_snapshot_age_seconds{source="live"} < 10')
        prom.wait("HAProxy's own /metrics scraped", lambda: prom.query('up{job="haproxy"} == 1'))
        assert prom.query('haproxy_process_uptime_seconds')  # HAProxy's exporter, not pgha's
        groups = prom.get("/api/v1/rules")["data"]["groups"]
        assert groups and groups[0]["name"] == "pgha" and len(groups[0]["rules"]) >= 10
        firing = [a["labels"]["alertname"] for a in prom.get("/api/v1/alerts")["data"]["alerts"]]
        assert not [a for a in firing if a in ("PghaNoLeader", "PghaMemberDown", "PghaExporterDown")], firing


def test_certs_rotate_refuses_an_unknown_cluster(cluster: Cluster) -> None:
    res = pgha(cluster.env, "certs", "rotate", "--scope", "pgha-it-tls-nothing")
    assert res.returncode != 0 and "Traceback" not in res.stdout + res.stderr
    assert len((res.stdout + res.stderr).strip().splitlines()) == 1


def test_up_refuses_to_switch_a_running_cluster_to_plain(engine: docker.DockerClient, cluster: Cluster,
                                                          tmp_path: Path) -> None:
    before = {ct.name: ct.id for ct in engine.containers.list(filters={"label": f"pgha.cluster={SCOPE}"})}
    plain = tmp_path / "plain.yaml"
    plain.write_text(json.dumps({**SPEC, "tls": {"enabled": False}}))
    res = pgha(cluster.env, "up", "--spec", str(plain))
    assert res.returncode != 0 and "runs with TLS" in res.stderr and len(res.stderr.strip().splitlines()) == 1, \
        res.stdout[-1500:] + res.stderr[-1500:]
    after = {ct.name: ct.id for ct in engine.containers.list(filters={"label": f"pgha.cluster={SCOPE}"})}
    assert after == before  # nothing recreated


def served_pg_serial(c: Cluster, member: str) -> str:
    r = subprocess.run(["docker", "exec", c.container(member), "sh", "-c",
                        "openssl s_client -starttls postgres -connect localhost:5432 </dev/null 2>/dev/null "
                        "| openssl x509 -noout -serial"], capture_output=True, text=True, timeout=20, check=False)
    return r.stdout.strip()


@pytest.mark.timing_sensitive
def test_z_certs_rotate_under_the_write_probe_loses_nothing(cluster: Cluster) -> None:
    """Last: it changes the certificates every other test reads."""
    spec = parse_spec(cluster.spec)
    secrets: Secrets = load_or_create(state(cluster) / "secrets.json")
    before = {m: served_pg_serial(cluster, m) for m in ("pg-1", "pg-2")}
    leader_before = json.loads(pgha(cluster.env, "status", "--json", "--scope", SCOPE).stdout)
    with measured(spec, secrets) as traffic:
        res = pgha(cluster.env, "certs", "rotate", "--json", "--scope", SCOPE, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["restarts"] == 0 and out["switchovers"] == 0 and out["endpoints"] == 5
    after = {m: served_pg_serial(cluster, m) for m in ("pg-1", "pg-2")}
    assert all(after[m].startswith("serial=") and after[m] != before[m] for m in after), (before, after)
    assert traffic.lost == [] and traffic.writes_acked > 0
    assert traffic.write_gap_s < 5, traffic  # reloads only: no switchover, a generous ceiling
    leader_after = json.loads(pgha(cluster.env, "status", "--json", "--scope", SCOPE).stdout)
    lead = [[m["member"] for m in s["members"] if m["pg_role"] == "leader"] for s in (leader_before, leader_after)]
    assert lead[0] == lead[1]


def test_zz_certs_renew_a_leaf_that_expires_in_two_days(cluster: Cluster, tmp_path: Path) -> None:
    """What the daily `certs-renew` deployment runs: nothing while the leaves are far from expiry;
    a rotation (reloads only) once fewer than tls.renew_within_days remain. Last: it changes the
    certificates every other test reads."""
    import yaml

    short = tmp_path / "two-days.yaml"
    short.write_text(yaml.safe_dump({**cluster.spec, "tls": {"days": 2, "expiry_warn_days": 1,
                                                               "renew_within_days": 2}}))
    res = pgha(cluster.env, "certs", "rotate", "--json", "--spec", str(short), timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert json.loads(res.stdout)["new_not_after"] < time.strftime("%Y-%m-%d", time.gmtime(time.time() + 3 * 86400))
    audit = json.loads(pgha(cluster.env, "audit", "--json", "--scope", SCOPE, timeout=300).stdout)
    row = next(f for f in audit["findings"] if f["check"] == "tls.cert_expiry")
    assert row["status"] == "warn" and "pgha certs renew" in row["hint"] and "runbooks.md#tls-cert-expiry" in row["hint"]
    assert next(f for f in audit["findings"] if f["check"] == "tls.ca_expiry")["status"] == "ok"

    not_yet = pgha(cluster.env, "certs", "renew", "--within-days", "1", "--json", "--scope", SCOPE, timeout=300)
    assert not_yet.returncode == 0, not_yet.stderr[-2000:]
    out = json.loads(not_yet.stdout)
    assert out["renewed"] is False and "nothing to do" in out["detail"] and out["rotation"] is None

    before = {m: served_pg_serial(cluster, m) for m in ("pg-1", "pg-2")}
    renew = pgha(cluster.env, "certs", "renew", "--json", "--scope", SCOPE, timeout=300)  # the stored spec: 45 days
    assert renew.returncode == 0, renew.stdout[-2000:] + renew.stderr[-2000:]
    out = json.loads(renew.stdout)
    assert out["renewed"] is True and "fewer than 45 days, renewing" in out["detail"], out
    assert out["rotation"]["restarts"] == 0 and out["rotation"]["switchovers"] == 0
    assert out["rotation"]["new_not_after"] > time.strftime("%Y-%m-%d", time.gmtime(time.time() + 300 * 86400))
    after = {m: served_pg_serial(cluster, m) for m in ("pg-1", "pg-2")}
    assert all(after[m] != before[m] for m in after), (before, after)
    audit = json.loads(pgha(cluster.env, "audit", "--json", "--scope", SCOPE, timeout=300).stdout)
    assert next(f for f in audit["findings"] if f["check"] == "tls.cert_expiry")["status"] == "ok"
