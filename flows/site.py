"""A second site: `pgha site status` and `pgha site promote` (stack/site.py decides; Patroni acts).

status: each site's role, and for a standby site the bytes and seconds it replays behind the
primary site and the last WAL it replayed. promote (a site failover): Patroni's `standby_cluster`
is removed from the standby site's dynamic configuration, so its standby leader promotes itself
and its replicas follow it; refused without `--yes`, and while the primary site still accepts
writes unless the operator says so (two writable sites diverge). The standby's slot on the old
primary site is removed when that site answers; the stored spec drops `standby_of`.
"""

from __future__ import annotations

import time

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.steps import preflight_once
from flows.steps.cluster import store_spec
from flows.steps.ops import current, mutating_flow, note
from flows.steps.standby import drop_primary_slot, primary_of
from stack import site
from stack.errors import PghaError, StateError, UsageError
from stack.results import SitePromoteResult, SiteStatusResult
from stack.site import SiteRole, SiteRow
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import patroni, postgres
from tasks.host.lock import WaitSeconds
from tasks.host.secrets import cluster_secrets


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
    lag_b, lag_s = site.standby_lag(theirs.current_lsn if theirs else None, mine.replay_lsn, mine.since_replay_s)
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
    t0 = time.monotonic()
    patroni.patch_config(spec, {"standby_cluster": None})
    note("standby_cluster removed from the dynamic configuration")
    promoted = spec.model_copy(update={"standby_of": None})
    view = wait_for("the standby leader to promote", lambda: patroni.cluster_view(spec),
                    lambda v: (lead := v.leader()) is not None and not lead.is_standby_leader,
                    timeout=spec.timing.ttl * 3 + 30, interval=0.3)
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
    return SitePromoteResult(scope=spec.scope, primary_site=primary.scope, leader=lead.name,
                             primary_was_writable=writable, slot=slot, writable_after_s=writable_s,
                             events=current().events, elapsed_s=current().elapsed())
