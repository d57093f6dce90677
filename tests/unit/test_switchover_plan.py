"""The switchover's plan and its catch-up window after a burst of writes (pure)."""

from __future__ import annotations

import pytest

from stack.cluster import ClusterView, Member, MemberRole
from stack.errors import StateError
from stack.spec import ClusterSpec
from stack.switchover import catch_up_window, plan_switchover

SPEC = ClusterSpec()
BIG = 10 * 1024 * 1024 * 1024


def _view(*replicas: Member) -> ClusterView:
    return ClusterView(members=[Member("pg-1", MemberRole.LEADER, "running", 1, None), *replicas])


def test_a_lagging_streaming_replica_is_refused_but_gets_a_window() -> None:
    view = _view(Member("pg-2", MemberRole.REPLICA, "streaming", 1, BIG))
    with pytest.raises(StateError, match="no streaming replica fit"):
        plan_switchover(view, SPEC, None)
    assert catch_up_window(view, SPEC, None) == 2 * SPEC.timing.loop_wait + 5
    assert catch_up_window(view, SPEC, "pg-2") > 0


def test_no_window_without_a_replica_that_replicates() -> None:
    stopped = _view(Member("pg-2", MemberRole.REPLICA, "stopped", None, None))
    assert catch_up_window(stopped, SPEC, None) == 0
    assert catch_up_window(_view(), SPEC, None) == 0
    assert catch_up_window(stopped, SPEC, "pg-3") == 0  # not registered


def test_a_caught_up_replica_is_planned() -> None:
    view = _view(Member("pg-2", MemberRole.SYNC_STANDBY, "streaming", 1, 0))
    assert plan_switchover(view, SPEC, None).candidate == "pg-2"
