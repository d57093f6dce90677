"""In-place restore decisions: when the live cluster may be rebuilt, and what a failure says."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from flows.restore import discarded_note, down_message, rolled_back_message, untouched_message
from stack.backup_decisions import in_place_problem
from stack.spec import ClusterSpec, parse_spec
from tasks import pgbackrest_restore as pr
from tasks.node_exec import ExecResult
from tasks.pgbackrest import BackupError


def spec(**kw: object) -> ClusterSpec:
    return parse_spec({"scope": "pgha-unit-ip", "nodes": 2, "etcd_members": 3, **kw}, "(unit)")


@pytest.mark.parametrize(("etcd_running", "nodes_running", "needle"), [
    (3, 2, None),
    (2, 1, None),  # quorum of 3 and one node to read the repository through
    (1, 2, "no quorum"),
    (0, 2, "no quorum"),
    (3, 0, "no node of the cluster runs"),
])
def test_in_place_needs_etcd_quorum_and_a_running_node(etcd_running: int, nodes_running: int,
                                                       needle: str | None) -> None:
    problem = in_place_problem(spec(), etcd_running, nodes_running)
    assert (problem is None) if needle is None else (problem is not None and needle in problem), problem


def test_in_place_refused_with_an_s3_repository() -> None:
    s3 = spec(backup={"s3": {"bucket": "bkt", "endpoint": "s3.example.com", "region": "eu-1"}})
    problem = in_place_problem(s3, 3, 2)
    assert problem is not None and "--into" in problem


def test_failure_message_says_the_cluster_is_down_and_how_to_recover() -> None:
    msg = down_message(spec(), "2026-11-25 21:03:00+00", RuntimeError("pgbackrest restore failed (exit 1)"))
    assert "\n" not in msg
    assert "is DOWN" in msg and "pgha-unit-ip-pgbackrest was not touched" in msg
    assert "--in-place --yes" in msg and "--into SCOPE" in msg and "pgbackrest restore failed" in msg
    # A cause with log lines (WaitTimeout) keeps the message on one line, advice included.
    msg = down_message(spec(), "2026-11-25 21:03:00+00", RuntimeError("timed out\nlog line 1\nlog line 2"))
    assert "\n" not in msg and "timed out" in msg and "log line" not in msg and "--into SCOPE" in msg


def test_discarded_note_names_the_target() -> None:
    when = dt.datetime(2026, 11, 25, 21, 3, tzinfo=dt.UTC)
    assert "after 2026-11-25 21:03:00+00:00 is discarded" in discarded_note(spec(), when)


def test_a_failure_before_the_swap_says_the_cluster_still_serves() -> None:
    msg = untouched_message(spec(), RuntimeError("restored PostgreSQL did not start: FATAL: recovery ended before "
                                                 "configured recovery target was reached\nmore"))
    assert "\n" not in msg and "before the cluster was touched" in msg and "still serves" in msg
    assert "recovery target was reached" in msg and "DOWN" not in msg


def test_a_failure_after_the_swap_says_the_old_cluster_came_back() -> None:
    msg = rolled_back_message(spec(), RuntimeError("the restored cluster is not healthy: pg-2 not streaming"))
    assert "\n" not in msg and "after the swap" in msg and "old cluster started again" in msg and "DOWN" not in msg
    assert "pgdata.pre-restore" in down_message(spec(), "2026-11-25 21:03:00+00", RuntimeError("x"))


class _FakeCopy:
    """A scratch box whose PostgreSQL started (pg_ctl -w saw a consistent hot standby), then died in replay."""

    def __init__(self) -> None:
        self.node = self
        self.calls: list[str] = []

    def put_file(self, *_: object) -> None:
        pass

    def run(self, cmd: list[str], **_: object) -> ExecResult:
        self.calls.append(cmd[0])
        if cmd[0] == "pg_ctl":
            return ExecResult(3 if "status" in cmd else 0, "", "")
        if cmd[0] == "tail":
            return ExecResult(0, "LOG:  redo done\nFATAL:  recovery ended before configured recovery target was reached\n", "")
        return ExecResult(2, "", "psql: error: connection to server on socket failed")


def test_a_copy_that_dies_after_pg_ctl_returned_fails_at_once() -> None:
    """The CI hang: pg_ctl -w returned at consistency, replay then hit the missing WAL; the wait ran 900 s."""
    started = time.monotonic()
    with pytest.raises(BackupError, match="stopped during recovery: .*recovery ended before configured recovery target"):
        pr.start_and_recover.fn(_FakeCopy(), timeout=900)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5


def test_the_first_node_spec_of_a_safe_cluster_over_hosts_parses() -> None:
    """A restored cluster over 3 hosts starts from one node: refused as unsafe, it left the cluster down."""
    from flows.restore import first_node_spec

    hosts = [{"name": f"h{i}", "docker": f"unix:///run/h{i}.sock", "address": f"10.0.0.{i}"} for i in (1, 2, 3)]
    full = parse_spec({"scope": "pgha-unit-ip", "hosts": hosts, "fencing": False, "backup": {"repo_host": "h2"},
                       "ports": {"rw": 5000, "ro": 5001, "stats": 7000}}, "(unit)")
    one = first_node_spec(full)
    assert one.nodes == 1 and one.host_of("pg-1") == full.host_of("pg-1") == "h1"
    assert one.etcd_names() == full.etcd_names()
