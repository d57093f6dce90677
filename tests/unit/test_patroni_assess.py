"""The 'is the cluster whole?' decision, from observed /cluster payloads."""

from __future__ import annotations

from stack.cluster import assess
from stack.spec import ClusterSpec, parse_spec
from tasks.patroni import parse_cluster


def payload(*members: dict[str, object]) -> dict[str, object]:
    return {"members": list(members), "scope": "hy-home-db"}


LEADER = {"name": "pg-1", "role": "leader", "state": "running", "timeline": 2}
SYNC = {"name": "pg-2", "role": "sync_standby", "state": "streaming", "timeline": 2, "lag": 0}
REPL = {"name": "pg-3", "role": "replica", "state": "streaming", "timeline": 2, "lag": 16}


def test_whole_cluster() -> None:
    r = assess(parse_cluster(payload(LEADER, SYNC, REPL)), ClusterSpec())
    assert r.ok and r.reason == "leader pg-1, 2 replicas streaming"


def test_missing_member() -> None:
    r = assess(parse_cluster(payload(LEADER, SYNC)), ClusterSpec())
    assert not r.ok and r.reason == "members not registered yet: pg-3"


def test_no_leader_and_two_leaders() -> None:
    r = assess(parse_cluster(payload({**LEADER, "role": "replica", "state": "streaming", "lag": 0}, SYNC, REPL)),
               ClusterSpec())
    assert not r.ok and r.reason == "0 leaders (expected exactly one)"
    r = assess(parse_cluster(payload(LEADER, {**SYNC, "role": "leader"}, REPL)), ClusterSpec())
    assert r.reason == "2 leaders (expected exactly one)"


def test_replica_not_streaming() -> None:
    r = assess(parse_cluster(payload(LEADER, SYNC, {**REPL, "state": "starting", "lag": None})), ClusterSpec())
    assert not r.ok and r.reason == "pg-3 is starting, not streaming"


def test_timeline_mismatch() -> None:
    r = assess(parse_cluster(payload(LEADER, SYNC, {**REPL, "timeline": 1})), ClusterSpec())
    assert not r.ok and "timeline 1" in r.reason


def test_sync_standby_required_only_in_sync_mode() -> None:
    members = payload(LEADER, {**SYNC, "role": "replica"}, REPL)
    r = assess(parse_cluster(members), ClusterSpec())
    assert not r.ok and r.reason == "synchronous mode on but no synchronous standby yet"
    async_spec = parse_spec({"patroni": {"synchronous_mode": False}})
    assert assess(parse_cluster(members), async_spec).ok


def test_single_node_cluster() -> None:
    r = assess(parse_cluster(payload(LEADER)), parse_spec({"nodes": 1}))
    assert r.ok and r.reason == "leader pg-1, 0 replicas streaming"


def test_old_patroni_running_replica_with_lag_counts_as_streaming() -> None:
    old = {"name": "pg-2", "role": "sync_standby", "state": "running", "timeline": 2, "lag": 0}
    assert assess(parse_cluster(payload(LEADER, old)), parse_spec({"nodes": 2})).ok


def test_replica_without_timeline_is_not_whole() -> None:
    broken = {"name": "pg-3", "role": "replica", "state": "running", "lag": 0}
    r = assess(parse_cluster(payload(LEADER, SYNC, broken)), ClusterSpec())
    assert not r.ok and r.reason == "pg-3 is running, not streaming"


def test_a_view_lacking_a_member_is_checked_against_the_other_nodes(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """pg-1's DCS cache lags (no pg-2); pg-2's view is whole and wins; a stopped node is not asked."""
    import tasks.patroni as patroni

    views = {"pg-1": payload(LEADER, REPL), "pg-2": payload(LEADER, SYNC, REPL), "pg-3": payload(LEADER)}
    asked: list[str] = []

    class _Node:
        def __init__(self, member: str) -> None:
            self.member = member

        def running(self) -> bool:
            return self.member != "pg-3"

    def get_json(_spec: ClusterSpec, member: str, path: str) -> dict[str, object]:
        asked.append(member)
        return views[member]

    monkeypatch.setattr(patroni, "node", lambda _spec, m: _Node(m))
    monkeypatch.setattr(patroni, "get_json", get_json)
    view = patroni.cluster_view(ClusterSpec())
    assert [m.name for m in view.members] == ["pg-1", "pg-2", "pg-3"] and asked == ["pg-1", "pg-2"]
    # Every view lacks a member (a node really is gone): the most complete one, all running nodes asked.
    views["pg-2"] = payload(LEADER)
    asked.clear()
    view = patroni.cluster_view(ClusterSpec())
    assert [m.name for m in view.members] == ["pg-1", "pg-3"] and asked == ["pg-1", "pg-2"]
