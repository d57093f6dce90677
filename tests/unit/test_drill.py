"""Drill decisions from observed values: gaps, lost writes, targets, timeline, verdict."""

from __future__ import annotations

import pytest

from stack.drill import (
    DrillKind,
    DrillResult,
    ProbeLog,
    Target,
    choose_target,
    error_digest,
    longest_gap,
    lost_writes,
    timeline,
    verdict,
)

REPLICAS = {"pg-2": ("sync_standby", 0), "pg-3": ("replica", 128)}


def test_longest_gap_counts_edges_and_ignores_outside() -> None:
    ok = [0.0, 0.05, 0.10, 2.60, 2.65, 9.0]
    assert longest_gap(ok, 0.0, 3.0) == pytest.approx(2.5)
    assert longest_gap([0.0, 0.1], 0.0, 5.0) == pytest.approx(4.9)  # never recovered: gap to the end
    assert longest_gap([], 1.0, 2.0) == pytest.approx(1.0)


def test_lost_writes_are_acked_ids_missing() -> None:
    assert lost_writes([1, 2, 3, 5], {1, 2, 3, 4, 5}) == []
    assert lost_writes([1, 2, 3, 5], {1, 3}) == [2, 5]


def test_switchover_prefers_sync_standby_then_least_lag() -> None:
    assert choose_target(DrillKind.SWITCHOVER, "pg-1", REPLICAS, 3, 3) == Target("pg-1", "pg-2")
    async_only = {"pg-2": ("replica", 500), "pg-3": ("replica", 10)}
    assert choose_target(DrillKind.SWITCHOVER, "pg-1", async_only, 3, 3) == Target("pg-1", "pg-3")
    assert choose_target(DrillKind.SWITCHOVER, "pg-1", REPLICAS, 3, 3, to="pg-3") == Target("pg-1", "pg-3")


def test_leader_faults_hit_the_leader_and_replica_kill_an_async_replica() -> None:
    for kind in (DrillKind.GRACEFUL_STOP, DrillKind.HARD_KILL, DrillKind.PARTITION):
        assert choose_target(kind, "pg-1", REPLICAS, 3, 3) == Target("pg-1")
    assert choose_target(DrillKind.REPLICA_KILL, "pg-1", REPLICAS, 3, 3) == Target("pg-3")
    assert choose_target(DrillKind.REPLICA_KILL, "pg-1", {"pg-2": ("sync_standby", 0)}, 2, 1) == Target("pg-2")
    assert choose_target(DrillKind.ETCD_MEMBER_LOSS, "pg-1", REPLICAS, 3, 3, etcd_leader="etcd-2") == Target("etcd-2")
    assert choose_target(DrillKind.HAPROXY_RESTART, "pg-1", REPLICAS, 3, 1) == Target("haproxy")


@pytest.mark.parametrize(
    ("kind", "nodes", "etcd", "to", "fragment"),
    [
        (DrillKind.HARD_KILL, 1, 3, None, "needs at least 2 nodes"),
        (DrillKind.ETCD_MEMBER_LOSS, 3, 1, None, "needs at least 3 etcd members"),
        (DrillKind.SWITCHOVER, 3, 3, "pg-9", "--to pg-9 is not a replica"),
        (DrillKind.SWITCHOVER, 3, 3, "pg-1", "--to pg-1 is not a replica"),
        (DrillKind.HARD_KILL, 3, 3, "pg-2", "--to only applies"),
    ],
)
def test_impossible_drills_are_refused(kind: DrillKind, nodes: int, etcd: int, to: str | None, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        choose_target(kind, "pg-1", REPLICAS if nodes > 1 else {}, nodes, etcd, to=to)


def test_timeline_text() -> None:
    writes = ProbeLog(ok=[0.05 + 0.1 * i for i in range(10)] + [3.05 + 0.1 * i for i in range(10)],
                      errors=[(1.55, "boom")])
    reads = ProbeLog(ok=[0.05 + 0.1 * i for i in range(40)])
    text = timeline(writes, reads, 0.0, 4.0, fault=1.0, marks={"heal": 2.0}, width=40)
    lines = text.splitlines()
    assert lines[0].startswith("writes ") and lines[1].startswith("reads  ")
    row = lines[0].removeprefix("writes ")
    assert len(row) == 40 and row[:10] == "█" * 10 and row[15] == "x" and row[12] == "·" and row[-1] == "█"
    assert lines[2].strip() == "F         h"
    assert "one cell = 100 ms" in lines[3]


def result(**kw: object) -> DrillResult:
    base: dict[str, object] = dict(kind="switchover", target="pg-1", old_leader="pg-1", new_leader="pg-2",
                                   timeline_before=1, timeline_after=2, write_gap_s=1.5, read_gap_s=0.1,
                                   writes_acked=200, write_errors=2, lost_writes=[], recovered_s=None,
                                   whole_s=7.0, healed=True)
    base.update(kw)
    return DrillResult(**base)  # type: ignore[arg-type]


def test_verdict() -> None:
    ok, msg = verdict(result())
    assert ok and msg == ("switchover: write gap 1.50s, read gap 0.10s, 0 of 200 acknowledged writes lost, "
                          "whole after 7.0s")
    ok, msg = verdict(result(lost_writes=[7, 8]))
    assert not ok and msg.startswith("2 acknowledged writes lost")
    ok, msg = verdict(result(healed=False))
    assert not ok and "did not become whole" in msg


def test_error_digest() -> None:
    log = ProbeLog(errors=[(10.5, "terminating connection"), (11.0, "timeout")])
    assert error_digest(log, 10.0) == ["+0.50s terminating connection", "+1.00s timeout"]


def test_timed_drills_targets_and_durations() -> None:
    from stack.drill import fault_seconds

    replicas = {"pg-2": ("sync_standby", 0), "pg-3": ("replica", 0)}
    assert choose_target(DrillKind.FREEZE, "pg-1", replicas, 3, 3) == Target("pg-1")
    t = choose_target(DrillKind.ETCD_QUORUM_LOSS, "pg-1", replicas, 3, 3, etcd_leader="etcd-3")
    assert t.members == ["etcd-3", "etcd-1"]  # a majority, the etcd leader among them
    assert len(choose_target(DrillKind.ETCD_QUORUM_LOSS, "pg-1", replicas, 3, 5).members) == 3
    with pytest.raises(ValueError, match="at least 3 etcd"):
        choose_target(DrillKind.ETCD_QUORUM_LOSS, "pg-1", replicas, 3, 1)
    with pytest.raises(ValueError, match="at least 2 nodes"):
        choose_target(DrillKind.FREEZE, "pg-1", {}, 1, 3)
    assert fault_seconds(DrillKind.FREEZE, 20, None) == 25
    assert fault_seconds(DrillKind.ETCD_QUORUM_LOSS, 20, None) == 60
    assert fault_seconds(DrillKind.FREEZE, 20, 7) == 7
    with pytest.raises(ValueError, match="only applies"):
        fault_seconds(DrillKind.HARD_KILL, 20, 5)
    with pytest.raises(ValueError, match="between 1 and 900"):
        fault_seconds(DrillKind.FREEZE, 20, 0)


def test_site_drills_run_on_a_standby_site_only() -> None:
    from stack.drill import site_drill_refusal
    from stack.spec import parse_spec

    standby = parse_spec({"scope": "site-b", "backup": {"enabled": False}, "standby_of": {"scope": "site-a"}})
    primary = parse_spec({"scope": "site-a"})
    assert site_drill_refusal(standby, DrillKind.SITE_LOSS, None, None, None) is None
    assert site_drill_refusal(primary, DrillKind.HARD_KILL, None, None, None) is None
    assert "runs on a standby site" in str(site_drill_refusal(primary, DrillKind.SITE_SWITCHOVER, None, None, None))
    assert "is a standby site" in str(site_drill_refusal(standby, DrillKind.HARD_KILL, None, None, None))
    assert "--to, --seconds does not apply" in str(site_drill_refusal(standby, DrillKind.SITE_LOSS, "pg-1", 5, None))


def test_rpo_seconds_spans_the_lost_writes() -> None:
    from stack.drill import rpo_seconds

    acked = [(1, 0.0), (2, 0.05), (3, 0.10), (4, 0.15), (5, 0.20)]
    assert rpo_seconds(acked, {1, 2, 3, 4, 5}, 0.2) == 0.0
    assert rpo_seconds(acked, {1, 2, 3}, 0.2) == pytest.approx(0.10)  # 4, 5 lost: 0.10 .. 0.20
    assert rpo_seconds(acked, set(), 0.2) == pytest.approx(0.20)
    assert rpo_seconds([*acked, (9, 5.0)], {1, 2, 3, 4, 5}, 0.2) == 0.0  # after the fault: the new site's


def test_site_loss_verdict_reports_rpo_and_fails_when_the_old_site_is_not_back() -> None:
    base = dict(kind="site-loss", target="site-a", old_leader="pg-1", new_leader="pg-1", timeline_before=None,
                timeline_after=None, write_gap_s=4.0, read_gap_s=0.0, writes_acked=200, write_errors=40,
                lost_writes=[198, 199], old_site="site-a", new_site="site-b", rpo_s=0.1, rto_s=3.2)
    ok, message = verdict(DrillResult(**base, healed=True))  # type: ignore[arg-type]
    assert ok and "RPO 2 acknowledged writes (0.10s of writes)" in message and "RTO 3.20s" in message
    ok, message = verdict(DrillResult(**base, healed=False, operator_action="run x"))  # type: ignore[arg-type]
    assert not ok and "run x" in message
    sw = {**base, "kind": "site-switchover"}
    ok, message = verdict(DrillResult(**sw, healed=True))  # type: ignore[arg-type]
    assert not ok and "2 acknowledged writes lost" in message
