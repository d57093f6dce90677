"""What the audit's gatherers observe, typed: one model per system's answer.

The adapters in tasks/ (etcd, postgres, haproxy, the engine) build these from what each system
says; `stack.audit`'s checks judge them and `stack.snapshot` holds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stack.cluster import Member


@dataclass(frozen=True)
class EtcdMember:
    member: str
    healthy: bool
    is_leader: bool = False
    db_size: int | None = None
    error: str = ""


@dataclass(frozen=True)
class PatroniObs:
    members: list[Member]
    paused: bool
    liveness: dict[str, int | None]  # member -> HTTP code of /liveness (None: no answer)
    readiness: dict[str, int | None]


@dataclass(frozen=True)
class ReplicationRow:
    """A row of pg_stat_replication on the leader."""

    name: str  # application_name = Patroni member name
    state: str
    sync_state: str
    lag_bytes: int | None
    lag_s: float | None


@dataclass(frozen=True)
class Backend:
    status: str  # UP, DOWN, MAINT, "UP 1/2", ...
    chkdown: int  # UP->DOWN transitions since HAProxy started


@dataclass(frozen=True)
class HaproxyObs:
    primary: dict[str, Backend]
    replicas: dict[str, Backend]
    rw_member: str | None  # the member the R/W port reached (None: no connection)
    rw_writable: bool
    ro_member: str | None
    ro_in_recovery: bool | None  # None: R/O port not reachable
    error: str = ""


@dataclass(frozen=True)
class PostgresObs:
    connections: int
    max_connections: int
    oldest_xact_s: float | None
    oldest_idle_in_xact_s: float | None
    inactive_slots: dict[str, int]  # slot -> retained WAL bytes
    max_xid_age: int
    data_checksums: bool


@dataclass(frozen=True)
class ContainerObs:
    name: str
    member: str
    status: str  # running, exited, missing, ...
    health: str  # healthy, unhealthy, starting, "" (no health check)
    container_id: str = ""
    restart_count: int = 0
    log_driver: str = ""  # HostConfig.LogConfig: the driver and its options (max-size, max-file)
    log_options: dict[str, str] | None = None
    # `starting` and no check has run yet (State.Health.Log empty): the first check is due within
    # the health interval after a start, which is not a failing one.
    health_pending: bool = False


@dataclass(frozen=True)
class PressureObs:
    """One container's memory against its limit (the engine's stats) and OOM kills."""

    member: str
    used_bytes: int | None  # page cache the kernel can drop excluded (inactive file pages)
    limit_bytes: int | None  # None or 0: no limit
    oom_killed: bool = False  # State.OOMKilled: its last exit was an OOM kill
    oom_events: int = 0  # `oom` events of the engine in the audit's look-back window


@dataclass
class Baseline:
    """What the previous audit saw (kept in the state dir): restart counts and HAProxy flaps."""

    restarts: dict[str, tuple[str, int]] = field(default_factory=dict)  # container -> (id, RestartCount)
    chkdown: dict[str, int] = field(default_factory=dict)  # "<backend>/<server>" -> chkdown

    def to_dict(self) -> dict[str, Any]:
        return {"restarts": {k: list(v) for k, v in self.restarts.items()}, "chkdown": self.chkdown}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Baseline:
        try:
            return cls(restarts={k: (str(v[0]), int(v[1])) for k, v in dict(data.get("restarts", {})).items()},
                       chkdown={k: int(v) for k, v in dict(data.get("chkdown", {})).items()})
        except (TypeError, ValueError, IndexError, AttributeError):
            return cls()  # a damaged baseline only costs one audit's deltas


@dataclass(frozen=True)
class LeaderKeyObs:
    """Patroni's leader key and the lease (session) of the member key of the member it names."""

    holder: str | None  # None: no leader key
    lease: int = 0  # 0: none
    holder_member_lease: int | None = None  # None: that member has no member key


@dataclass(frozen=True)
class EtcdAuthObs:
    enabled: bool  # etcd says its authentication is on
    switched_on_by_pgha: bool  # pgha's marker: it switched authentication on at creation


@dataclass(frozen=True)
class StandbyObs:
    """A standby cluster's link to its primary site (`standby_of:`), as `pgha site status` sees it."""

    receiver: str | None  # the standby leader's WAL receiver status (None: no receiver)
    lag_bytes: int | None  # the primary site's current LSN - the standby's replayed LSN (None: unknown)
    lag_s: float | None  # 0 when caught up, else the age of the last replayed transaction
