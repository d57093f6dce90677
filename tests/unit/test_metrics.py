"""pgha's Prometheus metrics: the renderer's exposition format, label escaping, Patroni parsing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stack import metrics as M
from stack.fencing import Counters
from tests.unit.test_prometheus_rules import promtool

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? '
                    r'(-?[0-9.e+-]+|NaN|[+-]Inf)$')


def _snapshot() -> M.Snapshot:
    leader = M.member_sample("pg-1", {"state": "running", "role": "primary", "timeline": 3},
                             {"name": "pg-1", "role": "leader", "state": "running", "timeline": 3}, NOW,
                             cert_not_after=NOW + 10 * 86400)
    replica = M.member_sample(
        "pg-2", {"state": "streaming", "role": "replica", "timeline": 3,
                 "xlog": {"replayed_timestamp": "2027-01-15 07:59:30+00:00"}},
        {"name": "pg-2", "role": "sync_standby", "state": "streaming", "timeline": 3, "lag": 4096}, NOW)
    down = M.member_sample("pg-3", None, None, NOW)
    audit = M.audit_sample(NOW - 60, [("backup.age", "demo", "ok"), ("disk.\"data\"\\x", "pg-1\nx", "critical")],
                           last_backup_at=NOW - 3600, last_verified_at=None,
                           fencers={"fencer": Counters(events=7, by_outcome={"fenced": 1, "skipped: not leader": 2})})
    return M.Snapshot("demo", NOW - 2, 3, (leader, replica, down), ("pg-3: refused",), audit)


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {f.name: [(dict(s.labels), s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_every_line_is_valid_exposition_text() -> None:
    text = M.render(_snapshot(), NOW)
    assert text.endswith("\n")
    seen_types: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in seen_types, f"{name} declared twice"
            seen_types.add(name)
        elif not line.startswith("# HELP "):
            assert SAMPLE.match(line), line
    fams = _families(text)  # the reference client's parser accepts it
    assert fams["pgha_member_up"] == [({"scope": "demo", "member": "pg-1"}, 1.0),
                                      ({"scope": "demo", "member": "pg-2"}, 1.0),
                                      ({"scope": "demo", "member": "pg-3"}, 0.0)]


def test_roles_are_one_hot_and_a_down_member_holds_none() -> None:
    fams = _families(M.render(_snapshot(), NOW))
    roles = {(lb["member"], lb["role"]): v for lb, v in fams["pgha_member_role"]}
    assert roles[("pg-1", "leader")] == 1 and roles[("pg-2", "sync_standby")] == 1
    assert sum(roles.values()) == 2 and len(roles) == 3 * len(M.ROLES)


def test_lag_timeline_certificates_and_ages() -> None:
    fams = _families(M.render(_snapshot(), NOW))
    assert fams["pgha_member_lag_bytes"] == [({"scope": "demo", "member": "pg-2"}, 4096.0)]
    lag_s = dict((lb["member"], v) for lb, v in fams["pgha_member_lag_seconds"])
    assert lag_s == {"pg-2": 30.0}  # behind by 4 KiB: the age of its last replayed transaction
    assert {lb["member"]: v for lb, v in fams["pgha_member_timeline"]} == {"pg-1": 3, "pg-2": 3}
    assert fams["pgha_certificate_expiry_seconds"] == [
        ({"scope": "demo", "member": "pg-1", "certificate": "patroni-rest"}, 10 * 86400.0)]
    ages = {lb["source"]: v for lb, v in fams["pgha_snapshot_age_seconds"]}
    assert ages == {"live": 2.0, "audit": 60.0}
    assert fams["pgha_backup_age_seconds"][0][1] == 3600.0
    assert fams["pgha_backup_verified_age_seconds"] == []  # never verified: no sample, not a 0
    assert fams["pgha_snapshot_errors"][0][1] == 1


def test_label_values_are_escaped() -> None:
    text = M.render(_snapshot(), NOW)
    assert 'check="disk.\\"data\\"\\\\x",target="pg-1\\nx"} 2' in text
    checks = {(lb["check"], lb["target"]): v for lb, v in _families(text)["pgha_check_status"]}
    assert checks == {("backup.age", "demo"): 0, ('disk."data"\\x', "pg-1\nx"): 2}
    assert M.escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert M.escape_help("x\\y\nz") == "x\\\\y\\nz"


def test_fencer_counters_are_counters() -> None:
    text = M.render(_snapshot(), NOW)
    assert "# TYPE pgha_fencer_events_total counter" in text
    assert 'pgha_fencer_events_total{scope="demo",fencer="fencer"} 7' in text
    fams = _families(text)
    assert {lb["outcome"]: v for lb, v in fams["pgha_fencer_decisions"]} == {"fenced": 1, "skipped: not leader": 2}


def test_caught_up_replica_and_a_node_outside_the_cluster_view() -> None:
    rep = M.member_sample("pg-2", {"state": "streaming", "role": "replica", "timeline": 1},
                          {"name": "pg-2", "role": "replica", "lag": 0}, NOW)
    assert rep.lag_seconds == 0.0 and rep.lag_bytes == 0 and rep.up
    own = M.member_sample("pg-1", {"state": "running", "role": "primary", "timeline": 1}, None, NOW)
    assert own.role == "leader" and own.lag_bytes is None
    unknown = M.member_sample("pg-2", {"state": "streaming", "role": "replica"},
                              {"name": "pg-2", "role": "replica", "lag": "unknown"}, NOW)
    assert unknown.lag_bytes is None and unknown.lag_seconds is None
    starting = M.member_sample("pg-3", {"state": "starting"}, None, NOW)
    assert not starting.up
    assert M.cluster_members({"members": [{"name": "pg-1"}, "junk"]}) == {"pg-1": {"name": "pg-1"}}
    assert M.cluster_members(None) == {}


def test_values() -> None:
    assert M.format_value(True) == "1" and M.format_value(3) == "3" and M.format_value(0.5) == "0.5"
    assert M.format_value(float("nan")) == "NaN" and M.format_value(float("inf")) == "+Inf"


def test_promtool_accepts_the_exposition() -> None:
    """promtool's linter too: HELP on every family, base units, counters named _total."""
    r = promtool("check", "metrics", stdin=M.render(_snapshot(), NOW))
    assert r.returncode == 0, r.stdout + r.stderr


# ---- the exporter's container and its agent ----

def test_exporter_container_is_supervised_unprivileged_and_holds_no_secret() -> None:
    from stack import topology
    from stack.spec import parse_spec

    spec = parse_spec({"scope": "demo", "nodes": 2, "etcd_members": 1, "metrics": {"enabled": True},
                       "ports": {"metrics": 9300}}, "unit")
    p = topology.metrics_exporter(spec, "pgha/node:x", "/state/demo/config/metrics", {"exporter.py": "", "metrics.py": ""})
    c = p.container
    assert c.role == "metrics" and c.name == "demo-metrics" and c.ports == {9188: 9300}
    assert c.hardening is not None and c.hardening.cap_add == () and c.hardening.read_only
    assert c.log_options and "max-size" in c.log_options
    cfg = M.ExporterConfig.from_json(p.files["exporter.json"])
    assert cfg.nodes == (("pg-1", "https://demo-pg-1:8008"), ("pg-2", "https://demo-pg-2:8008"))
    assert cfg.ca_file == "/etc/pgha/tls/ca.crt" and cfg.audit_file == "/etc/pgha/audit.json"
    assert ("metrics", "metrics") in spec.expected_members()
    assert "metrics" not in [m for m, _ in parse_spec({"scope": "demo"}, "unit").expected_members()]


def test_the_metrics_port_must_differ_and_hosts_are_refused() -> None:
    from stack.errors import SpecError
    from stack.spec import parse_spec

    with pytest.raises(SpecError, match="ports.metrics and ports.stats are both 8404"):
        parse_spec({"metrics": {"enabled": True}, "ports": {"metrics": 8404}}, "unit")
    parse_spec({"metrics": {"enabled": False}, "ports": {"metrics": 8404}}, "unit")  # unused: not checked


def test_the_agent_observes_fake_nodes_and_serves_their_metrics() -> None:
    """The agent against two fake Patroni REST APIs (http.server): one leader, one down."""
    import json
    import threading
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tasks import exporter_agent

    replies = {"/patroni": {"state": "running", "role": "primary", "timeline": 4},
               "/cluster": {"members": [{"name": "pg-1", "role": "leader", "state": "running", "timeline": 4}]}}

    class Fake(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps(replies[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    fake = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    try:
        cfg = M.ExporterConfig("demo", (("pg-1", f"http://127.0.0.1:{fake.server_address[1]}"),
                                        ("pg-2", "http://127.0.0.1:9")), 1.0, 0, timeout_s=1.0)
        ex = exporter_agent.Exporter(cfg)
        assert not ex.fresh()
        snap = ex.observe()
        assert [(m.name, m.up, m.role, m.timeline) for m in snap.members] == [("pg-1", True, "leader", 4),
                                                                               ("pg-2", False, "", None)]
        assert snap.errors and snap.errors[0].startswith("pg-2: ")
        ex.snapshot = snap
        assert ex.fresh()
        server = ThreadingHTTPServer(("127.0.0.1", 0), exporter_agent.handler(ex))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            with urllib.request.urlopen(url + "/metrics", timeout=5) as r:  # noqa: S310
                text = r.read().decode()
                assert r.headers["Content-Type"] == M.CONTENT_TYPE
            assert 'pgha_member_up{scope="demo",member="pg-2"} 0' in text
            assert "pgha_check_status" not in text  # no audit yet: absent, not zero
        finally:
            server.shutdown()
    finally:
        fake.shutdown()


def test_green_exporter_gets_its_own_port_during_a_major_upgrade() -> None:
    from stack import major
    from stack.spec import parse_spec

    blue = parse_spec({"scope": "demo", "postgres_version": 15, "metrics": {"enabled": True}}, "unit")
    green = major.green_spec(blue, 17)
    assert green.ports.metrics == blue.ports.metrics + blue.major.green_port_offset and green.metrics.enabled


def test_a_missing_exporter_is_a_warning_not_critical() -> None:
    from stack import audit as A
    from stack import audit_obs as AO
    from stack import findings as AF
    from stack.spec import ClusterSpec

    spec = ClusterSpec(scope="lab", metrics={"enabled": True})  # type: ignore[arg-type]
    running = [AO.ContainerObs(spec.container(m), m, "running", "healthy", f"id-{m}")
               for m, _ in spec.expected_members() if m != "metrics"]
    rows = [f for f in A.check_containers(running, spec, spec.audit, AO.Baseline()) if f.target == "metrics"]
    assert [(f.check, f.status, f.observed) for f in rows] == [("container.running", AF.Level.WARN, "missing")]
    assert AF.worst(A.check_containers(running, spec, spec.audit, AO.Baseline())) == AF.Level.WARN
