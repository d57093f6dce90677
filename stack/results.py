"""What each flow returns: one pydantic model per operation.

Prefect stores them as the flow run's result, the CLI renders them as tables and `--json`
dumps them (`model_dump(mode="json", by_alias=True)`), so the field names are the JSON keys
users and scripts read. Pure data: no I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stack.site import SiteRow


class Result(BaseModel):
    """Base of every flow result: JSON-serialisable, aliases kept on dump."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


# ---- status ----


class MemberRow(Result):
    """One container of the cluster as status shows it (Patroni columns only for nodes)."""

    member: str
    role: str  # the component: etcd | patroni | haproxy
    container: str
    container_state: str
    health: str
    pg_role: str = ""
    pg_state: str = ""
    timeline: int | None = None
    lag_bytes: int | None = None
    delay: str = ""  # a delayed replica's `delayed:` delay (e.g. 1h); "" = replays at once


class ClusterStatus(Result):
    scope: str
    # How a user names it: `cluster life (generation life-green, PostgreSQL 17)` (stack.generations).
    cluster: str = ""
    members: list[MemberRow] = Field(default_factory=list)
    endpoints: dict[str, str] = Field(default_factory=dict)
    readiness: str = ""
    healthy: bool = False
    problems: list[str] = Field(default_factory=list)
    # Clusters shown with this one: the green of a major upgrade in progress (`<scope>-green`).
    companions: list[ClusterStatus] = Field(default_factory=list)


# ---- bootstrap / teardown ----


class BootstrapResult(Result):
    scope: str
    image: str
    outcomes: dict[str, str]  # member -> created | recreated | started | unchanged
    elapsed_s: float
    status: ClusterStatus

    @property
    def changed(self) -> list[str]:
        return sorted(k for k, v in self.outcomes.items() if v != "unchanged")


class TeardownResult(Result):
    scope: str
    containers: list[str] = Field(default_factory=list)
    networks: list[str] = Field(default_factory=list)
    volumes: list[str] = Field(default_factory=list)
    state_removed: bool = False
    kept: list[str] = Field(default_factory=list)  # backup repository kept by `down --volumes` (no purge)
    state_moved_to: str = ""  # where the secrets it needs were moved ('' when deleted or kept in place)


# ---- drills ----


class DrillResult(Result):
    kind: str
    target: str
    old_leader: str
    new_leader: str
    timeline_before: int | None
    timeline_after: int | None
    write_gap_s: float
    read_gap_s: float
    writes_acked: int
    write_errors: int
    lost_writes: list[int]
    recovered_s: float | None = None  # fault -> writes flowing again on a leader
    whole_s: float | None = None  # fault -> every member back, replicas streaming
    healed: bool = False
    rejoin: str = ""  # how the faulted node came back (pg_rewind, reinit, restart, …)
    chart_png: str = ""
    notes: list[str] = Field(default_factory=list)
    write_errors_seen: list[str] = Field(default_factory=list)  # "+1.23s message", first few
    timeline: str = ""  # the text chart
    longest_stall_s: float | None = None  # switchover-pooled: longest send-to-commit time through the pooler
    # Site drills (site-switchover, site-loss): target is the old primary site, new_leader the
    # promoted site's leader; lost_writes of site-loss are its RPO (asynchronous standby).
    old_site: str | None = None  # the primary site before the drill
    new_site: str | None = None  # the primary site after it
    rpo_s: float | None = None  # site-loss: seconds of acknowledged writes missing on the promoted site
    rto_s: float | None = None  # site-loss: from the failover command to the first write the promoted site took
    failover_s: float | None = None  # site-loss: the failover itself (fence, promote) until writable
    operator_action: str | None = None  # what the operator must run when the drill could not restore both sites
    rebuild: str | None = None  # site-loss: how the old site was rebuilt ("rewound" or "cloned afresh")
    rebuild_discarded_commits: int | None = None  # site-loss: commits of the old site the rebuild discarded
    returned_writes: int | None = None  # site-loss --kill-hosts: rows the old site took once its hosts came back
    returned_kept: int | None = None  # ... of those, still on the rebuilt old site (must be 0)


# ---- backups ----


class VerifyResult(Result):
    scope: str
    label: str | None
    ok: bool = False
    type: str = ""
    error: str = ""
    amcheck: str = ""
    canary: str = ""
    databases: str = ""
    removed: list[str] = Field(default_factory=list)
    duration_s: float = 0.0
    verify_s: float | None = None
    restore_s: float | None = None
    recovery_s: float | None = None
    amcheck_s: float | None = None


class BackupResult(Result):
    label: str
    type: str
    source: str
    from_standby: bool
    size_mb: float
    stored_mb: float
    duration_s: float
    mb_per_s: float
    wal_start: str
    wal_stop: str
    expired: str  # comma-separated labels expired by retention
    canary: str
    canary_count: int
    sets: list[str]
    verification: VerifyResult | None = None


class DumpFile(Result):
    database: str
    file: str
    size_mb: float
    duration_s: float


class DumpResult(Result):
    set: str
    dir: str
    source: str
    files: list[DumpFile]
    removed: list[str]


class RestoreResult(Result):
    source: str
    into: str
    target: str
    from_set: str
    restore_s: float
    duration_s: float
    in_place: bool = False
    timeline: int | None = None
    history_archived: str = ""
    discarded: str = ""
    # In place only: how long each step took.
    preflight_s: float | None = None
    stop_s: float | None = None
    restore_and_replay_s: float | None = None
    rebuild_s: float | None = None
    archive_check_s: float | None = None
    status: ClusterStatus | None = None


# ---- audit ----


class FindingRow(Result):
    check: str
    target: str
    status: str  # ok | warn | critical
    observed: str
    threshold: str = ""
    hint: str = ""


class AuditReport(Result):
    scope: str
    status: str  # ok | warn | critical
    message: str
    summary: str = ""  # one line: counts, paused, the first critical or warning
    elapsed_s: float
    findings: list[FindingRow]


# ---- rolling changes ----


class UpgradeRow(Result):
    node: str
    image_before: str = Field(alias="image before")
    version_before: str = Field(alias="version before")
    version_after: str = Field(alias="version after")
    image_after: str = Field(alias="image after")


class UpgradeResult(Result):
    target: str
    steps: list[str]
    already: list[str]
    before: dict[str, int | None]
    after: dict[str, int | None]
    rows: list[UpgradeRow]
    elapsed_s: float
    events: list[str]


class ConfigSetResult(Result):
    parameters: dict[str, str]
    needs_restart: dict[str, bool]
    restarted: list[str]
    values: dict[str, dict[str, str]]
    events: list[str]
    elapsed_s: float


class ScaleResult(Result):
    plan: str
    nodes: int
    events: list[str]
    elapsed_s: float


class EtcdReplaceResult(Result):
    member: str
    old_id: str
    new_id: str
    events: list[str]
    elapsed_s: float


# ---- switchover ----


class SwitchoverTimes(Result):
    """How one planned switchover went (seconds from its start unless said otherwise)."""

    leader: str
    candidate: str
    pooled: bool = False  # the pooler was paused around it
    paused_s: float | None = None  # time PAUSE took (in-flight transactions finishing)
    routed_s: float | None = None  # from the Patroni request to HAProxy routing the candidate
    resumed_s: float = 0.0  # the pooler's clients waited at most about this long
    whole_s: float = 0.0  # until the old leader replicates again
    note: str = ""  # why the runtime API did not route (the health checks did), if it did not


class SwitchoverResult(Result):
    scope: str
    times: SwitchoverTimes
    status: ClusterStatus
    elapsed_s: float
# ---- the operator's verbs ----


class RestartResult(Result):
    scope: str
    restarted: list[str]
    switchover: str = ""  # "pg-1 -> pg-2" when the leader's turn moved the leadership
    leader: str = ""
    events: list[str] = Field(default_factory=list)
    elapsed_s: float = 0.0


class ReinitResult(Result):
    scope: str
    member: str
    leader: str
    events: list[str] = Field(default_factory=list)
    elapsed_s: float = 0.0


class RecoverDelayedResult(Result):
    """A table brought back from a delayed replica into the primary."""

    scope: str
    table: str  # schema.table
    database: str
    source: str  # the delayed replica it was dumped from
    primary: str  # where it was restored
    rows: int  # rows of the restored table on the primary
    replay_paused_s: float  # how long replay stood still on the source
    maintenance: bool  # whether Patroni's maintenance mode was switched on (and off again) for it
    events: list[str] = Field(default_factory=list)
    elapsed_s: float = 0.0


class PauseResult(Result):
    scope: str
    paused: bool
    changed: bool
    elapsed_s: float = 0.0


class HistoryRow(Result):
    timeline: int
    time: str
    new_leader: str
    cause: str
    detail: str


class HistoryResult(Result):
    scope: str
    leader: str
    timeline: int | None
    rows: list[HistoryRow]


class BackupRow(Result):
    label: str
    type: str
    started: str
    stopped: str
    size_bytes: int | None = None
    repo_bytes: int | None = None
    wal_start: str = ""
    wal_stop: str = ""
    verified: str = ""  # passed | FAILED: why | never


class BackupsResult(Result):
    scope: str
    sets: list[BackupRow]
    recoverable_from: str = ""
    recoverable_to: str = ""
    archive_min: str = ""
    archive_max: str = ""


class ReportResult(Result):
    scope: str
    path: str
    files: list[str]
    bytes: int
    secrets_checked: int


# ---- major upgrade (blue/green) ----


class MajorUpgradeResult(Result):
    """What `pgha upgrade --major` did: the action taken, versions, the write gap and the copy."""

    action: str  # stack.major.Action
    reason: str
    phase: str  # where the upgrade stands now ('' when no upgrade is in progress any more)
    blue_scope: str
    green_scope: str
    version_before: int | None = None
    version_after: int | None = None
    write_gap_s: float | None = None
    # --finish: the clients' ports handed from blue's HAProxy to green's own; how long they refused.
    handover_gap_s: float | None = None
    bytes_copied: int | None = None
    tables: int | None = None
    backup_label: str = ""  # green's first full backup (its own stanza), taken after the cutover
    backup_verified: bool | None = None  # its restore verified (None: backups off in the spec)
    audit: str = ""  # green's health audit after the cutover: "<status>: <summary>"
    durations: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    events: list[str] = Field(default_factory=list)
    elapsed_s: float = 0.0


# ---- tls ----
class CertsRenewResult(Result):
    scope: str
    renewed: bool
    detail: str  # which certificate expires when, and what was decided
    rotation: CertsRotateResult | None = None  # the rotation that renewed them


class CertsRotateResult(Result):
    scope: str
    old_not_after: str
    new_not_after: str
    endpoints: int  # TLS endpoints checked to serve the new certificate
    restarts: int = 0  # PostgreSQL/Patroni/etcd restarts (the rotation reloads only)
    switchovers: int = 0
    events: list[str] = Field(default_factory=list)
    elapsed_s: float = 0.0


class SiteStatusResult(Result):
    """`pgha site status`: each site's role and, for a standby site, how far behind it replays."""

    scope: str
    sites: list[SiteRow] = Field(default_factory=list)
    elapsed_s: float = 0.0


class SiteSwitchoverResult(Result):
    """`pgha site switchover`: the primary site demoted to a standby, the standby site promoted."""

    scope: str  # the new primary site
    old_primary: str  # the old primary site, now a standby of `scope`
    leader: str  # the new primary site's leader
    demoted_lsn: str  # the demoted primary's last WAL, replayed by `scope` before its promotion
    caught_up_s: float  # from the demotion until `scope` had replayed it
    write_gap_s: float  # from the demotion until `scope` accepted writes on its R/W port
    old_primary_follows: bool  # the old primary site streams from the new one
    slot: str  # the old primary site's slot on the new one
    old_slot: str  # the new primary site's slot on the old one: removed, absent, or why not
    events: list[str] = Field(default_factory=list)
    elapsed_s: float = 0.0


class SiteFailoverResult(Result):
    """`pgha site failover`: the standby site promoted, the old primary site fenced when reachable."""

    scope: str
    old_primary: str
    leader: str
    fenced: list[str] = Field(default_factory=list)  # the old primary site's containers stopped
    operator_action: str | None = None  # what the operator must do when the old site was not reachable
    slot: str
    writable_after_s: float
    events: list[str] = Field(default_factory=list)
    elapsed_s: float = 0.0


class SiteRebuildResult(Result):
    """`pgha site rebuild`: the old primary site made a standby of the new one, its data rewound or cloned afresh."""

    scope: str
    standby_of: str  # the primary site it follows now
    method: str = "cloned afresh"  # "rewound" (its data kept) or "cloned afresh"
    why: str = ""  # why that method (and, when a rewind was tried and failed, why it failed)
    fenced: list[str] = Field(default_factory=list)  # its nodes stopped first (a site that came back)
    old_leader: str | None = None  # the node whose data was kept
    system_id: str | None = None  # its database system identifier (the new primary site's too)
    rewind: str | None = None  # Patroni's pg_rewind: "ran", "not run" (nothing to rewind), "failed"
    discarded: str = ""  # what the old site wrote that the new one never received, as one line
    discarded_commits: int | None = None  # transactions committed on the old site that pg_rewind discarded
    discarded_lsn: str | None = None  # their WAL range, start..end
    discarded_bytes: int | None = None
    rebuild_s: float | None = None  # from the start of the rewind (or clone) to streaming
    removed: list[str] = Field(default_factory=list)  # its containers and volumes replaced (a clone)
    streaming: bool  # its standby leader streams from the primary site
    events: list[str] = Field(default_factory=list)
    elapsed_s: float = 0.0


class SitePromoteResult(Result):
    """`pgha site promote`: a standby site made a primary site."""

    scope: str
    primary_site: str  # the site it followed
    leader: str  # the promoted leader
    primary_was_writable: bool  # the old primary site still accepted writes (the operator allowed it)
    slot: str  # the standby's slot on the old primary site: removed, absent, or why not
    writable_after_s: float  # from the DCS change to the first write accepted on the R/W port
    events: list[str] = Field(default_factory=list)
    elapsed_s: float = 0.0
