"""The adapters' parsers on outputs recorded from a real cluster (tests/unit/data/README.md says how).

No Docker here: each test reads what etcdctl, Patroni's REST API, pgBackRest or HAProxy really
printed, so a parser that only handles a hand-written payload fails here.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from stack import backup_decisions as bkd
from stack import backup_info as bki
from stack import render
from stack.backup_info import verify_problems
from stack.cluster import MemberRole, assess, back_since, quorum
from stack.spec import ClusterSpec, parse_spec
from tasks import etcd, haproxy, patroni
from tasks.node_exec import ExecResult

DATA = Path(__file__).parent / "data"
# The spec the recordings were made with (scope pgha-rec, 3 nodes, 3 etcd members, defaults otherwise).
REC = parse_spec({"scope": "pgha-rec", "nodes": 3, "etcd_members": 3,
                  "ports": {"rw": 27432, "ro": 27433, "stats": 27404}})


def text(name: str) -> str:
    return (DATA / name).read_text()


def payload(name: str) -> dict[str, object]:
    return dict(json.loads(text(name)))


# ---- Patroni ----

def test_cluster_healthy_with_a_sync_standby() -> None:
    view = patroni.parse_cluster(payload("patroni/cluster-healthy.json"))
    roles = {m.name: (m.role, m.state, m.timeline, m.lag) for m in view.members}
    assert roles == {
        "pg-1": (MemberRole.REPLICA, "streaming", 1, 0),
        "pg-2": (MemberRole.LEADER, "running", 1, None),  # a leader reports no lag
        "pg-3": (MemberRole.SYNC_STANDBY, "streaming", 1, 0),
    }
    leader = view.leader()
    assert leader is not None and leader.name == "pg-2"
    r = assess(view, REC)
    assert r.ok and r.reason == "leader pg-2, 2 replicas streaming"


def test_cluster_with_a_stopped_replica() -> None:
    view = patroni.parse_cluster(payload("patroni/cluster-replica-stopped.json"))
    pg1 = next(m for m in view.members if m.name == "pg-1")
    # A stopped member keeps its key for a while: state "stopped", lag the string "unknown", no timeline.
    assert (pg1.role, pg1.state, pg1.lag, pg1.timeline) == (MemberRole.REPLICA, "stopped", None, None)
    assert not pg1.streaming
    r = assess(view, REC)
    assert not r.ok and r.reason == "pg-1 is stopped, not streaming"


def test_member_status_of_a_node() -> None:
    st = patroni.parse_member_status(payload("patroni/patroni-node.json"))
    assert st.role == "primary" and st.server_version == 170012 and st.state == "running"
    assert st.writable_primary and not st.pending_restart and not st.failsafe_mode_is_active
    started = dt.datetime.fromisoformat(str(st.postmaster_start_time)).timestamp()
    assert back_since(st, started - 60)
    assert not back_since(st, started + 60)
    # Patroni omits `tags` when none is set: such a member is in service.
    assert st.tags == {} and not patroni.out_of_service(st.tags)


def test_config_is_what_pgha_rendered_for_the_spec() -> None:
    # Patroni's /config is the DCS config bootstrapped from dcs_config(): rendering and reading agree.
    assert payload("patroni/config.json") == render.dcs_config(REC)


# ---- etcd ----

def test_etcd_health_healthy_and_with_a_member_stopped() -> None:
    rows = etcd.parse_health(text("etcd/endpoint-health-healthy.json"))
    assert sorted(r.endpoint for r in rows) == [f"http://pgha-rec-etcd-{i}:2379" for i in (1, 2, 3)]
    assert all(r.healthy and r.error == "" for r in rows)
    rows = etcd.parse_health(text("etcd/endpoint-health-member-stopped.json"))
    down = [r for r in rows if not r.healthy]
    assert [(r.endpoint, r.error) for r in down] == [("http://pgha-rec-etcd-2:2379", "context deadline exceeded")]
    assert quorum(rows, 3)


def test_etcd_status_healthy_and_with_a_member_stopped() -> None:
    status = etcd.parse_status(text("etcd/endpoint-status-healthy.json"))
    assert sorted(status) == ["pgha-rec-etcd-1", "pgha-rec-etcd-2", "pgha-rec-etcd-3"]
    leaders = [h for h, st in status.items() if st.leads]
    assert leaders == ["pgha-rec-etcd-3"]
    assert {st.db_size for st in status.values()} == {40960}
    # A member that does not answer has no row at all.
    assert sorted(etcd.parse_status(text("etcd/endpoint-status-member-stopped.json"))) == [
        "pgha-rec-etcd-1", "pgha-rec-etcd-3"]
    assert etcd.parse_status("") == {}


def test_etcd_member_list_ids_are_exact_and_match_status() -> None:
    members = etcd.parse_member_list(text("etcd/member-list.json"))
    assert sorted(m.name for m in members) == ["etcd-1", "etcd-2", "etcd-3"]
    ids = {m.id for m in members}
    assert max(ids) > 2**63  # uint64: a float or int64 would lose it
    status = etcd.parse_status(text("etcd/endpoint-status-healthy.json"))
    assert ids == {st.member_id for st in status.values()}


def _recorded_etcdctl(stopped: bool):  # noqa: ANN202 - a fake of tasks.etcd.etcdctl
    kind = "member-stopped" if stopped else "healthy"

    def fake(spec: ClusterSpec, args: list[str], *rest: object, **kw: object) -> ExecResult:
        what = "health" if args[:2] == ["endpoint", "health"] else "status"
        # etcdctl exits 1 with a member down, yet prints the rows of the others on stdout.
        return ExecResult(1 if stopped else 0, text(f"etcd/endpoint-{what}-{kind}.json"), "")
    return fake


def test_etcd_audit_members_and_leader_from_recorded_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd, "etcdctl", _recorded_etcdctl(stopped=False))
    members = {m.member: m for m in etcd.audit_members(REC)}
    assert all(m.healthy and m.db_size == 40960 for m in members.values())
    assert [m.member for m in members.values() if m.is_leader] == ["etcd-3"]
    assert etcd.leader_member(REC) == "etcd-3"
    monkeypatch.setattr(etcd, "etcdctl", _recorded_etcdctl(stopped=True))
    members = {m.member: m for m in etcd.audit_members(REC)}
    assert (members["etcd-2"].healthy, members["etcd-2"].error, members["etcd-2"].db_size) == (
        False, "context deadline exceeded", None)
    assert members["etcd-1"].healthy and members["etcd-3"].is_leader


# ---- pgBackRest ----

def test_info_with_a_full_and_a_diff() -> None:
    sets, wal_min, wal_max = bki.parse_info(json.loads(text("pgbackrest/info-full-diff.json")), "pgha-rec")
    assert [(s.type, s.error) for s in sets] == [("full", False), ("diff", False)]
    full, diff = sets
    assert diff.prior == full.label and diff.label.startswith(full.label + "_") and diff.label.endswith("D")
    assert full.start <= full.stop <= diff.start <= diff.stop
    assert full.size > 0 and 0 < full.repo_size < full.size  # compressed
    assert full.annotation.keys() == {"pgha-canary", "pgha-canary-count"}
    assert (wal_min, wal_max) == ("000000010000000000000001", "000000010000000000000009")
    assert wal_min <= full.wal_start <= diff.wal_stop <= wal_max
    assert bki.parse_info(json.loads(text("pgbackrest/info-full-diff.json")), "other-stanza") == ([], None, None)
    assert bkd.pick_set(sets, None) == diff


def test_verify_clean_and_damaged() -> None:
    clean = text("pgbackrest/verify-clean.txt")
    assert "status: valid" in clean and verify_problems(clean) == []
    # The same report with one file of the diff failing its checksum, as pgBackRest words it.
    lines = clean.splitlines()
    diff = next(i for i, ln in enumerate(lines) if "D, status: valid" in ln)
    lines[diff] = lines[diff].replace("status: valid", "status: invalid")
    lines[diff + 1] = lines[diff + 1].replace("checksum invalid: 0", "checksum invalid: 1")
    problems = verify_problems("\n".join(lines))
    assert len(problems) == 2 and "status: invalid" in problems[0] and "checksum invalid: 1" in problems[1]


# ---- HAProxy ----

def test_stats_csv_rows() -> None:
    rows = haproxy.parse_stats(text("haproxy/stats-healthy.csv"))
    assert [(r["pxname"], r["svname"]) for r in rows][:3] == [("stats", "FRONTEND"), ("primary", "FRONTEND"),
                                                               ("primary", "pg-1")]
    assert all(r["pxname"] and r["status"] for r in rows)


@pytest.mark.parametrize(("name", "primary", "replicas"), [
    ("stats-healthy.csv", {"pg-1": "DOWN", "pg-2": "UP", "pg-3": "DOWN"},
     {"pg-1": "UP", "pg-2": "DOWN", "pg-3": "UP"}),
    # A stopped container's name no longer resolves: HAProxy puts the server in maintenance.
    ("stats-replica-stopped.csv", {"pg-1": "MAINT (resolution)", "pg-2": "UP", "pg-3": "DOWN"},
     {"pg-1": "MAINT (resolution)", "pg-2": "DOWN", "pg-3": "UP"}),
])
def test_backend_states_and_audit_from_recorded_stats(monkeypatch: pytest.MonkeyPatch, name: str,
                                                      primary: dict[str, str], replicas: dict[str, str]) -> None:
    monkeypatch.setattr(haproxy, "stats_rows", lambda spec: haproxy.parse_stats(text(f"haproxy/{name}")))
    assert haproxy.backend_states(REC) == {"primary": primary, "replicas": replicas}
    p, r = haproxy.audit_backends(REC)
    assert {k: b.status for k, b in p.items()} == primary and {k: b.status for k, b in r.items()} == replicas
    # Each server was marked down at least once: at start, before its node's Patroni answered.
    assert all(b.chkdown >= 1 for b in [*p.values(), *r.values()])
