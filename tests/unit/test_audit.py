"""Health-audit decisions: each check's status from observed values, at the thresholds' boundaries."""

from __future__ import annotations

import pytest

from stack import audit as A
from stack import audit_obs as AO
from stack import findings as AF
from stack.audit_sizes import DiskObs
from stack.cluster import ClusterView, Member, MemberRole
from stack.errors import SpecError
from stack.fencing import Counters
from stack.findings import Level
from stack.snapshot import ClusterSnapshot, ContainersObs, EtcdObs, Observed, PatroniState
from stack.spec import AuditThresholds, ClusterSpec, parse_spec

SPEC = ClusterSpec(scope="lab")  # 3 etcd, 3 nodes, synchronous mode (profile fast)
TH = SPEC.audit


def by(findings: list[AF.Finding], check: str, target: str | None = None) -> AF.Finding:
    hits = [f for f in findings if f.check == check and (target is None or f.target == target)]
    assert len(hits) == 1, (check, target, findings)
    return hits[0]


@pytest.mark.parametrize(("value", "expected"), [
    (79.99, Level.OK), (80.0, Level.WARN), (89.99, Level.WARN), (90.0, Level.CRITICAL), (100.0, Level.CRITICAL),
])
def test_grade_boundaries(value: float, expected: Level) -> None:
    assert AF.grade(value, 80, 90) == expected


def test_worst_and_verdict_name_every_critical_finding() -> None:
    fs = [AF.Finding("a", "x", Level.OK, "1"), AF.Finding("b", "pg-2", Level.CRITICAL, "exited", "running"),
          AF.Finding("c", "pg-3", Level.WARN, "2 s")]
    assert AF.worst(fs) == Level.CRITICAL
    v = A.verdict("lab", fs)
    assert v.level == Level.CRITICAL
    assert v.message == "health audit of lab: 1 critical: b pg-2: exited (threshold running)"
    assert A.verdict("lab", fs[2:]).level == Level.WARN
    assert A.verdict("lab", fs[:1]).message == "health audit of lab: all 1 checks ok"
    assert AF.worst([]) == Level.OK


# ---- etcd ----

def etcd_members(healthy: int = 3, leader: bool = True, db: int = 1 << 20) -> list[AO.EtcdMember]:
    return [AO.EtcdMember(f"etcd-{i}", healthy=i <= healthy, is_leader=leader and i == 1 and healthy >= 1, db_size=db,
                         error="" if i <= healthy else "context deadline exceeded") for i in (1, 2, 3)]


def test_etcd_healthy() -> None:
    fs = A.check_etcd(etcd_members(), SPEC, TH)
    assert AF.worst(fs) == Level.OK
    assert by(fs, "etcd.quorum").observed == "3/3 healthy"


def test_etcd_one_member_down_keeps_quorum() -> None:
    fs = A.check_etcd(etcd_members(healthy=2), SPEC, TH)
    assert by(fs, "etcd.member", "etcd-3").status == Level.CRITICAL
    assert by(fs, "etcd.quorum").status == Level.OK


def test_etcd_quorum_lost_and_no_leader() -> None:
    fs = A.check_etcd(etcd_members(healthy=1, leader=False), SPEC, TH)
    assert by(fs, "etcd.quorum").status == Level.CRITICAL
    assert by(fs, "etcd.leader").status == Level.CRITICAL


@pytest.mark.parametrize(("pct", "expected"), [(69.9, Level.OK), (70.0, Level.WARN), (90.0, Level.CRITICAL)])
def test_etcd_db_size_vs_quota(pct: float, expected: Level) -> None:
    size = int(A.ETCD_QUOTA_BYTES * pct / 100) + (1 if pct * 10 % 1 == 0 else 0)
    fs = A.check_etcd(etcd_members(db=size), SPEC, TH)
    assert by(fs, "etcd.db_size", "etcd-1").status == expected


# ---- Patroni ----

def patroni(**over: object) -> AO.PatroniObs:
    members = [Member("pg-1", MemberRole("leader"), "running", 2, None),
               Member("pg-2", MemberRole("sync_standby"), "streaming", 2, 0),
               Member("pg-3", MemberRole("replica"), "streaming", 2, 0)]
    base: dict[str, object] = {"members": members, "paused": False,
                               "liveness": {m: 200 for m in ("pg-1", "pg-2", "pg-3")},
                               "readiness": {m: 200 for m in ("pg-1", "pg-2", "pg-3")}}
    base.update(over)
    return AO.PatroniObs(**base)  # type: ignore[arg-type]


def test_patroni_healthy() -> None:
    assert AF.worst(A.check_patroni(patroni(), SPEC)) == Level.OK


def test_patroni_two_leaders_timeline_pause_and_pending_restart() -> None:
    members = [Member("pg-1", MemberRole("leader"), "running", 2, None),
               Member("pg-2", MemberRole("leader"), "running", 3, None, pending_restart=True),
               Member("pg-3", MemberRole("replica"), "streaming", 1, 0)]
    fs = A.check_patroni(patroni(members=members, paused=True), SPEC)
    assert by(fs, "patroni.leader").status == Level.CRITICAL
    assert by(fs, "patroni.paused").status == Level.WARN
    assert by(fs, "patroni.pending_restart", "pg-2").status == Level.WARN


def test_patroni_replica_on_another_timeline_is_critical() -> None:
    members = [Member("pg-1", MemberRole("leader"), "running", 3, None),
               Member("pg-2", MemberRole("sync_standby"), "streaming", 3, 0),
               Member("pg-3", MemberRole("replica"), "streaming", 2, 0)]
    fs = A.check_patroni(patroni(members=members), SPEC)
    assert by(fs, "patroni.timeline", "pg-3").status == Level.CRITICAL


def test_patroni_missing_member_and_failing_probes() -> None:
    fs = A.check_patroni(patroni(members=patroni().members[:2], liveness={"pg-1": 200, "pg-2": 503},
                                 readiness={"pg-1": 200, "pg-2": 200}), SPEC)
    assert by(fs, "patroni.member", "pg-3").status == Level.CRITICAL
    assert by(fs, "patroni.liveness", "pg-2").status == Level.CRITICAL
    assert by(fs, "patroni.liveness", "pg-2").observed == "HTTP 503"


def test_patroni_api_silent() -> None:
    fs = A.check_patroni(None, SPEC, "no Patroni node answers /cluster")
    assert fs[0].status == Level.CRITICAL and "no Patroni node" in fs[0].observed


# ---- replication ----

def rows(lag_b: int = 0, lag_s: float = 0.0, sync: str = "sync", state: str = "streaming") -> list[AO.ReplicationRow]:
    return [AO.ReplicationRow("pg-2", state, sync, lag_b, lag_s), AO.ReplicationRow("pg-3", "streaming", "async", 0, 0.0)]


def test_replication_healthy() -> None:
    assert AF.worst(A.check_replication("pg-1", rows(), SPEC, TH)) == Level.OK


@pytest.mark.parametrize(("lag", "expected"), [
    (TH.lag_warn_bytes - 1, Level.OK), (TH.lag_warn_bytes, Level.WARN),
    (TH.lag_critical_bytes - 1, Level.WARN), (TH.lag_critical_bytes, Level.CRITICAL),
])
def test_replication_lag_bytes_boundaries(lag: int, expected: Level) -> None:
    assert by(A.check_replication("pg-1", rows(lag_b=lag), SPEC, TH), "replication.lag_bytes", "pg-2").status == expected


@pytest.mark.parametrize(("lag", "expected"), [(9.9, Level.OK), (10.0, Level.WARN), (60.0, Level.CRITICAL)])
def test_replication_lag_seconds_boundaries(lag: float, expected: Level) -> None:
    assert by(A.check_replication("pg-1", rows(lag_s=lag), SPEC, TH), "replication.lag_seconds", "pg-2").status == expected


def test_replica_not_streaming_or_absent_and_no_sync_standby() -> None:
    fs = A.check_replication("pg-1", [AO.ReplicationRow("pg-2", "catchup", "async", 10, 0.0)], SPEC, TH)
    assert by(fs, "replication.streaming", "pg-2").status == Level.CRITICAL
    assert by(fs, "replication.streaming", "pg-3").observed == "absent from pg_stat_replication"
    assert by(fs, "replication.sync_standby").status == Level.CRITICAL


def test_no_sync_standby_needed_in_asynchronous_mode() -> None:
    spec = parse_spec({"scope": "lab", "profile": "patroni-defaults"})
    fs = A.check_replication("pg-1", rows(sync="async"), spec, spec.audit)
    assert not [f for f in fs if f.check == "replication.sync_standby"]
    assert AF.worst(fs) == Level.OK


def test_replication_without_leader() -> None:
    fs = A.check_replication(None, [], SPEC, TH, "no leader")
    assert fs[0].status == Level.CRITICAL


# ---- HAProxy ----

def haproxy(primary_up: str = "pg-1", replicas_up: tuple[str, ...] = ("pg-2", "pg-3"), **over: object) -> AO.HaproxyObs:
    nodes = ("pg-1", "pg-2", "pg-3")
    base: dict[str, object] = {
        "primary": {n: AO.Backend("UP" if n == primary_up else "DOWN", 1) for n in nodes},
        "replicas": {n: AO.Backend("UP" if n in replicas_up else "DOWN", 1) for n in nodes},
        "rw_member": "pg-1", "rw_writable": True, "ro_member": "pg-2", "ro_in_recovery": True,
    }
    base.update(over)
    return AO.HaproxyObs(**base)  # type: ignore[arg-type]


def test_haproxy_healthy() -> None:
    fs = A.check_haproxy(haproxy(), "pg-1", {"pg-2", "pg-3"}, SPEC, TH, AO.Baseline())
    assert AF.worst(fs) == Level.OK


def test_haproxy_rw_to_wrong_node_or_ro_to_primary() -> None:
    fs = A.check_haproxy(haproxy(rw_member="pg-2", ro_in_recovery=False), "pg-1", {"pg-2", "pg-3"}, SPEC, TH,
                         AO.Baseline())
    assert by(fs, "haproxy.rw_port").status == Level.CRITICAL
    assert by(fs, "haproxy.ro_port").status == Level.CRITICAL
    assert "PRIMARY" in by(fs, "haproxy.ro_port").observed


def test_haproxy_backends_disagree_with_patroni() -> None:
    fs = A.check_haproxy(haproxy(primary_up="pg-2", replicas_up=("pg-3",)), "pg-1", {"pg-2", "pg-3"}, SPEC, TH,
                         AO.Baseline())
    assert by(fs, "haproxy.primary_backend").status == Level.CRITICAL
    assert by(fs, "haproxy.replica_backend").status == Level.WARN
    fs = A.check_haproxy(haproxy(replicas_up=()), "pg-1", {"pg-2", "pg-3"}, SPEC, TH, AO.Baseline())
    assert by(fs, "haproxy.replica_backend").status == Level.CRITICAL
    fs = A.check_haproxy(haproxy(replicas_up=("pg-1", "pg-2", "pg-3")), "pg-1", {"pg-2", "pg-3"}, SPEC, TH,
                         AO.Baseline())
    assert by(fs, "haproxy.replica_backend").status == Level.CRITICAL  # the leader serves the R/O port


def test_haproxy_flapping_counts_since_the_last_audit() -> None:
    obs = haproxy()
    obs.replicas["pg-3"] = AO.Backend("UP", 1 + TH.flaps_warn)
    first = A.check_haproxy(obs, "pg-1", {"pg-2", "pg-3"}, SPEC, TH, AO.Baseline())
    assert not [f for f in first if f.check == "haproxy.flapping"]  # no baseline yet
    base = AO.Baseline(chkdown={"replicas/pg-3": 1})
    fs = A.check_haproxy(obs, "pg-1", {"pg-2", "pg-3"}, SPEC, TH, base)
    assert by(fs, "haproxy.flapping", "replicas/pg-3").status == Level.WARN
    base = AO.Baseline(chkdown={"replicas/pg-3": 2})  # one flap fewer than the threshold
    assert not [f for f in A.check_haproxy(obs, "pg-1", {"pg-2", "pg-3"}, SPEC, TH, base) if f.check == "haproxy.flapping"]


def test_haproxy_stats_unreachable() -> None:
    fs = A.check_haproxy(None, "pg-1", set(), SPEC, TH, AO.Baseline(), "connection refused")
    assert fs[0].status == Level.CRITICAL


# ---- PostgreSQL ----

def pg(**over: object) -> AO.PostgresObs:
    base: dict[str, object] = {"connections": 5, "max_connections": 100, "oldest_xact_s": None,
                               "oldest_idle_in_xact_s": None, "inactive_slots": {}, "max_xid_age": 1000,
                               "data_checksums": True}
    base.update(over)
    return AO.PostgresObs(**base)  # type: ignore[arg-type]


def test_postgres_healthy() -> None:
    assert AF.worst(A.check_postgres(pg(), SPEC, TH)) == Level.OK


@pytest.mark.parametrize(("conns", "expected"), [(79, Level.OK), (80, Level.WARN), (94, Level.WARN), (95, Level.CRITICAL)])
def test_connections_boundaries(conns: int, expected: Level) -> None:
    assert by(A.check_postgres(pg(connections=conns), SPEC, TH), "postgres.connections").status == expected


@pytest.mark.parametrize(("age", "expected"), [(299.0, Level.OK), (300.0, Level.WARN), (3600.0, Level.CRITICAL)])
def test_long_transaction_boundaries(age: float, expected: Level) -> None:
    assert by(A.check_postgres(pg(oldest_xact_s=age), SPEC, TH), "postgres.oldest_transaction").status == expected


@pytest.mark.parametrize(("age", "expected"), [(59.0, Level.OK), (60.0, Level.WARN), (600.0, Level.CRITICAL)])
def test_idle_in_transaction_boundaries(age: float, expected: Level) -> None:
    assert by(A.check_postgres(pg(oldest_idle_in_xact_s=age), SPEC, TH), "postgres.idle_in_transaction").status == expected


@pytest.mark.parametrize(("retained", "expected"), [
    (TH.slot_retained_warn_bytes - 1, Level.OK), (TH.slot_retained_warn_bytes, Level.WARN),
    (TH.slot_retained_critical_bytes, Level.CRITICAL),
])
def test_inactive_slot_boundaries(retained: int, expected: Level) -> None:
    fs = A.check_postgres(pg(inactive_slots={"old_consumer": retained}), SPEC, TH)
    assert by(fs, "postgres.inactive_slot", "old_consumer").status == expected


@pytest.mark.parametrize(("age", "expected"), [
    (TH.xid_age_warn - 1, Level.OK), (TH.xid_age_warn, Level.WARN), (TH.xid_age_critical, Level.CRITICAL),
])
def test_xid_age_boundaries(age: int, expected: Level) -> None:
    assert by(A.check_postgres(pg(max_xid_age=age), SPEC, TH), "postgres.xid_age").status == expected


def test_checksums_off_warns_and_no_connection_is_critical() -> None:
    assert by(A.check_postgres(pg(data_checksums=False), SPEC, TH), "postgres.data_checksums").status == Level.WARN
    assert A.check_postgres(None, SPEC, TH, "127.0.0.1:5432: connection refused")[0].status == Level.CRITICAL


# ---- disks and containers ----

@pytest.mark.parametrize(("pct", "expected"), [(79.9, Level.OK), (80.0, Level.WARN), (90.0, Level.CRITICAL)])
def test_disk_boundaries(pct: float, expected: Level) -> None:
    fs = A.check_disks({"pg-1": pct, "pg-2": 10.0, "pg-3": None}, SPEC, TH)
    assert by(fs, "disk.data_volume", "pg-1").status == expected
    assert not [f for f in fs if f.target == "pg-3"]  # a stopped node is reported elsewhere


def containers(**over: AO.ContainerObs) -> list[AO.ContainerObs]:
    members = [m for m, _ in SPEC.expected_members()]  # the pooler too: on by default
    cs = {m: AO.ContainerObs(SPEC.container(m), m, "running", "healthy", f"id-{m}", 0) for m in members}
    cs.update(over)
    return list(cs.values())


def test_containers_healthy_first_audit() -> None:
    fs = A.check_containers(containers(), SPEC, TH, AO.Baseline())
    assert AF.worst(fs) == Level.OK
    assert by(fs, "container.restarts", "pg-1").observed == "0 (first audit)"


def test_starting_before_its_first_check_is_ok_after_a_failed_one_a_warning() -> None:
    pending = AO.ContainerObs("lab-pg-2", "pg-2", "running", "starting", "id-pg-2", health_pending=True)
    row = by(A.check_containers(containers(**{"pg-2": pending}), SPEC, TH, AO.Baseline()), "container.running", "pg-2")
    assert (row.status, row.observed) == (Level.OK, "running, starting, first check due")
    failed = AO.ContainerObs("lab-pg-2", "pg-2", "running", "starting", "id-pg-2", health_pending=False)
    row = by(A.check_containers(containers(**{"pg-2": failed}), SPEC, TH, AO.Baseline()), "container.running", "pg-2")
    assert (row.status, row.observed) == (Level.WARN, "running, starting")


def test_container_stopped_unhealthy_or_starting() -> None:
    fs = A.check_containers(containers(**{
        "pg-2": AO.ContainerObs("lab-pg-2", "pg-2", "exited", "", "id-pg-2"),
        "pg-3": AO.ContainerObs("lab-pg-3", "pg-3", "running", "unhealthy", "id-pg-3"),
        "etcd-2": AO.ContainerObs("lab-etcd-2", "etcd-2", "running", "starting", "id-etcd-2"),
    }), SPEC, TH, AO.Baseline())
    assert by(fs, "container.running", "pg-2").status == Level.CRITICAL
    assert by(fs, "container.running", "pg-3").status == Level.CRITICAL
    assert by(fs, "container.running", "etcd-2").status == Level.WARN
    fs = A.check_containers([c for c in containers() if c.member != "haproxy"], SPEC, TH, AO.Baseline())
    assert by(fs, "container.running", "haproxy").observed == "missing"


@pytest.mark.parametrize(("before", "now", "expected"), [(2, 2, Level.OK), (2, 3, Level.WARN), (2, 6, Level.WARN),
                                                          (2, 7, Level.CRITICAL)])
def test_restarts_since_last_audit(before: int, now: int, expected: Level) -> None:
    base = AO.Baseline(restarts={"lab-pg-1": ("id-pg-1", before)})
    cs = containers(**{"pg-1": AO.ContainerObs("lab-pg-1", "pg-1", "running", "healthy", "id-pg-1", now)})
    assert by(A.check_containers(cs, SPEC, TH, base), "container.restarts", "pg-1").status == expected


def test_recreated_container_resets_its_restart_baseline() -> None:
    base = AO.Baseline(restarts={"lab-pg-1": ("old-id", 0)})
    cs = containers(**{"pg-1": AO.ContainerObs("lab-pg-1", "pg-1", "running", "healthy", "new-id", 9)})
    assert by(A.check_containers(cs, SPEC, TH, base), "container.restarts", "pg-1").status == Level.OK


def test_baseline_round_trip_and_damage() -> None:
    obs = haproxy()
    b = A.next_baseline(containers(), obs, AO.Baseline())
    again = AO.Baseline.from_dict(b.to_dict())
    assert again == b and again.chkdown["primary/pg-1"] == 1
    kept = A.next_baseline(containers(), None, b)  # HAProxy silent: keep the old flap counters
    assert kept.chkdown == b.chkdown
    assert AO.Baseline.from_dict({"restarts": {"x": "broken"}}) == AO.Baseline()


# ---- thresholds in the spec ----

def test_thresholds_default_and_override() -> None:
    spec = parse_spec({"scope": "lab", "audit": {"lag_warn_s": 2, "lag_critical_s": 5}})
    assert spec.audit.lag_warn_s == 2 and spec.audit.disk_warn_pct == AuditThresholds().disk_warn_pct
    assert by(A.check_replication("pg-1", rows(lag_s=2.0), spec, spec.audit), "replication.lag_seconds", "pg-2").status \
        == Level.WARN


@pytest.mark.parametrize(("audit", "message"), [
    ({"disk_warn_pct": 95}, "audit: disk_critical_pct (90) is below disk_warn_pct (95.0)"),
    ({"lag_warn_bytes": -1}, "audit.lag_warn_bytes: Input should be greater than or equal to 0"),
    ({"disk_warn_pct": 120}, "audit.disk_warn_pct: Input should be less than or equal to 100"),
    ({"nosuch": 1}, "audit.nosuch: unknown key"),
])
def test_bad_thresholds_are_refused(audit: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"scope": "lab", "audit": audit})
    assert message in str(info.value)


def test_every_gatherer_failing_gives_critical_rows_not_a_crash() -> None:
    from flows.audit import decide

    got = {k: Observed(None, f"{k} unreachable", asked=True) for k in
           ("containers", "etcd", "patroni", "replication", "haproxy", "postgres", "disks")}
    fs = decide(SPEC, ClusterSnapshot(scope="lab", **got), AO.Baseline())  # type: ignore[arg-type]
    assert AF.worst(fs) == Level.CRITICAL
    checks = {f.check for f in fs if f.status == Level.CRITICAL}
    assert {"container.list", "etcd.api", "patroni.api", "replication", "haproxy.stats", "postgres.connect"} <= checks
    assert A.verdict("lab", fs).message.startswith("health audit of lab: 6 critical: container.list lab: containers")


def test_decide_on_a_healthy_cluster() -> None:
    from flows.audit import decide

    p = patroni()
    got = {"containers": ContainersObs(containers()), "etcd": EtcdObs(health=[], members=etcd_members()),
           "patroni": PatroniState(ClusterView(p.members, p.paused), p.liveness, p.readiness),
           "replication": rows(), "haproxy": haproxy(), "postgres": pg(),
           "disks": {m: DiskObs(20 * 2**30, 80 * 2**30, 300 * 2**20) for m in ("pg-1", "pg-2", "pg-3")}}
    snap = ClusterSnapshot(scope="lab", **{k: Observed(v, "", asked=True) for k, v in got.items()})  # type: ignore[arg-type]
    fs = decide(SPEC, snap, AO.Baseline())
    assert AF.worst(fs) == Level.OK and len(fs) > 40
    assert by(fs, "disk.data_volume", "pg-1").observed == "20% used"
    assert by(fs, "disk.wal", "pg-2").status == Level.OK


def test_single_node_cluster_needs_no_replicas() -> None:
    spec = parse_spec({"scope": "solo", "nodes": 1, "etcd_members": 1})
    view = patroni(members=[Member("pg-1", MemberRole("leader"), "running", 1, None)],
                   liveness={"pg-1": 200}, readiness={"pg-1": 200})
    fs = A.check_patroni(view, spec) + A.check_replication("pg-1", [], spec, spec.audit)
    obs = AO.HaproxyObs(primary={"pg-1": AO.Backend("UP", 0)}, replicas={"pg-1": AO.Backend("DOWN", 1)},
                       rw_member="pg-1", rw_writable=True, ro_member=None, ro_in_recovery=None)
    fs += A.check_haproxy(obs, "pg-1", set(), spec, spec.audit, AO.Baseline())
    assert AF.worst(fs) == Level.OK, [f for f in fs if f.status != Level.OK]
    assert not [f for f in fs if f.check in ("haproxy.ro_port", "replication.sync_standby")]


def test_fencing_watcher_missing_is_a_warning_not_critical() -> None:
    fs = A.check_containers([c for c in containers() if c.member != "fencer"], SPEC, TH, AO.Baseline())
    assert by(fs, "container.running", "fencer").status == Level.WARN
    assert AF.worst(fs) == Level.WARN
    fs = A.check_fencing(None, SPEC, 1000.0, "the fencer lab-fencer is not running")
    assert fs[0].status == Level.WARN and "ttl" in fs[0].hint
    off = ClusterSpec(scope="lab", fencing=False)
    assert A.check_fencing(None, off, 1000.0)[0].status == Level.OK
    assert not [f for f in A.check_containers([c for c in containers() if c.member != "fencer"], off, TH,
                                               AO.Baseline()) if f.target == "fencer"]


def test_fencing_counters_and_stale_heartbeat() -> None:
    stats = Counters(heartbeat_at=995.0, events=3, by_outcome={"fenced": 1, "skipped: not leader": 2})
    f = A.check_fencing(stats, SPEC, 1000.0)
    assert f[0].status == Level.OK and "fenced 1" in f[0].observed and "not leader 2" in f[0].observed
    assert A.check_fencing(stats, SPEC, 1100.0)[0].status == Level.WARN
    stats.by_outcome = {"skipped: etcd unreachable": 1}
    assert by(A.check_fencing(stats, SPEC, 1000.0), "fencing.unconfirmed", "lab").status == Level.WARN


def test_failsafe_mode_and_running_on_it() -> None:
    fs = A.check_failsafe(True, [], SPEC)
    assert AF.worst(fs) == Level.OK and by(fs, "patroni.failsafe_mode", "lab").observed == "on"
    assert by(A.check_failsafe(False, [], SPEC), "patroni.failsafe_mode", "lab").status == Level.WARN
    active = by(A.check_failsafe(True, ["pg-1"], SPEC), "patroni.failsafe_active", "lab")
    assert active.status == Level.WARN and "pg-1" in active.observed
    assert A.check_failsafe(None, [], SPEC, "no node answers")[0].status == Level.WARN


def test_health_pending_is_starting_with_no_check_run_yet() -> None:
    from types import SimpleNamespace

    from tasks.engine_inspect import health_pending

    def ct(health: dict[str, object] | None) -> SimpleNamespace:
        return SimpleNamespace(attrs={"State": {"Status": "running", **({"Health": health} if health else {})}})

    assert health_pending(ct({"Status": "starting", "FailingStreak": 0, "Log": None}))
    assert not health_pending(ct({"Status": "starting", "FailingStreak": 0, "Log": [{"ExitCode": 1}]}))
    assert not health_pending(ct({"Status": "healthy", "Log": [{"ExitCode": 0}]}))
    assert not health_pending(ct(None))
