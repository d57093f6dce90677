"""What each verb prints without `--json`: rich tables and lines from the flows' result models.

Pure presentation: every function takes a `Done` (the result, and the spec when the text
names the scope or its ports) and prints to stdout. The wording is what users and the
docs (whose examples a test runs) rely on; change it only on purpose.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cli.core import Done, out
from stack.results import (
    AuditReport,
    BackupResult,
    BackupsResult,
    BootstrapResult,
    CertsRenewResult,
    CertsRotateResult,
    ClusterStatus,
    ConfigSetResult,
    DrillResult,
    DumpResult,
    EtcdReplaceResult,
    HistoryResult,
    MajorUpgradeResult,
    PauseResult,
    RecoverDelayedResult,
    ReinitResult,
    ReportResult,
    RestartResult,
    RestoreResult,
    ScaleResult,
    SiteFailoverResult,
    SitePromoteResult,
    SiteRebuildResult,
    SiteStatusResult,
    SiteSwitchoverResult,
    SwitchoverResult,
    TeardownResult,
    UpgradeResult,
    VerifyResult,
)
from stack.spec import ClusterSpec
from tasks.host.state import cluster_dir

LEVEL_STYLE = {"ok": "green", "warn": "yellow", "critical": "bold red"}


def line(text: str) -> None:
    """One plain line: no rich markup or highlighting (names and values may contain brackets)."""
    out.print(text, highlight=False, markup=False)


def _spec(done: Done[Any]) -> ClusterSpec:
    assert done.spec is not None, "this renderer needs the spec the verb ran on"
    return done.spec


# ---- cluster ----


def members_table(status: ClusterStatus) -> Table:
    t = Table(title=f"pgha cluster {status.scope}", title_justify="left")
    for col in ("member", "component", "container", "state", "health", "role", "pg state", "TL", "lag (bytes)"):
        t.add_column(col)
    for m in status.members:
        role = f"{m.pg_role} (delayed {m.delay})" if m.delay else m.pg_role
        t.add_row(m.member, m.role, m.container, m.container_state, m.health, role, m.pg_state,
                  "" if m.timeline is None else str(m.timeline), "" if m.lag_bytes is None else str(m.lag_bytes))
    return t


def endpoints(spec: ClusterSpec) -> None:
    from tasks.postgres import dsn

    default = spec.scope == ClusterSpec().scope
    line(f"read/write: {dsn(spec)}")
    line(f"read-only : {dsn(spec, read_only=True)}")
    if spec.runs_pooler:
        line(f"pooled r/w: {dsn(spec, pooled=True)}")
    line(f"password  : psql \"$(pgha dsn --pgpass{'' if default else ' --scope ' + spec.scope})\""
         f"  (a 0600 pgpass file; passwords kept in {cluster_dir(spec.scope) / 'secrets.json'}, mode 0600)")


def up(done: Done[BootstrapResult]) -> None:
    r, spec = done.result, _spec(done)
    out.print(members_table(r.status))
    changed = [k for k, v in r.outcomes.items() if v != "unchanged"]
    line(f"{spec.scope} is ready in {r.elapsed_s}s on {r.image}; "
         + (f"changed: {', '.join(changed)}" if changed else "nothing changed"))
    endpoints(spec)


def down(done: Done[TeardownResult]) -> None:
    r = done.result
    line(f"{r.scope}: removed {len(r.containers)} containers, {len(r.networks)} networks, {len(r.volumes)} volumes"
         + ("" if r.state_removed else " (data volumes kept; `pgha up` brings it back)"))
    if r.kept:
        line(f"kept: {', '.join(r.kept)} (backup repository; `--purge-backups --yes` deletes it)")
    if r.state_moved_to:
        line(f"secrets the repository needs moved to {r.state_moved_to}")


def status(done: Done[ClusterStatus]) -> None:
    st = done.result
    if st.cluster:
        line(st.cluster)
    out.print(members_table(st))
    for k, v in st.endpoints.items():
        line(f"{k:12}: {v}")
    line("healthy" if st.healthy else "UNHEALTHY: " + "; ".join(st.problems))
    for other in st.companions:
        line("")
        line(f"major upgrade in progress: green cluster {other.scope}")
        status(Done(other))


# ---- drills ----


def drill(done: Done[DrillResult]) -> None:
    r, spec = done.result, _spec(done)
    if r.old_site is not None:
        return site_drill(r)
    t = Table(title=f"{r.kind} drill on {spec.scope}", title_justify="left")
    for col in ("target", "write gap", "read gap", "lost writes", "leader", "timeline", "whole after", "rejoin"):
        t.add_column(col)
    t.add_row(r.target, f"{r.write_gap_s:.2f} s", f"{r.read_gap_s:.2f} s", str(len(r.lost_writes)),
              f"{r.old_leader} -> {r.new_leader}", f"{r.timeline_before} -> {r.timeline_after}", f"{r.whole_s} s",
              r.rejoin)
    out.print(t)
    line(r.timeline)
    for n in r.notes:
        line(f"- {n}")
    line(f"chart: {r.chart_png}")


def site_drill(r: DrillResult) -> None:
    t = Table(title=f"{r.kind} drill: {r.old_site} -> {r.new_site}", title_justify="left")
    for col in ("write gap", "lost writes", "RPO", "RTO", "failover", "leader", "old site"):
        t.add_column(col)
    t.add_row(f"{r.write_gap_s:.2f} s", str(len(r.lost_writes)), "-" if r.rpo_s is None else f"{r.rpo_s:.2f} s",
              "-" if r.rto_s is None else f"{r.rto_s:.2f} s", "-" if r.failover_s is None else f"{r.failover_s:.2f} s",
              r.new_leader, r.rejoin or str(r.operator_action))
    out.print(t)
    line(r.timeline)
    for n in r.notes:
        line(f"- {n}")
    line(f"chart: {r.chart_png}")


# ---- backups ----


def backup(done: Done[BackupResult]) -> None:
    r, spec = done.result, _spec(done)
    line(f"{r.type} backup {r.label} of {spec.scope} from {r.source}: {r.size_mb} MB ({r.stored_mb} MB stored) "
         f"in {r.duration_s} s; WAL {r.wal_start}..{r.wal_stop}" + (f"; expired {r.expired}" if r.expired else ""))
    if (v := r.verification) is not None:
        line(f"verified restore: passed in {v.duration_s} s ({v.canary}; pg_amcheck: {v.amcheck})")


def dump(done: Done[DumpResult]) -> None:
    for f in done.result.files:
        line(f"{f.database}: {f.file} ({f.size_mb} MB, {f.duration_s} s)")


def verify_restore(done: Done[VerifyResult]) -> None:
    r, spec = done.result, _spec(done)
    line(f"backup {r.label} of {spec.scope}: restore verified in {r.duration_s} s ({r.canary}; pg_amcheck: {r.amcheck})")


def restore(done: Done[RestoreResult]) -> None:
    """`done.spec` is the new cluster's spec (None in place)."""
    r = done.result
    if r.in_place:
        line(f"restored {r.source} in place to {r.target} (backup {r.from_set}) in {r.duration_s} s; "
             f"now on timeline {r.timeline}; everything written after {r.target} was discarded")
        return
    line(f"restored {r.source} to {r.target} into {r.into} (backup {r.from_set}) in {r.duration_s} s")
    if done.spec is not None:
        endpoints(done.spec)


# ---- audit, server ----


def audit(done: Done[AuditReport]) -> None:
    r = done.result
    if r.summary:
        line(r.summary)
    t = Table(title=f"health audit of {r.scope} ({r.elapsed_s} s)", title_justify="left")
    for col in ("check", "target", "status", "observed", "threshold", "hint"):
        t.add_column(col)
    for f in r.findings:
        t.add_row(f.check, f.target, f"[{LEVEL_STYLE.get(f.status, '')}]{f.status}[/]", f.observed, f.threshold, f.hint)
    out.print(t)
    line(r.message)


def server_status(done: Done[dict[str, Any]]) -> None:
    for k, v in done.result.items():
        if k in ("server", "worker") and isinstance(v, dict):
            v = (f"{v['container']} {v['state']}, health {v['health'] or '-'}, restart {v['restart_policy']} "
                 f"(restarted {v['restart_count']}x), started {v['started_at']}, pid {v['pid']}")
        elif k in ("server", "worker"):
            v = "no container"
        elif k == "database" and isinstance(v, dict):
            v = f"volume {v['volume']} ({v['path'] or 'absent'})"
        line(f"{k:15}: {v}")


# ---- rolling changes ----


def events(items: list[str]) -> None:
    for e in items:
        line(f"- {e}")


def upgrade(done: Done[UpgradeResult]) -> None:
    r, spec = done.result, _spec(done)
    t = Table(title=f"upgrade of {spec.scope} to {r.target}", title_justify="left")
    for col in ("node", "version before", "version after", "image after"):
        t.add_column(col)
    for row in r.rows:
        t.add_row(row.node, row.version_before, row.version_after, row.image_after)
    out.print(t)
    events(r.events)
    line(f"done in {r.elapsed_s}s")


def major_upgrade(done: Done[MajorUpgradeResult]) -> None:
    r = done.result
    for n in r.notes:
        line(f"note: {n}")
    events(r.events)
    t = Table(title=f"major upgrade of {r.blue_scope}: {r.action}", title_justify="left")
    for col in ("version before", "version after", "write gap (s)", "bytes copied", "phase", "elapsed (s)"):
        t.add_column(col)
    t.add_row(str(r.version_before or ""), str(r.version_after or ""), "" if r.write_gap_s is None else str(r.write_gap_s),
              "" if r.bytes_copied is None else str(r.bytes_copied), r.phase or "-", str(r.elapsed_s))
    out.print(t)
    if r.backup_label:
        line(f"{r.green_scope}'s first backup {r.backup_label}: restore "
             + ("verified" if r.backup_verified else "NOT verified"))
    if r.audit:
        line(f"audit of {r.green_scope}: {r.audit}")
    if r.handover_gap_s is not None:
        line(f"the clients' ports moved to {r.green_scope}'s own HAProxy; refused for {r.handover_gap_s}s")


def any_upgrade(done: Done[Any]) -> None:
    """`pgha upgrade` renders a rolling (minor) or a blue/green (major) result."""
    if isinstance(done.result, MajorUpgradeResult):
        major_upgrade(done)
    else:
        upgrade(done)


def config_set(done: Done[ConfigSetResult]) -> None:
    r = done.result
    for member, vals in r.values.items():
        line(f"{member}: " + ", ".join(f"{k}={v}" for k, v in vals.items()))
    events(r.events)
    if resets := [k for k, v in r.parameters.items() if v == ""]:
        line(f"reset: {', '.join(resets)}")
    line(f"restarted: {', '.join(r.restarted) or 'none'}; {r.elapsed_s}s")


def scale(done: Done[ScaleResult]) -> None:
    r, spec = done.result, _spec(done)
    events(r.events)
    line(f"{spec.scope}: {r.plan}; now {r.nodes} nodes ({r.elapsed_s}s)")


def etcd_replace(done: Done[EtcdReplaceResult]) -> None:
    r = done.result
    events(r.events)
    line(f"{r.member} replaced (member id {r.old_id} -> {r.new_id}) in {r.elapsed_s}s")


def switchover(done: Done[SwitchoverResult]) -> None:
    r = done.result
    t = r.times
    paused = f"pooler paused {t.resumed_s:.2f}s in all" if t.pooled else "no pooler"
    line(f"{r.scope}: {t.leader} -> {t.candidate}; new primary routed {t.routed_s:.2f}s after the request, "
         f"{paused}; whole again after {t.whole_s:.1f}s ({r.elapsed_s}s)")
    line("healthy" if r.status.healthy else "UNHEALTHY: " + "; ".join(r.status.problems))
# ---- the operator's verbs ----


def restart(done: Done[RestartResult]) -> None:
    r = done.result
    line(f"restarted {', '.join(r.restarted) or 'nothing'} in {r.elapsed_s}s"
         + (f"; switchover {r.switchover}" if r.switchover else "") + f"; leader {r.leader}")
    events(r.events)


def reinit(done: Done[ReinitResult]) -> None:
    r = done.result
    line(f"{r.member} rebuilt from {r.leader} in {r.elapsed_s}s and streaming")
    events(r.events)


def recover_from_delayed(done: Done[RecoverDelayedResult]) -> None:
    r = done.result
    line(f"{r.table} ({r.database}) back on {r.primary} from delayed replica {r.source}: {r.rows} rows in "
         f"{r.elapsed_s}s (replay paused {r.replay_paused_s}s, then resumed)")
    events(r.events)


def certs_rotate(done: Done[CertsRotateResult]) -> None:
    r = done.result
    line(f"{r.scope}: certificates renewed (valid until {r.new_not_after}, were {r.old_not_after or 'unknown'}); "
         f"{r.endpoints} TLS endpoints serve them; {r.restarts} restarts, {r.switchovers} switchovers, {r.elapsed_s}s")
    events(r.events)


def certs_renew(done: Done[CertsRenewResult]) -> None:
    r = done.result
    line(f"{r.scope}: {r.detail}")
    if r.rotation is not None:
        certs_rotate(Done(r.rotation, done.spec))


def pause(done: Done[PauseResult]) -> None:
    r = done.result
    state = "paused (maintenance mode: no automatic failover)" if r.paused else "resumed (Patroni manages failover)"
    line(f"{r.scope} {state}" + ("" if r.changed else "; it already was"))


def backups(done: Done[BackupsResult]) -> None:
    r = done.result
    t = Table(title=f"backups of {r.scope}", title_justify="left")
    for col in ("label", "type", "stopped", "size MB", "stored MB", "WAL start", "WAL stop", "verified"):
        t.add_column(col)
    for s in r.sets:
        t.add_row(s.label, s.type, s.stopped[:19], _mb(s.size_bytes), _mb(s.repo_bytes), s.wal_start, s.wal_stop, s.verified)
    out.print(t)
    if r.recoverable_from:
        line(f"recoverable window (PITR): {r.recoverable_from[:19]} .. {r.recoverable_to[:19]} UTC "
             f"(WAL archived {r.archive_min} .. {r.archive_max})")
    else:
        line("no good backup: nothing is recoverable yet (run `pgha backup`)")


def _mb(n: int | None) -> str:
    return f"{n / 1e6:.1f}" if n is not None else ""


def history(done: Done[HistoryResult]) -> None:
    r = done.result
    t = Table(title=f"history of {r.scope}: leader {r.leader or 'none'} on timeline {r.timeline}", title_justify="left")
    for col in ("timeline", "since", "leader", "cause", "detail"):
        t.add_column(col)
    for h in r.rows:
        t.add_row(str(h.timeline), h.time[:19], h.new_leader, h.cause, h.detail)
    out.print(t)
    if not r.rows:
        line("no leader change since the cluster was created (timeline 1)")


def report(done: Done[ReportResult]) -> None:
    r = done.result
    line(f"{r.path} ({r.bytes} bytes, {len(r.files)} files); searched for {r.secrets_checked} forms of the "
         "cluster's secrets (as written and base64): none found")


# ---- a second site ----


def site_status(done: Done[SiteStatusResult]) -> None:
    r = done.result
    t = Table(title=f"sites of {r.scope}", title_justify="left")
    for col in ("site", "role", "leader", "follows", "streaming", "received", "replayed", "lag (bytes)", "lag (s)"):
        t.add_column(col)
    for s in r.sites:
        t.add_row(s.scope, s.role.value, s.leader or "", s.follows or "",
                  "" if s.streaming is None else "yes" if s.streaming else "NO", s.receive_lsn or "",
                  s.replay_lsn or "", "" if s.lag_bytes is None else str(s.lag_bytes),
                  "" if s.lag_s is None else f"{s.lag_s:g}")
    out.print(t)


def site_switchover(done: Done[SiteSwitchoverResult]) -> None:
    r = done.result
    line(f"{r.scope} is the primary site ({r.leader} accepts writes; write gap {r.write_gap_s}s, caught up "
         f"{r.caught_up_s}s after the demotion); {r.old_primary} is its standby"
         + ("" if r.old_primary_follows else f" but does not stream yet (pgha site status --scope {r.old_primary})")
         + f"; {r.elapsed_s}s in all")
    events(r.events)


def site_failover(done: Done[SiteFailoverResult]) -> None:
    r = done.result
    fenced = f"{r.old_primary} fenced ({', '.join(r.fenced)} stopped)" if r.fenced else f"{r.old_primary}: nothing ran"
    line(f"{r.scope} is the primary site: {r.leader} accepts writes {r.writable_after_s}s after the promotion; "
         + (r.operator_action or fenced) + f"; {r.elapsed_s}s in all")
    events(r.events)


def site_rebuild(done: Done[SiteRebuildResult]) -> None:
    r = done.result
    line(f"{r.scope} rebuilt as a standby of {r.standby_of}: {r.method} ({r.why}) "
         + ("(streaming)" if r.streaming else f"but does not stream yet (pgha site status --scope {r.scope})")
         + f"; {r.elapsed_s}s in all")
    if r.discarded:
        line(r.discarded)
    events(r.events)


def site_promote(done: Done[SitePromoteResult]) -> None:
    r = done.result
    line(f"{r.scope} is a primary site: {r.leader} accepts writes {r.writable_after_s}s after the promotion "
         f"(it followed {r.primary_site}); {r.elapsed_s}s in all")
    events(r.events)
