"""One observation of a cluster: what every system said at one moment, typed, asked once.

Pure data: `tasks/observe.py` fills a `ClusterSnapshot` (each system asked once, side by side)
and the views are computed from it — `pgha status` (`stack.status.judge`), the health audit's
checks (`flows/audit.py` `decide`, the functions of `stack.audit*`), the Prometheus sample.
Each part is an `Observed`: the value, or the one-line reason there is none (a dead component
is an observation, never a crash of the view), or "not asked" (a view asks only the parts it
judges: `pgha status` does not pay for the audit's disk and memory probes).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Generic, TypeVar

from stack.appdb import Catalog
from stack.audit_backup import ArchiverObs, RepoObs
from stack.audit_obs import (
    Backend,
    ContainerObs,
    EtcdAuthObs,
    EtcdMember,
    HaproxyObs,
    LeaderKeyObs,
    PatroniObs,
    PostgresObs,
    PressureObs,
    ReplicationRow,
    StandbyObs,
)
from stack.audit_sizes import DiskObs, RepoSizeObs, ServerDbObs
from stack.cluster import ClusterView, EndpointHealth, TimelineSwitch
from stack.fencing import Counters
from stack.pooler import PoolerObs
from stack.tls import CertInfo

T = TypeVar("T")


@dataclass(frozen=True)
class Observed(Generic[T]):
    """One part of the snapshot: its value, or why there is none (`error`), or not asked."""

    value: T | None = None
    error: str = ""  # the whole message (status shows it); `brief` is the audit's one line
    asked: bool = False

    @property
    def brief(self) -> str:
        """The error's first line, at most 200 characters (an audit row's observed value)."""
        return (self.error.splitlines() or [""])[0][:200]

    def pair(self) -> tuple[T | None, str]:
        """(value, brief error): the shape the audit's decisions take."""
        return self.value, self.brief


@dataclass(frozen=True)
class ContainersObs:
    """Every cluster container the engines listed, and the engines that did not answer (many hosts)."""

    rows: list[ContainerObs]
    engine_errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EtcdObs:
    """etcd's endpoint health (what status judges) and, when asked, each member's leadership and DB size."""

    health: list[EndpointHealth]
    members: list[EtcdMember] | None = None


@dataclass(frozen=True)
class PatroniState:
    """Patroni's view of the cluster and, when asked, each member's /liveness and /readiness."""

    view: ClusterView
    liveness: dict[str, int | None] = field(default_factory=dict)  # member -> HTTP code (None: silent)
    readiness: dict[str, int | None] = field(default_factory=dict)

    def audit_obs(self) -> PatroniObs:
        return PatroniObs(members=list(self.view.members), paused=self.view.paused,
                          liveness=self.liveness, readiness=self.readiness)


FencerStats = dict[str, tuple[Counters | None, str]]  # member -> (counters, why none)


@dataclass(frozen=True)
class ClusterSnapshot:
    """Every part a view may ask for; a part not asked stays `Observed()` (asked=False)."""

    scope: str
    taken_at: float = 0.0  # unix time the gathering started
    elapsed_s: float = 0.0  # how long the gathering took
    took_s: dict[str, float] = field(default_factory=dict)  # part -> seconds it took (where the time goes)
    containers: Observed[ContainersObs] = Observed()
    resources: Observed[list[PressureObs]] = Observed()
    etcd: Observed[EtcdObs] = Observed()
    etcd_auth: Observed[EtcdAuthObs] = Observed()  # with TLS only (authentication needs it)
    leader_key: Observed[LeaderKeyObs] = Observed()
    patroni: Observed[PatroniState] = Observed()
    failsafe: Observed[tuple[bool, list[str]]] = Observed()  # (failsafe_mode configured, members on it now)
    replication: Observed[list[ReplicationRow]] = Observed()
    backends: Observed[tuple[dict[str, Backend], dict[str, Backend]]] = Observed()  # HAProxy (primary, replicas)
    haproxy: Observed[HaproxyObs] = Observed()
    session: Observed[str | None] = Observed()  # why no new session opens through R/W (None: it does)
    postgres: Observed[PostgresObs] = Observed()
    disks: Observed[dict[str, DiskObs | None]] = Observed()
    pooler: Observed[PoolerObs] = Observed()
    apps: Observed[tuple[Catalog, dict[str, str]]] = Observed()
    fencing: Observed[FencerStats] = Observed()
    tls: Observed[list[CertInfo]] = Observed()
    archiving: Observed[ArchiverObs] = Observed()
    backups: Observed[RepoObs] = Observed()
    repo_size: Observed[RepoSizeObs] = Observed()
    server_db: Observed[ServerDbObs] = Observed()
    site: Observed[StandbyObs] = Observed()  # a standby cluster's link to its primary site
    history: Observed[list[TimelineSwitch]] = Observed()  # Patroni's timeline switches (GET /history), oldest first

    @classmethod
    def parts(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if isinstance(f.default, Observed))

    def leader(self) -> str | None:
        """The one member Patroni calls leader (None: none, several, or Patroni not seen)."""
        p = self.patroni.value
        lead = p.view.leader() if p else None
        return lead.name if lead else None
