"""A second site: `pgha site status`, `promote`, `switchover`, `failover` (stack/site.py decides; Patroni acts).

status: each site's role, and for a standby site the bytes and seconds it replays behind the
primary site and the last WAL it replayed. promote (a site failover): Patroni's `standby_cluster`
is removed from the standby site's dynamic configuration, so its standby leader promotes itself
and its replicas follow it; refused without `--yes`, and while the primary site still accepts
writes unless the operator says so (two writable sites diverge). The standby's slot on the old
primary site is removed when that site answers; the stored spec drops `standby_of`.

switchover (controlled, no acknowledged write lost): the primary site is demoted through its
dynamic configuration (Patroni stops its leader and restarts it as a standby leader following the
standby site), the standby site replays the demoted primary's last WAL (streamed on from the
demoted site, which serves it as a cascading standby), then is promoted; the old primary site
follows it. Both stored specs are swapped. failover: the standby site promoted and the old
primary site fenced (its Patroni nodes stopped) when the engine still reaches it. rebuild: the
old primary site cloned afresh from the new one as its standby (its containers and volumes
replaced, its passwords and CA kept: they are the new primary site's too).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.steps import preflight_once
from flows.steps.cluster import cluster_status, store_spec
from flows.steps.converge import converge
from flows.steps.ops import current, mutating_flow, note
from flows.steps.standby import primary_of
from stack import site
from stack.backup import repo_volume
from stack.errors import PghaError, StateError, UsageError
from stack.results import (
    SiteFailoverResult,
    SitePromoteResult,
    SiteRebuildResult,
    SiteStatusResult,
    SiteSwitchoverResult,
)
from stack.site import SiteRole, SiteRow
from stack.site_rebuild import (
    REWIND_WAIT_S,
    DataDir,
    Discarded,
    Divergence,
    RebuildMethod,
    RewindLog,
    discarded_line,
    old_leader,
    parse_history,
    rebuild_method,
    rewind_log,
)
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_hosts, etcd, node_exec, patroni, pg_data, postgres
from tasks.cluster_limit import cluster_limit
from tasks.cluster_resources import ensure_image
from tasks.host.lock import WaitSeconds, holder_name, mutating
from tasks.host.secrets import cluster_secrets
from tasks.members import place_member
from tasks.standby_slot import drop_primary_slot, ensure_primary_slot


def _position(spec: ClusterSpec) -> postgres.WalPosition | None:
    try:
        return postgres.wal_position(spec, cluster_secrets(spec.scope))
    except PghaError:
        return None


def site_rows(spec: ClusterSpec) -> list[SiteRow]:
    """This site, and the primary site it follows when it is a standby."""
    mine = _position(spec)
    if spec.standby_of is None:
        role = SiteRole.DOWN if mine is None else SiteRole.PRIMARY if not mine.in_recovery else SiteRole.UNKNOWN
        return [SiteRow(scope=spec.scope, role=role, leader=_leader(spec),
                        receive_lsn=mine.current_lsn if mine else None)]
    primary = primary_of(spec)
    theirs = _position(primary)
    p_role = (SiteRole.DOWN if theirs is None else SiteRole.PRIMARY if not theirs.in_recovery else SiteRole.UNKNOWN)
    rows = [SiteRow(scope=primary.scope, role=p_role, leader=_leader(primary),
                    receive_lsn=theirs.current_lsn if theirs else None)]
    if mine is None:
        rows.append(SiteRow(scope=spec.scope, role=SiteRole.DOWN, follows=primary.scope))
        return rows
    lag_b, lag_s = site.standby_lag(theirs.current_lsn if theirs else None, mine.replay_lsn, mine.since_replay_s,
                                    mine.receive_lsn, mine.receiver == "streaming")
    rows.append(SiteRow(scope=spec.scope, role=SiteRole.STANDBY if mine.in_recovery else SiteRole.PRIMARY,
                        leader=_leader(spec), follows=primary.scope if mine.in_recovery else None,
                        receive_lsn=mine.receive_lsn, replay_lsn=mine.replay_lsn, lag_bytes=lag_b, lag_s=lag_s,
                        streaming=mine.receiver == "streaming" if mine.in_recovery else None))
    return rows


def _leader(spec: ClusterSpec) -> str | None:
    try:
        lead = patroni.cluster_view(spec).leader()
    except PghaError:
        return None
    return lead.name if lead else None


@flow(name="site-status", description="Each site's role; a standby site's lag (bytes, seconds) and last WAL replayed.")
def site_status(spec: ClusterSpec = ClusterSpec()) -> SiteStatusResult:  # noqa: B008 - pydantic default is immutable
    started = time.monotonic()
    rows = site_rows(spec)
    create_table_artifact(key=f"{spec.scope}-site-status", table=[r.model_dump(mode="json") for r in rows],
                          description=f"sites of {spec.scope}")
    return SiteStatusResult(scope=spec.scope, sites=rows, elapsed_s=round(time.monotonic() - started, 2))


def promote_preflight(spec: ClusterSpec, yes: bool, primary_writable_ok: bool) -> tuple[ClusterSpec, bool]:
    """Refusals before anything changes (one line); (the primary site's spec, whether it is writable)."""
    if spec.standby_of is None:
        raise UsageError(site.promote_refusal(site.PromoteDecision.NOT_STANDBY, spec.scope, "") or "")
    primary = primary_of(spec)
    config = patroni.dynamic_config(spec)
    is_standby = bool(config.get("standby_cluster"))
    theirs = _position(primary)
    writable = theirs is not None and not theirs.in_recovery
    decision = site.promote_decision(is_standby, yes, writable, primary_writable_ok)
    if why := site.promote_refusal(decision, spec.scope, primary.scope):
        raise (StateError if decision == site.PromoteDecision.PRIMARY_WRITABLE else UsageError)(why)
    return primary, writable


@flow(name="site-promote",
      description="Site failover: the standby site's standby leader promoted (standby_cluster removed via Patroni).")
@mutating_flow("site-promote")
def site_promote(spec: ClusterSpec = ClusterSpec(), yes: bool = False,  # noqa: B008
                 primary_writable_ok: bool = False, wait_seconds: WaitSeconds = 0) -> SitePromoteResult:
    primary, writable = preflight_once(promote_preflight, spec, yes, primary_writable_ok)
    if writable:
        note(f"the primary site {primary.scope} still accepts writes (allowed by --primary-writable-ok)")
    lead, writable_s, slot = promote_site(spec, primary)
    return SitePromoteResult(scope=spec.scope, primary_site=primary.scope, leader=lead,
                             primary_was_writable=writable, slot=slot, writable_after_s=writable_s,
                             events=current().events, elapsed_s=current().elapsed())


def promote_site(spec: ClusterSpec, primary: ClusterSpec) -> tuple[str, float, str]:
    """Promote the standby site `spec` (standby_cluster removed) and store it as a primary site;
    (its leader, seconds until it took writes, what became of its slot on `primary`)."""
    t0 = time.monotonic()
    patroni.patch_config(spec, {"standby_cluster": None})
    note("standby_cluster removed from the dynamic configuration")
    promoted = spec.model_copy(update={"standby_of": None})
    view = wait_for("the standby leader to promote", lambda: patroni.cluster_view(spec),
                    lambda v: (lead := v.leader()) is not None and not lead.is_standby_leader,
                    timeout=spec.timing.ttl * 3 + 30, interval=0.1)
    lead = view.leader()
    assert lead is not None
    postgres.wait_writable(spec, cluster_secrets(spec.scope), timeout=60)
    writable_s = round(time.monotonic() - t0, 2)
    note(f"{lead.name} leads {spec.scope} and accepts writes after {writable_s}s")
    store_spec(promoted)  # the cluster runs as a primary site now: status, audit and `up` treat it so
    note("stored spec: standby_of removed (remove it from your spec file too)")
    try:
        slot = drop_primary_slot(spec, primary) if spec.standby_of and spec.standby_of.slot else "none"
    except PghaError as exc:
        slot = f"not removed ({exc}); remove it from {primary.scope}'s slots when that site is back"
    note(f"slot {site.slot_name(spec)} on {primary.scope}: {slot}")
    return lead.name, writable_s, slot


@contextmanager
def site_lock(scope: str, operation_name: str, wait_seconds: float = 0) -> Iterator[None]:
    """The other site's mutating lock too: a site operation changes both clusters."""
    holder = holder_name(operation_name)
    with cluster_limit(scope, holder, wait_seconds=wait_seconds), mutating(scope, holder, wait_seconds=wait_seconds):
        yield


# ---- site switchover ----


def switchover_preflight(spec: ClusterSpec, yes: bool) -> tuple[ClusterSpec, ClusterSpec]:
    """Refusals before anything changes (one line); (the primary site's spec, its spec as a standby)."""
    if spec.standby_of is None:
        raise UsageError(site.switchover_refusal(site.SwitchoverDecision.NOT_STANDBY, spec.scope, "") or "")
    primary = primary_of(spec)
    try:
        demoted = site.demoted_spec(primary, spec)
    except ValueError as exc:
        raise StateError(str(exc)) from None
    is_standby = bool(patroni.dynamic_config(spec).get("standby_cluster"))
    if not is_standby or not yes:
        decision = site.switchover_decision(is_standby, yes, True, True, True, 0)
        raise UsageError(site.switchover_refusal(decision, spec.scope, primary.scope) or "")
    theirs, mine = _position(primary), _position(spec)
    writable = theirs is not None and not theirs.in_recovery
    health = cluster_status(primary) if writable else None
    healthy = health is not None and health.healthy
    streaming = mine is not None and mine.in_recovery and mine.receiver == "streaming"
    lag_b, _ = site.standby_lag(theirs.current_lsn if theirs else None, mine.replay_lsn if mine else None, None)
    decision = site.switchover_decision(True, True, writable, healthy, streaming, lag_b)
    detail = {site.SwitchoverDecision.PRIMARY_UNHEALTHY: "; ".join(health.problems[:2]) if health else "",
              site.SwitchoverDecision.NOT_STREAMING: f"receiver: {mine.receiver}" if mine else "it does not answer",
              site.SwitchoverDecision.LAGGING: f"{lag_b} bytes" if lag_b is not None else ""}.get(decision, "")
    if why := site.switchover_refusal(decision, spec.scope, primary.scope, detail):
        raise StateError(why)
    return primary, demoted


def join_site_network(spec: ClusterSpec, other: ClusterSpec) -> list[str]:
    """`spec`'s Patroni nodes attached to `other`'s network (live, no restart), so they reach its
    HAProxy by name; the nodes that had to be attached. Over hosts none: they reach it at its hosts' addresses."""
    if spec.multi_host:
        return []
    eng = docker_hosts.engines(spec).default
    return [m for m in spec.node_names() if eng.connect(spec.container(m), other.network)]


def _follow_haproxy(spec: ClusterSpec) -> str:
    """Re-place the HAProxy of `spec` (its rendering as a standby routes R/W to whichever member
    holds the leader lock, a primary or a standby leader); the container's outcome."""
    return place_member(spec, "haproxy", spec.haproxy_member, ensure_image(spec), "")


def _demote(primary: ClusterSpec, demoted: ClusterSpec) -> None:
    """The primary site's dynamic configuration gets `standby_cluster`: Patroni stops its leader
    and starts it again as a standby leader following the new primary site."""
    patroni.patch_config(primary, {"standby_cluster": site.standby_cluster(demoted)})


def _standby_position(spec: ClusterSpec) -> postgres.WalPosition:
    pos = _position(spec)
    if pos is None or not pos.in_recovery:
        raise StateError(f"{spec.scope}'s R/W port reaches no standby leader yet")
    return pos


@flow(name="site-switchover",
      description="Site switchover: the primary site demoted to a standby, the standby site promoted; no write lost.")
@mutating_flow("site-switchover")
def site_switchover(spec: ClusterSpec = ClusterSpec(), yes: bool = False,  # noqa: B008
                    wait_seconds: WaitSeconds = 0) -> SiteSwitchoverResult:
    primary, demoted = preflight_once(switchover_preflight, spec, yes)
    with site_lock(primary.scope, "site-switchover", wait_seconds):
        return switch_sites(spec, primary, demoted)


def switch_sites(spec: ClusterSpec, primary: ClusterSpec, demoted: ClusterSpec) -> SiteSwitchoverResult:
    """The site switchover's steps (the caller holds both sites' locks; `pgha drill site-switchover` too)."""
    # 1. The primary site readied to follow: its nodes on the standby site's network, its HAProxy
    #    routing R/W to its leader whatever its role (the standby site keeps streaming through it
    #    after the demotion), a slot for it on the standby site.
    if joined := join_site_network(primary, spec):
        note(f"{', '.join(joined)} of {primary.scope} attached to {spec.network}")
    note(f"{primary.scope}'s HAProxy routes R/W to its leader in either role: {_follow_haproxy(demoted)}")
    postgres.wait_writable(primary, cluster_secrets(primary.scope), timeout=60)
    slot = ensure_primary_slot(demoted, spec)
    note(f"slot {site.slot_name(demoted)} for {primary.scope} on {spec.scope}: {slot}")
    # The standby leader's WAL receiver retries its lost connection every wal_retrieve_retry_interval
    # (5 s by default): shortened for the switchover, so it reconnects as soon as the demoted
    # leader serves again, instead of up to 5 s later with the writes stopped.
    before = patroni.dynamic_parameters(spec).get(site.RETRY_PARAMETER)
    _retry_interval(spec, site.SWITCHOVER_RETRY_INTERVAL)
    following = site.following(spec, primary)
    link = site.switchover_link(following, _leader_address(primary))
    try:
        if link is not None:
            _stream_through(spec, str(link["host"]))
        return _demote_and_promote(spec, primary, demoted, slot)
    finally:
        try:
            _retry_interval(spec, None if before is None else str(before), wait=False)
        except PghaError as exc:
            note(f"{site.RETRY_PARAMETER} of {spec.scope} not restored ({exc}); `pgha up --scope {spec.scope}`")
        if link is not None:
            _restore_link(spec, str(site.standby_cluster(following)["host"]))


def _leader_address(spec: ClusterSpec) -> str | None:
    """Over hosts: the address of the host running `spec`'s leader (None: none, or one engine)."""
    lead = patroni.cluster_view(spec).leader()
    host = spec.host_of(lead.name) if lead is not None and spec.multi_host else None
    return spec.host_named(host).address if host else None


def _stream_through(spec: ClusterSpec, host: str) -> None:
    """The standby site's leader streams from the primary site through `host` alone (no host list:
    no read-write requirement), before the demotion; `site.switchover_link` says why."""
    patroni.patch_config(spec, {"standby_cluster": {"host": host}})

    def through_host_alone() -> bool:
        """Its primary_conninfo names `host` alone, without the read-write requirement (only that
        is kept: the conninfo itself never goes into an error)."""
        lead = patroni.cluster_view(spec).leader()
        if lead is None:
            return False
        c = postgres.node_sql(spec, lead.name, "show primary_conninfo", read=True)
        return f"host={host} " in f"{c} " and "target_session_attrs" not in c

    wait_for(f"{spec.scope}'s standby leader to stream through {host} alone", through_host_alone, bool,
             timeout=spec.timing.loop_wait * 3 + 30, interval=0.3)
    wait_for(f"{spec.scope} to stream again", lambda: _standby_position(spec), lambda p: p.receiver == "streaming",
             timeout=60, interval=0.2)
    note(f"{spec.scope} streams through {host} alone for the switchover (a host list requires a read-write server)")


def _restore_link(spec: ClusterSpec, hosts: str) -> None:
    """The standby site (still one: the switchover failed) streams through every host of its primary again."""
    try:
        if patroni.dynamic_config(spec).get("standby_cluster"):
            patroni.patch_config(spec, {"standby_cluster": {"host": hosts}})
            note(f"{spec.scope} streams through every host of its primary site again")
    except PghaError as exc:
        note(f"{spec.scope}'s link to its primary site not restored ({exc}); `pgha up --scope {spec.scope}`")


def _retry_interval(spec: ClusterSpec, value: str | None, wait: bool = True) -> None:
    """Set (None: remove) the cluster's wal_retrieve_retry_interval; wait until its leader runs with it."""
    patroni.patch_config(spec, {"postgresql": {"parameters": {site.RETRY_PARAMETER: value}}})
    if not wait or value is None:
        return

    def current() -> str:
        lead = patroni.cluster_view(spec).leader()
        if lead is None:
            raise StateError(f"{spec.scope} has no leader")
        return postgres.node_sql(spec, lead.name, f"show {site.RETRY_PARAMETER}", read=True)

    wait_for(f"{spec.scope}'s leader to reload {site.RETRY_PARAMETER}", current, lambda v: v == value,
             timeout=spec.timing.loop_wait * 3 + 20, interval=0.2)


def _demote_and_promote(spec: ClusterSpec, primary: ClusterSpec, demoted: ClusterSpec,
                        slot: str) -> SiteSwitchoverResult:
    # 2. Demote: writes stop on the primary site. 3. The standby site replays everything the
    #    primary site wrote; else the primary site is promoted back and nothing else changes.
    before = _position(primary)
    t0 = time.monotonic()
    _demote(primary, demoted)
    note(f"standby_cluster set on {primary.scope}: its leader restarts as a standby leader")
    last = "unknown"
    try:
        pos = wait_for(f"{primary.scope} to run as a standby leader", lambda: _standby_position(primary),
                       lambda p: p.replay_lsn is not None, timeout=primary.timing.ttl * 3 + 60, interval=0.1)
        last = pos.replay_lsn or last
        if before is not None and not site.caught_up(last, before.current_lsn):
            raise StateError(f"{primary.scope}'s standby leader replayed only up to {last}, before the position "
                             f"{before.current_lsn} it had as a primary")
        note(f"{primary.scope} demoted; its last WAL ends at {last}")
        mine = wait_for(f"{spec.scope} to replay {primary.scope}'s WAL up to {last}", lambda: _standby_position(spec),
                        lambda p: site.caught_up(p.replay_lsn, last), timeout=site.SWITCHOVER_CATCHUP_S,
                        interval=0.1)
    except PghaError as exc:
        patroni.patch_config(primary, {"standby_cluster": None})
        postgres.wait_writable(primary, cluster_secrets(primary.scope), timeout=120)
        note(f"{spec.scope} did not catch up: {primary.scope} promoted back")
        try:
            drop_primary_slot(demoted, spec)
        except PghaError:
            pass  # best effort: `pgha site status` and the audit's slot rows show a slot left behind
        raise StateError(f"{spec.scope} did not replay {primary.scope}'s last WAL ({last}) within "
                         f"{site.SWITCHOVER_CATCHUP_S:g}s ({str(exc).splitlines()[0]}); {primary.scope} is the "
                         f"primary site again (on a new timeline, {spec.scope} follows it), the stored specs "
                         "unchanged") from None
    caught_s = round(time.monotonic() - t0, 2)
    note(f"{spec.scope} replayed up to {mine.replay_lsn} ({caught_s}s after the demotion)")
    # 4. Promote the standby site.
    lead, _, old_slot = promote_site(spec, primary)
    gap = round(time.monotonic() - t0, 2)
    store_spec(demoted)
    note(f"stored spec of {primary.scope}: standby_of {spec.scope} (change your spec files too)")
    # 5. The old primary site follows the new one (its standby_cluster already names it).
    target = _position(spec.model_copy(update={"standby_of": None}))
    target_lsn = target.current_lsn if target else None
    try:
        wait_for(f"{primary.scope} to stream from {spec.scope}", lambda: _standby_position(primary),
                 lambda p: p.receiver == "streaming" and site.caught_up(p.replay_lsn, target_lsn),
                 timeout=site.SWITCHOVER_FOLLOW_S, interval=0.2)
        follows = True
        note(f"{primary.scope} streams from {spec.scope}")
    except PghaError as exc:
        follows = False
        note(f"{primary.scope} does not follow {spec.scope} yet ({exc}); see `pgha site status --scope "
             f"{primary.scope}`, or rebuild it (`pgha site rebuild --scope {primary.scope} --standby-of {spec.scope} --yes`)")
    return SiteSwitchoverResult(scope=spec.scope, old_primary=primary.scope, leader=lead, demoted_lsn=last,
                                caught_up_s=caught_s, write_gap_s=gap, old_primary_follows=follows,
                                slot=slot, old_slot=old_slot, events=current().events,
                                elapsed_s=current().elapsed())


# ---- site failover ----


def failover_preflight(spec: ClusterSpec, yes: bool) -> ClusterSpec:
    """Refusals before anything changes (one line); the primary site's spec."""
    if spec.standby_of is None or not patroni.dynamic_config(spec).get("standby_cluster"):
        raise UsageError(site.promote_refusal(site.PromoteDecision.NOT_STANDBY, spec.scope, "") or "")
    primary = primary_of(spec)
    if not yes:
        raise UsageError(f"site failover makes {spec.scope} the primary site and stops {primary.scope}'s Patroni "
                         "nodes when the engine reaches them (writes not yet streamed are lost); add --yes to confirm")
    return primary


def fence_site(primary: ClusterSpec) -> tuple[list[str], str | None]:
    """Stop the old primary site's Patroni nodes (PostgreSQL stops with them) so it takes no more
    writes, each on its own engine (over hosts: its host's); (the containers stopped, None or the
    one line the operator must act on, naming every node whose engine did not answer)."""
    engines = docker_hosts.engines(primary)
    stopped: list[str] = []
    unreached: list[str] = []
    why = ""
    for m in primary.node_names():
        name = primary.container(m)
        try:
            eng = engines.of(m)
            ct = eng.find_container(name)  # raises when its engine does not answer (`running` says False)
            if ct is not None and ct.status == "running":
                eng.stop(name, timeout=10)
                stopped.append(name)
        except PghaError as exc:
            unreached.append(name)
            why = why or str(exc).splitlines()[0]
    if unreached:
        where = "its hosts" if primary.multi_host else "its engine"
        return stopped, (f"{primary.scope}'s {'engines do' if primary.multi_host else 'engine does'} not answer for "
                         f"{', '.join(unreached)} ({why}): make sure those nodes are stopped (power off {where}, or "
                         "`docker stop` them) before clients write anywhere but the new primary site; when "
                         f"{where} come{'' if primary.multi_host else 's'} back, its containers restart and its old "
                         "primary takes writes again: at once run `pgha site rebuild --scope "
                         f"{primary.scope} --standby-of <this site> --yes`, which stops them first")
    return stopped, None


@flow(name="site-failover",
      description="Site failover: the standby site promoted, the old primary site's nodes stopped when reachable.")
@mutating_flow("site-failover")
def site_failover(spec: ClusterSpec = ClusterSpec(), yes: bool = False,  # noqa: B008
                  wait_seconds: WaitSeconds = 0) -> SiteFailoverResult:
    primary = preflight_once(failover_preflight, spec, yes)
    fenced, action, lead, writable_s, slot = fail_over(spec, primary)
    return SiteFailoverResult(scope=spec.scope, old_primary=primary.scope, leader=lead, fenced=fenced,
                              operator_action=action, slot=slot, writable_after_s=writable_s,
                              events=current().events, elapsed_s=current().elapsed())


def fail_over(spec: ClusterSpec, primary: ClusterSpec) -> tuple[list[str], str | None, str, float, str]:
    """The site failover's steps: fence the old primary site, promote this one; (the containers
    stopped, the operator's action or None, the new leader, seconds until writable, the slot)."""
    fenced, action = fence_site(primary)
    if action:
        note(action)
    else:
        note(f"{primary.scope} fenced: {', '.join(fenced) or 'no node was running'}")
    theirs = _position(primary)
    if theirs is not None and not theirs.in_recovery:  # stopped nodes answer nothing: this is a safeguard
        raise StateError(f"{primary.scope} still accepts writes after its nodes were stopped: stop it by hand, then "
                         "`pgha site failover` again")
    lead, writable_s, slot = promote_site(spec, primary)
    return fenced, action, lead, writable_s, slot


# ---- site rebuild ----


def rebuild_preflight(spec: ClusterSpec, standby_of: str, yes: bool,
                      clone: bool = False) -> tuple[ClusterSpec, ClusterSpec]:
    """Refusals before anything changes (one line); (the new primary site's spec, this one's as its standby).
    A site that still accepts writes (it came back after the failover) is not refused: the rebuild
    stops its nodes first."""
    from tasks.host.generations import stored_spec

    if standby_of == spec.scope:
        raise UsageError(f"--standby-of names {spec.scope} itself: name the site that is primary now")
    try:
        primary = stored_spec(standby_of)
    except StateError:
        raise UsageError(f"--standby-of {standby_of}: no cluster '{standby_of}' was brought up from this machine") \
            from None
    theirs = _position(primary)
    if primary.standby_of is not None or theirs is None or theirs.in_recovery:
        raise StateError(f"{standby_of} is not a writable primary site: rebuild {spec.scope} as a standby of the "
                         "site that takes the writes (`pgha site status`)")
    try:
        demoted = site.demoted_spec(spec.model_copy(update={"standby_of": None}), primary)
    except ValueError as exc:
        raise StateError(str(exc)) from None
    if not yes:
        how = ("deletes its data and clones it afresh from" if clone else
               "keeps its data and rewinds it onto the timeline of (pg_rewind discards what it wrote that "
               f"{standby_of} never received; the count is reported), or clones it afresh from")
        raise UsageError(f"site rebuild stops {spec.scope}'s nodes, {how} {standby_of}, as its standby; "
                         "add --yes to confirm")
    return primary, demoted


@flow(name="site-rebuild",
      description="The old primary site made a standby of the new one: its data rewound (pg_rewind), else cloned afresh.")
@mutating_flow("site-rebuild")
def site_rebuild(spec: ClusterSpec = ClusterSpec(), standby_of: str = "", yes: bool = False,  # noqa: B008
                 clone: bool = False, wait_seconds: WaitSeconds = 0) -> SiteRebuildResult:
    primary, demoted = preflight_once(rebuild_preflight, spec, standby_of, yes, clone)
    with site_lock(primary.scope, "site-rebuild", wait_seconds):
        out = rebuild_site(spec, primary, demoted, clone)
    create_table_artifact(key=f"{spec.scope}-site-rebuild", table=[{
        "site": out.scope, "follows": out.standby_of, "method": out.method, "why": out.why,
        "pg_rewind": out.rewind or "-", "discarded": out.discarded or "-", "streaming": out.streaming,
        "seconds": out.rebuild_s}], description=f"{spec.scope} rebuilt as a standby of {primary.scope}: {out.method}")
    return out.model_copy(update={"events": current().events, "elapsed_s": current().elapsed()})


def rebuild_site(spec: ClusterSpec, primary: ClusterSpec, demoted: ClusterSpec,
                 clone: bool = False) -> SiteRebuildResult:
    """The site rebuild's steps (the caller holds both sites' locks): the old site's nodes stopped
    first (a site that came back takes writes again), then its data kept and rewound by Patroni
    onto `primary`'s timeline, else (asked, impossible, or the rewind failed) its containers and
    volumes replaced by a fresh clone of `primary`."""
    fenced, unreached = fence_site(spec)
    if unreached:
        raise StateError(f"site rebuild cannot stop {spec.scope}: {unreached}")
    note(f"{spec.scope} fenced first: {', '.join(fenced) or 'no node was running'}")
    out = SiteRebuildResult(scope=spec.scope, standby_of=primary.scope, fenced=fenced, streaming=False)
    method, why = _rebuild_method(clone, spec, primary, demoted, out)
    out.why = why
    note(f"{spec.scope}: {'rewind' if method == RebuildMethod.REWOUND else method.value} ({why})")
    if method == RebuildMethod.REWOUND:
        out = _rewind(spec, primary, demoted, out)
        if out.method == RebuildMethod.REWOUND.value:
            return out
        note(f"{spec.scope}: the rewind did not succeed ({out.why}); cloning it afresh")
    if not out.discarded:
        out.discarded = (f"the clone deletes whatever {spec.scope} wrote that {primary.scope} never received "
                         "(not counted: its data was not read)")
    else:
        out.discarded = out.discarded.replace("pg_rewind discards", "the clone deletes")
    t0 = time.monotonic()
    removed, streaming = clone_site(spec, primary, demoted)
    note(f"{spec.scope} cloned afresh; {out.discarded}")
    return out.model_copy(update={"method": RebuildMethod.CLONED.value, "removed": removed,
                                  "streaming": streaming, "rebuild_s": round(time.monotonic() - t0, 2)})


def clone_site(spec: ClusterSpec, primary: ClusterSpec, demoted: ClusterSpec) -> tuple[list[str], bool]:
    """`spec`'s containers and volumes replaced by a fresh clone of `primary`; (what was removed, whether it streams)."""
    removed: list[str] = []
    for engine in docker_hosts.engines(spec).all():
        gone = engine.remove_labelled(spec.scope, volumes=True, keep_volumes={repo_volume(spec)})
        removed += gone["containers"] + gone["volumes"]
    note(f"{spec.scope}'s containers and volumes removed ({len(removed)}); passwords and CA kept")
    drop_old_slot(spec, primary)
    store_spec(demoted)
    note(f"stored spec of {spec.scope}: standby_of {primary.scope} (change your spec file too)")
    converge(demoted)
    streaming = wait_streaming(demoted, primary, site.SWITCHOVER_FOLLOW_S)
    note(f"{spec.scope} {'streams' if streaming else 'does not stream yet'} from {primary.scope}")
    return removed, streaming


def drop_old_slot(spec: ClusterSpec, primary: ClusterSpec) -> None:
    """The slot `spec` had on a site it followed before (not `primary`) removed, when that site answers."""
    if spec.standby_of is not None and spec.standby_of.scope != primary.scope:
        old = stored_spec_or_none(spec.standby_of.scope)
        if old is not None:
            try:
                note(f"slot {site.slot_name(spec)} on {old.scope}: {drop_primary_slot(spec, old)}")
            except PghaError as exc:
                note(f"slot {site.slot_name(spec)} on {old.scope} not removed ({exc})")


def wait_streaming(demoted: ClusterSpec, primary: ClusterSpec, timeout: float) -> bool:
    """Whether `demoted`'s standby leader streams from `primary` within `timeout`."""
    try:
        wait_for(f"{demoted.scope} to stream from {primary.scope}", lambda: _standby_position(demoted),
                 lambda p: p.receiver == "streaming", timeout=timeout, interval=0.5)
    except PghaError:
        return False
    return True


def _history(primary: ClusterSpec) -> tuple[str | None, int, list[tuple[int, str]]]:
    """The new primary site's system identifier, its timeline and that timeline's history."""
    lead = patroni.cluster_view(primary).leader()
    if lead is None:
        return None, 0, []
    # The timeline of the WAL it writes now (pg_control's may still be the one before its promotion
    # until its first checkpoint).
    sql = ("select system_identifier::text, substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) "
           "from pg_control_system()")
    out = postgres.node_sql(primary, lead.name, sql, read=True)
    sysid, _, tli_hex = out.partition("|")
    tli = int(tli_hex.strip() or "1", 16)
    history: list[tuple[int, str]] = []
    if tli > 1:
        name = f"pg_wal/{tli:08X}.history"
        text = postgres.node_sql(primary, lead.name, f"select pg_read_file('{name}')", read=True)  # noqa: S608
        history = parse_history(text)
    return sysid.strip() or None, tli, history


def _rebuild_method(clone: bool, spec: ClusterSpec, primary: ClusterSpec, demoted: ClusterSpec,
                    out: SiteRebuildResult) -> tuple[RebuildMethod, str]:
    """Rewind or clone (stack/site_rebuild decides), from the old site's data directories read in a
    scratch box and the new primary site's timeline history; `out` gets what was read (in place)."""
    if clone:
        return rebuild_method(True, None, None, True, True)
    try:
        sysid, tli, history = _history(primary)
    except PghaError as exc:
        note(f"{primary.scope}'s timeline history not read ({str(exc).splitlines()[0]}): the discarded WAL is not "
             "counted")
        sysid, tli, history = None, 0, []
    image = ensure_image(spec)
    dirs: dict[str, tuple[DataDir, Divergence | None, Discarded | None]] = {}
    for m in spec.node_names():
        try:
            d, div, gone = pg_data.inspect(spec, m, image, tli, history)
        except PghaError as exc:
            note(f"{m}'s data directory not read ({str(exc).splitlines()[0]})")
            continue
        if d is not None:
            dirs[m] = (d, div, gone)
    lead = old_leader([d for d, _, _ in dirs.values()])
    same_timeline = False
    if lead is not None:
        div, gone = dirs[lead.member][1], dirs[lead.member][2]
        same_timeline = div is not None and div.same_timeline
        out.old_leader, out.system_id = lead.member, lead.system_id
        out.discarded = discarded_line(spec.scope, primary.scope, gone)
        if gone is not None:
            out.discarded_commits, out.discarded_bytes = gone.commits, gone.bytes
            out.discarded_lsn = f"{gone.start_lsn}..{gone.end_lsn}"
    method, why = rebuild_method(False, lead, sysid, True, True, same_timeline)
    if method != RebuildMethod.REWOUND:
        return method, why
    etcd_ok = config_ok = False
    if lead is not None:
        try:
            if started := etcd.start_members(spec):
                note(f"{spec.scope}'s etcd started again: {', '.join(started)}")
            etcd.wait_healthy(spec, timeout=60)
            etcd_ok = True
            config_ok = etcd.follow_in_config(spec, site.standby_cluster(demoted))
        except PghaError as exc:
            note(f"{spec.scope}'s etcd: {str(exc).splitlines()[0]}")
    return rebuild_method(False, lead, sysid, etcd_ok, config_ok, same_timeline)


def _rewind(spec: ClusterSpec, primary: ClusterSpec, demoted: ClusterSpec,
            out: SiteRebuildResult) -> SiteRebuildResult:
    """The old site's Patroni started with `standby_cluster` in its etcd: its leader, a standby leader
    now, has Patroni rewind it from the new primary site (crash recovery first when it was killed)
    and stream; its replicas follow it (or are rewound too). The result says what Patroni did."""
    t0, wall = time.monotonic(), time.time() - 1
    note(f"{spec.scope}'s dynamic configuration follows {primary.scope} (standby_cluster written to its etcd)")
    slot = ensure_primary_slot(demoted, primary)
    note(f"slot {site.slot_name(demoted)} for {spec.scope} on {primary.scope}: {slot}")
    drop_old_slot(spec, primary)
    if joined := join_site_network(spec, primary):
        note(f"{', '.join(joined)} of {spec.scope} attached to {primary.network}")
    store_spec(demoted)
    note(f"stored spec of {spec.scope}: standby_of {primary.scope} (change your spec file too)")
    engines = docker_hosts.engines(spec)
    for m in spec.node_names():
        engines.of(m).start(spec.container(m))
    note(f"{spec.scope}'s HAProxy routes R/W to its standby leader: {_follow_haproxy(demoted)}")
    for eng in engines.all():  # what else the site runs (pooler, fencer, exporter), killed with it
        for ct in eng.cluster_containers(spec.scope):
            if ct.status != "running" and ct.name not in {spec.container(m) for m in spec.node_names()}:
                eng.start(ct.name)
    leader = out.old_leader or spec.node_names()[0]
    said = ["", ""]

    def look() -> tuple[RewindLog, postgres.WalPosition | None]:
        said[0], said[1] = rewind_log(node_exec.node(spec, leader).logs(since=wall))
        try:
            return RewindLog(said[0]), _standby_position(demoted)
        except PghaError:
            return RewindLog(said[0]), None

    try:
        outcome, pos = wait_for(f"{spec.scope} to be rewound and stream from {primary.scope}", look,
                                lambda v: v[0] == RewindLog.FAILED or (v[1] is not None and v[1].receiver == "streaming"),
                                timeout=REWIND_WAIT_S, interval=1.0)
    except PghaError as exc:
        return out.model_copy(update={"method": RebuildMethod.CLONED.value, "rewind": said[0] or None,
                                      "why": f"Patroni did not rewind {leader} into a streaming standby within "
                                             f"{REWIND_WAIT_S:g}s ({str(exc).splitlines()[0][:200]})"})
    if outcome == RewindLog.FAILED:
        return out.model_copy(update={"method": RebuildMethod.CLONED.value, "rewind": outcome.value,
                                      "why": f"Patroni's pg_rewind of {leader} failed: {said[1]}"})
    secs = round(time.monotonic() - t0, 2)
    ran = "pg_rewind ran" if outcome == RewindLog.RAN else "nothing to rewind"
    note(f"{spec.scope} rewound ({ran}) and streams from {primary.scope} after {secs}s; {out.discarded}")
    return out.model_copy(update={"method": RebuildMethod.REWOUND.value, "rewind": outcome.value,
                                  "why": f"{out.why or 'data kept'}; {ran}", "streaming": pos is not None,
                                  "rebuild_s": secs})


def stored_spec_or_none(scope: str) -> ClusterSpec | None:
    from tasks.host.generations import stored_spec

    try:
        return stored_spec(scope)
    except StateError:
        return None
