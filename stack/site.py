"""A second site: a standby cluster that follows a primary site (Patroni `standby_cluster`).

Pure: the standby's `standby_cluster` block, the slot it streams through, how it reaches the
primary site, and the decisions of `pgha site status` / `pgha site promote`. Patroni does the
following and the promotion; pgha renders and orchestrates (`flows/site.py`).

Reachability on one engine: the standby's Patroni nodes are attached to the primary site's
Docker network (a second network of theirs) and stream from the primary site's HAProxy R/W
port by its container name, which the primary site's member certificate names, so
`sslmode=verify-full` holds. The standby cluster issues its certificates from the primary
site's CA (one trust domain for the two sites) and carries the primary's PostgreSQL passwords:
it is a physical copy, its catalog holds the primary's roles.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel

from stack.layout import HAPROXY_RW_PORT
from stack.spec import ClusterSpec

# The passwords that live in the catalog (a physical copy has the primary's): they must match.
CATALOG_SECRETS = ("superuser", "replication", "rewind")


class SiteRole(StrEnum):
    PRIMARY = "primary"  # a cluster with a writable leader
    STANDBY = "standby"  # a standby cluster: its standby leader follows another site
    DOWN = "down"  # no leader answers
    UNKNOWN = "unknown"


def primary_scope(spec: ClusterSpec) -> str:
    assert spec.standby_of is not None
    return spec.standby_of.scope


def primary_network(spec: ClusterSpec) -> str:
    """The primary site's Docker network, which the standby's nodes join (`<primary>-net`)."""
    return f"{primary_scope(spec)}-net"


def primary_endpoint(spec: ClusterSpec) -> tuple[str, int]:
    """(host, port) the standby leader streams from: the primary site's HAProxy R/W port, inside its
    network; over hosts, at the primary site's host addresses as a libpq host list (`a,b`, one port
    for all: Patroni 4.0 writes one .pgpass line per host and libpq tries them in turn)."""
    assert spec.standby_of is not None
    if spec.multi_host:
        if not spec.standby_of.hosts or spec.standby_of.port is None:
            raise ValueError(f"{spec.scope}: standby_of over hosts without the primary site's addresses "
                             "(pgha fills them from the primary's stored spec: `pgha up` the standby)")
        return ",".join(spec.standby_of.hosts), spec.standby_of.port
    return f"{primary_scope(spec)}-haproxy", HAPROXY_RW_PORT


def following(spec: ClusterSpec, primary: ClusterSpec) -> ClusterSpec:
    """`spec` (a standby of `primary`) with where it streams from filled in: over hosts, the primary
    site's host addresses and its HAProxy R/W port (every host runs one HAProxy)."""
    assert spec.standby_of is not None
    if not spec.multi_host:
        return spec
    follow = spec.standby_of.model_copy(update={"hosts": [h.address for h in primary.hosts or []],
                                                "port": primary.ports.rw})
    return spec.model_copy(update={"standby_of": follow})


def mixed_problem(spec: ClusterSpec, primary: ClusterSpec) -> str | None:
    """A standby over hosts of a one-engine primary site, or the reverse: not supported."""
    if spec.multi_host != primary.multi_host:
        return (f"{spec.scope} {'runs over hosts' if spec.multi_host else 'runs on one engine'} but its primary site "
                f"{primary.scope} {'does' if primary.multi_host else 'does not'}: both sites must run over hosts, or "
                "both on this machine's engine")
    return None


def peer_addresses(spec: ClusterSpec, others: list[ClusterSpec]) -> list[str]:
    """Over hosts: the other site's host addresses this cluster's pg_hba admits (replication both
    ways, so a switchover needs no new rule): the primary site's when `spec` is a standby, and those
    of every site (among `others`, the stored specs) that is a standby of `spec`."""
    if not spec.multi_host:
        return []
    out: list[str] = []
    for o in others:
        if o.scope == spec.scope or not o.multi_host:
            continue
        mine = spec.standby_of is not None and spec.standby_of.scope == o.scope
        theirs = o.standby_of is not None and o.standby_of.scope == spec.scope
        if mine or theirs:
            out += [h.address for h in o.hosts or [] if h.address not in out]
    return out


def slot_name(spec: ClusterSpec) -> str:
    """The permanent physical slot on the primary site for this standby (Patroni: [a-z0-9_])."""
    return "standby_" + spec.scope.replace("-", "_")


def standby_cluster(spec: ClusterSpec) -> dict[str, object]:
    """Patroni's `standby_cluster` block (bootstrap DCS): clone from and stream from the primary site."""
    host, port = primary_endpoint(spec)
    block: dict[str, object] = {"host": host, "port": port, "create_replica_methods": ["basebackup"]}
    if spec.standby_of is not None and spec.standby_of.slot:
        block["primary_slot_name"] = slot_name(spec)
    return block


def secrets_problem(primary: dict[str, str], standby: dict[str, str] | None, primary_scope: str) -> str | None:
    """A standby whose stored catalog passwords differ from the primary site's: it could never connect."""
    if standby is None:
        return None
    differ = [k for k in CATALOG_SECRETS if standby.get(k) != primary.get(k)]
    if differ:
        many = len(differ) > 1
        return (f"this cluster's stored {', '.join(differ)} password{'s differ' if many else ' differs'} from "
                f"the primary site {primary_scope}'s: a standby cluster is a physical copy and uses the primary's; "
                "bring it up under a new scope (pgha copies the primary's passwords) or remove its state directory")
    return None


def version_problem(spec: ClusterSpec, primary: ClusterSpec) -> str | None:
    if spec.postgres_version != primary.postgres_version:
        return (f"the primary site {primary.scope} runs PostgreSQL {primary.postgres_version} but this spec asks for "
                f"{spec.postgres_version}: a standby cluster is a physical copy and needs the same major version")
    return None


def tls_problem(spec: ClusterSpec, primary: ClusterSpec) -> str | None:
    if spec.tls.enabled != primary.tls.enabled:
        return (f"the primary site {primary.scope} runs {'with' if primary.tls.enabled else 'without'} TLS but this "
                f"spec asks for tls.enabled: {str(spec.tls.enabled).lower()}; both sites must agree")
    return None


class SiteRow(BaseModel):
    """One site as `pgha site status` shows it."""

    scope: str
    role: SiteRole
    leader: str | None = None
    follows: str | None = None  # the site a standby follows
    receive_lsn: str | None = None  # last WAL received (standby) / current WAL position (primary)
    replay_lsn: str | None = None  # last WAL replayed (standby)
    lag_bytes: int | None = None  # primary's current LSN - standby's replayed LSN
    lag_s: float | None = None  # now - the last replayed transaction's commit time (0 when caught up)
    streaming: bool | None = None  # the standby leader's WAL receiver is streaming


class PromoteDecision(StrEnum):
    PROCEED = "proceed"
    NOT_STANDBY = "not a standby"
    NEEDS_YES = "needs --yes"
    PRIMARY_WRITABLE = "primary site writable"


def promote_decision(is_standby: bool, yes: bool, primary_writable: bool, allow_writable: bool) -> PromoteDecision:
    """May `pgha site promote` go on? Two writable sites is a split brain the operator must choose knowingly."""
    if not is_standby:
        return PromoteDecision.NOT_STANDBY
    if not yes:
        return PromoteDecision.NEEDS_YES
    if primary_writable and not allow_writable:
        return PromoteDecision.PRIMARY_WRITABLE
    return PromoteDecision.PROCEED


def promote_refusal(decision: PromoteDecision, scope: str, primary: str) -> str | None:
    """The one line a refused promotion prints (None: go on)."""
    if decision == PromoteDecision.NOT_STANDBY:
        return f"cluster {scope} is not a standby cluster (its DCS has no standby_cluster): nothing to promote"
    if decision == PromoteDecision.NEEDS_YES:
        return (f"site promote makes {scope} a primary site that accepts writes, independent of {primary}; "
                "add --yes to confirm")
    if decision == PromoteDecision.PRIMARY_WRITABLE:
        return (f"the primary site {primary} still accepts writes: promoting {scope} now makes two writable sites "
                f"that diverge. Stop {primary}'s clients and its cluster first (`pgha down --scope {primary}`), "
                "or add --primary-writable-ok if you accept that")
    return None


def lsn_bytes(lsn: str) -> int:
    """A PostgreSQL LSN (`16/B374D848`) as a byte position."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def standby_lag(primary_lsn: str | None, replay_lsn: str | None, since_replay_s: float | None,
                receive_lsn: str | None = None, streaming: bool = False) -> tuple[int | None, float | None]:
    """(bytes, seconds) the standby replays behind the primary site: bytes from the primary's current
    LSN; seconds 0 when it has replayed everything, or when it streams and has replayed all it
    received (what the primary wrote since is in flight, or WAL without a transaction such as a
    checkpoint's: the last commit's age on an idle pair is no lag); else the age of its last
    replayed commit."""
    if primary_lsn is None or replay_lsn is None:
        return None, None
    behind = max(0, lsn_bytes(primary_lsn) - lsn_bytes(replay_lsn))
    if behind == 0:
        return 0, 0.0
    if streaming and receive_lsn is not None and lsn_bytes(replay_lsn) >= lsn_bytes(receive_lsn):
        return behind, 0.0
    return behind, None if since_replay_s is None else round(max(0.0, since_replay_s), 3)


# ---- a site switchover: the primary site demoted, the standby site promoted, no write lost ----

# A standby further behind than this is refused: it would keep the sites without a writable one
# for as long as it takes to replay the difference.
SWITCHOVER_MAX_LAG_BYTES = 64 * 1024 * 1024
# How long the standby site may take to replay the demoted primary site's last WAL before the
# switchover is abandoned and the primary site promoted back.
SWITCHOVER_CATCHUP_S = 60.0
# How long the old primary site may take to stream from the new one before the switchover
# reports it does not follow (the switchover itself is done by then).
SWITCHOVER_FOLLOW_S = 90.0


# The standby leader's retry of a lost connection during a switchover (PostgreSQL's default 5 s
# would stop writes up to 5 s longer); restored afterwards.
RETRY_PARAMETER = "wal_retrieve_retry_interval"
SWITCHOVER_RETRY_INTERVAL = "200ms"


class SwitchoverDecision(StrEnum):
    PROCEED = "proceed"
    NOT_STANDBY = "not a standby"
    NEEDS_YES = "needs --yes"
    PRIMARY_UNHEALTHY = "primary site not healthy"
    NOT_STREAMING = "standby not streaming"
    LAGGING = "standby lags"


def switchover_decision(is_standby: bool, yes: bool, primary_writable: bool, primary_healthy: bool,
                        streaming: bool, lag_bytes: int | None,
                        max_lag: int = SWITCHOVER_MAX_LAG_BYTES) -> SwitchoverDecision:
    """May `pgha site switchover` go on? Only between a healthy writable primary site and a standby
    that streams from it close behind: the standby must replay the primary's last WAL in seconds."""
    if not is_standby:
        return SwitchoverDecision.NOT_STANDBY
    if not yes:
        return SwitchoverDecision.NEEDS_YES
    if not primary_writable or not primary_healthy:
        return SwitchoverDecision.PRIMARY_UNHEALTHY
    if not streaming:
        return SwitchoverDecision.NOT_STREAMING
    if lag_bytes is None or lag_bytes > max_lag:
        return SwitchoverDecision.LAGGING
    return SwitchoverDecision.PROCEED


def switchover_refusal(decision: SwitchoverDecision, scope: str, primary: str, detail: str = "") -> str | None:
    """The one line a refused site switchover prints (None: go on)."""
    if decision == SwitchoverDecision.NOT_STANDBY:
        return (f"cluster {scope} is not a standby cluster (no standby_of, or its DCS has no standby_cluster): "
                "run site switchover on the standby site")
    if decision == SwitchoverDecision.NEEDS_YES:
        return (f"site switchover demotes {primary} to a standby of {scope} and makes {scope} the primary site "
                "(writes stop for a few seconds); add --yes to confirm")
    if decision == SwitchoverDecision.PRIMARY_UNHEALTHY:
        return (f"the primary site {primary} is not healthy ({detail or 'no writable leader'}): a switchover needs "
                f"both sites up; use `pgha site failover --scope {scope} --yes` if {primary} is lost")
    if decision == SwitchoverDecision.NOT_STREAMING:
        return (f"{scope}'s standby leader does not stream from {primary} ({detail or 'no WAL receiver'}): it could "
                "not receive the primary's last WAL; see `pgha site status`")
    if decision == SwitchoverDecision.LAGGING:
        return (f"{scope} replays {detail or 'an unknown amount'} behind {primary} (the bound is "
                f"{SWITCHOVER_MAX_LAG_BYTES // (1024 * 1024)} MiB): wait until it catches up (`pgha site status`)")
    return None


def switchover_link(spec: ClusterSpec, leader_address: str | None) -> dict[str, object] | None:
    """The standby site's `standby_cluster` for the time of a site switchover, when it must differ
    from its own (None: it does not). Over hosts, with a slot, Patroni adds
    `target_session_attrs=read-write` to a standby leader's link whose host is a list (`a,b`), so it
    would never connect to the demoted site's standby leader and could not receive its last WAL:
    for the switchover it streams through one host of the primary site, the leader's (each host's
    HAProxy routes R/W to whichever node holds the leader lock, primary or standby leader)."""
    block = standby_cluster(spec)
    if "," not in str(block["host"]) or "primary_slot_name" not in block:
        return None
    hosts = str(block["host"]).split(",")
    return {**block, "host": leader_address if leader_address in hosts else hosts[0]}


def demoted_spec(primary: ClusterSpec, standby: ClusterSpec) -> ClusterSpec:
    """The old primary site's spec after a switchover: a standby of the new primary site, through a
    slot when the standby used one (by default when it was none). ValueError (its one line) when
    that spec is not a valid standby (backups on, declared roles: a standby cluster has neither)."""
    from pydantic import ValidationError

    slot = standby.standby_of.slot if standby.standby_of is not None else True
    data = {**primary.model_dump(mode="json"), "standby_of": {"scope": standby.scope, "slot": slot}}
    try:
        return following(ClusterSpec.model_validate(data), standby.model_copy(update={"standby_of": None}))
    except ValidationError as exc:
        why = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ValueError(f"{primary.scope} cannot become a standby of {standby.scope}: {why}") from None


def caught_up(replay_lsn: str | None, target_lsn: str | None) -> bool:
    """The standby has replayed up to `target_lsn` (the demoted primary's last WAL)."""
    return replay_lsn is not None and target_lsn is not None and lsn_bytes(replay_lsn) >= lsn_bytes(target_lsn)
