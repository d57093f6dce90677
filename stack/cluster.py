"""The cluster as pgha sees it: one `Member`, one `ClusterView`, and the decisions on them.

Parsed once at the boundary (`tasks.patroni.parse_cluster` from Patroni's /cluster JSON,
`tasks.etcd.parse_health` from etcdctl) and used by status, audit, drills, backups and the
rolling flows. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from stack.spec import ClusterSpec


class MemberRole(StrEnum):
    LEADER = "leader"
    SYNC_STANDBY = "sync_standby"
    REPLICA = "replica"
    STANDBY_LEADER = "standby_leader"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Member:
    """One Patroni member as /cluster reports it."""

    name: str
    role: MemberRole
    state: str
    timeline: int | None = None
    lag: int | None = None  # bytes behind the leader; None when unknown
    pending_restart: bool = False

    @property
    def is_leader(self) -> bool:
        """The member holding the leader lock: the primary, or a standby cluster's standby leader."""
        return self.role in (MemberRole.LEADER, MemberRole.STANDBY_LEADER)

    @property
    def is_standby_leader(self) -> bool:
        return self.role == MemberRole.STANDBY_LEADER

    @property
    def is_sync(self) -> bool:
        return self.role == MemberRole.SYNC_STANDBY

    @property
    def streaming(self) -> bool:
        # Patroni >= 3.0.4 reports "streaming"; older ones report "running" with a known lag
        # and timeline (a replica that cannot read its own timeline is not replicating).
        if self.is_leader:
            return False
        return self.state == "streaming" or (
            self.state == "running" and self.lag is not None and self.timeline is not None)


@dataclass(frozen=True)
class TimelineSwitch:
    """One row of Patroni's /history: the timeline that ended, where, why, when and the new leader."""

    timeline: int
    lsn: int = 0
    reason: str = ""
    time: str = ""  # ISO 8601 ("" when Patroni did not record it)
    new_leader: str = ""


@dataclass(frozen=True)
class ClusterView:
    members: list[Member] = field(default_factory=list)
    paused: bool = False

    def leader(self) -> Member | None:
        """The one leader (None when there is none, or more than one)."""
        leaders = [m for m in self.members if m.is_leader]
        return leaders[0] if len(leaders) == 1 else None

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    def replicas(self) -> list[Member]:
        return [m for m in self.members if not m.is_leader]

    def max_replica_lag(self) -> int | None:
        """The largest replica lag in bytes; None when any replica's lag is unknown."""
        lags = [m.lag for m in self.replicas()]
        return None if any(x is None for x in lags) else max([0, *[x for x in lags if x is not None]])


@dataclass(frozen=True)
class Readiness:
    ok: bool
    reason: str


def assess(view: ClusterView, spec: ClusterSpec) -> Readiness:
    """Is the cluster whole: every expected member present, one leader, replicas streaming?"""
    expected = set(spec.node_names())
    seen = {m.name for m in view.members}
    if missing := sorted(expected - seen):
        return Readiness(False, f"members not registered yet: {', '.join(missing)}")
    leaders = [m for m in view.members if m.is_leader]
    if len(leaders) != 1:
        return Readiness(False, f"{len(leaders)} leaders (expected exactly one)")
    leader = leaders[0]
    # A standby leader streams from the primary site: Patroni reports it "streaming" (or "running").
    if leader.state != "running" and not (leader.is_standby_leader and leader.state == "streaming"):
        return Readiness(False, f"leader {leader.name} is {leader.state}")
    if spec.standby_of is not None and not leader.is_standby_leader:
        return Readiness(False, f"leader {leader.name} is a primary, not a standby leader following "
                                f"{spec.standby_of.scope} (promoted? remove standby_of from the spec)")
    for m in view.members:
        if m is not leader and not m.streaming:
            return Readiness(False, f"{m.name} is {m.state}, not streaming")
        if m is not leader and m.timeline is None:
            return Readiness(False, f"{m.name} reports no timeline")
        if m.timeline is not None and leader.timeline is not None and m.timeline != leader.timeline:
            return Readiness(False, f"{m.name} is on timeline {m.timeline}, leader on {leader.timeline}")
    # A standby leader has no synchronous standby (Patroni: synchronous replication applies to a primary).
    if spec.timing.synchronous_mode and spec.nodes > 1 and not leader.is_standby_leader:
        if not any(m.role == MemberRole.SYNC_STANDBY for m in view.members):
            return Readiness(False, "synchronous mode on but no synchronous standby yet")
    replicas = len(view.members) - 1
    if leader.is_standby_leader:
        site = spec.standby_of.scope if spec.standby_of else "another site"
        return Readiness(True, f"standby leader {leader.name} following {site}, "
                               f"{replicas} replica{'s' if replicas != 1 else ''} streaming")
    return Readiness(True, f"leader {leader.name}, {replicas} replica{'s' if replicas != 1 else ''} streaming")


def led_by(view: ClusterView, spec: ClusterSpec, member: str) -> bool:
    """`member` leads and the cluster is whole (the end of a switchover)."""
    lead = view.leader()
    return lead is not None and lead.name == member and assess(view, spec).ok


# ---- etcd ----


@dataclass(frozen=True)
class EndpointHealth:
    """One etcd endpoint's health as etcdctl reports it."""

    endpoint: str
    healthy: bool
    error: str = ""


def quorum(rows: list[EndpointHealth], members: int) -> bool:
    return sum(r.healthy for r in rows) > members // 2


@dataclass(frozen=True)
class MemberStatus:
    """One member's own view (Patroni's /patroni on the node), asked of the node itself: it
    answers even when the DCS is gone. None where Patroni says nothing."""

    state: str | None = None
    role: str | None = None
    postmaster_start_time: str | None = None
    server_version: int | None = None
    pending_restart: bool = False
    failsafe_mode_is_active: bool = False
    tags: dict[str, object] = field(default_factory=dict)

    @property
    def writable_primary(self) -> bool:
        """The node runs a primary that takes writes (Patroni < 3 says "master")."""
        return self.role in ("primary", "master") and self.state == "running"


def back_since(status: MemberStatus, since_unix: float) -> bool:
    """From a member's /patroni answer: was its PostgreSQL (re)started after `since_unix`, and
    does it replicate or lead?"""
    from datetime import datetime

    started = status.postmaster_start_time or ""
    try:
        ts = datetime.fromisoformat(started).timestamp()
    except ValueError:
        return False
    return ts >= since_unix and status.state in ("streaming", "running")
