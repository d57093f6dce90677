"""The operator's verbs decided without Docker: restart order, history causes, leader change,
audit order and cells; and the read-only paths that must not load Prefect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stack.cluster import ClusterView, Member, MemberRole, TimelineSwitch
from stack.errors import StateError, UsageError
from stack.operator import (
    cause_of,
    history_events,
    leader_change,
    md_cell,
    ordered,
    reinit_problem,
    restart_plan,
    summary_line,
)
from stack.results import FindingRow

ROOT = Path(__file__).resolve().parents[2]
NODES = ["pg-1", "pg-2", "pg-3"]


def view(leader: str = "pg-2", paused: bool = False) -> ClusterView:
    return ClusterView(members=[Member(n, MemberRole.LEADER if n == leader else MemberRole.REPLICA, "running")
                                for n in NODES], paused=paused)


def test_restart_all_is_replicas_first_leader_last() -> None:
    plan = restart_plan(view("pg-2"), NODES, None)
    assert [(s.member, s.leader) for s in plan] == [("pg-1", False), ("pg-3", False), ("pg-2", True)]


def test_restart_one_member() -> None:
    assert [(s.member, s.leader) for s in restart_plan(view("pg-2"), NODES, "pg-2")] == [("pg-2", True)]
    assert [(s.member, s.leader) for s in restart_plan(view("pg-2"), NODES, "pg-3")] == [("pg-3", False)]


def test_restart_refusals() -> None:
    with pytest.raises(UsageError, match="unknown member pg-7"):
        restart_plan(view(), NODES, "pg-7")
    with pytest.raises(StateError, match="paused"):
        restart_plan(view(paused=True), NODES, None)
    with pytest.raises(StateError, match="no leader"):
        restart_plan(ClusterView(members=[Member("pg-1", MemberRole.REPLICA, "running")]), ["pg-1"], None)


def test_reinit_refuses_the_leader_and_strangers() -> None:
    assert reinit_problem(view("pg-2"), NODES, "pg-1") is None
    assert "is the leader" in str(reinit_problem(view("pg-2"), NODES, "pg-2"))
    assert "unknown member" in str(reinit_problem(view("pg-2"), NODES, "pg-9"))


JOURNAL = [{"operation": "drill", "started": 1000.0, "at": 1060.0, "outcome": "completed", "run": "r1"},
           {"operation": "upgrade", "started": 2000.0, "at": 2300.0, "outcome": "failed", "run": ""}]


def test_history_causes_come_from_the_operations_journal() -> None:
    assert cause_of(1030.0, JOURNAL)[0] == "drill"
    assert cause_of(2302.0, JOURNAL)[0] == "upgrade"  # within the slack after it ended
    cause, detail = cause_of(5000.0, JOURNAL)
    assert cause == "failover" and "no pgha operation" in detail
    assert cause_of(None, JOURNAL)[0] == "unknown"


def test_history_events_number_the_new_timeline() -> None:
    h = [TimelineSwitch(timeline=1, lsn=100, reason="no recovery target specified",
                        time="1970-01-01T00:17:10+00:00", new_leader="pg-2")]
    (e,) = history_events(h, JOURNAL)
    assert (e.timeline, e.new_leader, e.cause) == (2, "pg-2", "drill")  # 00:17:10 = 1030 s


def test_leader_change_only_when_it_changed() -> None:
    assert leader_change(None, "pg-1", 1) is None  # the first audit only records
    assert leader_change({"leader": "pg-1", "timeline": 1}, "pg-1", 1) is None
    ch = leader_change({"leader": "pg-1", "timeline": 1}, "pg-2", 2)
    assert ch is not None and (ch.old_leader, ch.new_leader, ch.old_timeline, ch.new_timeline) == ("pg-1", "pg-2", 1, 2)
    assert leader_change({"leader": "pg-1", "timeline": 1}, None, None) is None


def row(status: str, check: str = "c") -> FindingRow:
    return FindingRow(check=check, target="t", status=status, observed="o")


def test_audit_rows_criticals_then_warnings_then_ok_and_one_summary_line() -> None:
    rows = ordered([row("ok", "a"), row("warn", "b"), row("critical", "c"), row("ok", "d"), row("critical", "e")])
    assert [r.check for r in rows] == ["c", "e", "b", "a", "d"]
    s = summary_line("lab", rows, paused=True)
    assert s.startswith("lab: 2 critical, 1 warning, 2 ok; PAUSED") and "first: c t: o" in s
    assert "\n" not in s


def test_threshold_cells_do_not_start_with_a_quote_marker() -> None:
    assert md_cell(">= 2") == "≥ 2"
    assert md_cell("<= 10 s") == "≤ 10 s"
    assert md_cell("> 5") == "more than 5"
    assert md_cell("a|b") == "a\\|b"


def test_read_only_verbs_do_not_import_prefect() -> None:
    """`pgha status`, logs, history... must not pay Prefect's import (1.5-3 s)."""
    code = ("import sys, cli.app, cli.cluster, cli.operator, flows.steps.cluster, tasks.patroni, tasks.etcd, "
            "tasks.postgres, tasks.docker_hosts, tasks.support_report, tasks.host.journal, tasks.observe, tasks.pgbackrest\n"
            "tasks.docker_hosts.local_engine()\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'prefect_docker'))\n"
            "assert not bad, bad[:5]\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-1500:]


def test_lazy_task_builds_a_prefect_task_on_first_use() -> None:
    from prefect import Task

    from tasks._prefect import ONCE, RETRY_TRANSIENT, LazyTask, task

    @task(name="t-lazy", **RETRY_TRANSIENT)
    def double(x: int) -> int:
        return 2 * x

    assert isinstance(double, LazyTask) and double._task is None
    assert double.fn(2) == 4  # the plain function, no Prefect
    real = double.real()
    assert isinstance(real, Task) and real.name == "t-lazy" and real.retries == 2
    assert double.with_options(name="t2").name == "t2"  # attributes reach the real task
    assert ONCE["cache_policy"] is not None
