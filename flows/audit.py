"""health-audit: inspect the whole cluster, one finding row per check, Failed when any is critical.

Read-only: it never takes the cluster's mutating lock and never changes a container. One task
takes the cluster's snapshot (`tasks.observe`: every system asked once, side by side; a part that
failed is observed with its error, so one dead component becomes a critical finding rather than a
crashed audit); the decisions are the pure functions of `stack.audit*` on that snapshot. Artifacts `<scope>-audit` (table) and
`<scope>-audit-summary` (markdown) keep the history per cluster in the UI.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import Flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed, State
from pydantic import BaseModel

from flows.steps.deployment import pinned_spec
from stack import alerts as alerts_mod
from stack import audit as A
from stack import audit_backup as AB
from stack import audit_sizes as AS
from stack import metrics as M
from stack import operator, render
from stack.audit_apps import check_apps
from stack.errors import PghaError
from stack.housekeeping import SERVER_LOG_BYTES
from stack.pooler import check_pooler
from stack.results import AuditReport, FindingRow
from stack.snapshot import ClusterSnapshot
from stack.spec import ClusterSpec
from tasks import events, heartbeat, metrics_exporter
from tasks.host import journal
from tasks.host.generations import deployed, serving, stored_spec
from tasks.host.prune import rotate_server_logs
from tasks.host.state import cluster_dir, write_private
from tasks.observe import gather


def _baseline_file(spec: ClusterSpec) -> Any:
    return cluster_dir(spec.scope) / "audit-baseline.json"


def load_baseline(spec: ClusterSpec) -> A.Baseline:
    try:
        return A.Baseline.from_dict(json.loads(_baseline_file(spec).read_text()))
    except (OSError, ValueError):
        return A.Baseline()


def decide(spec: ClusterSpec, snap: ClusterSnapshot, baseline: A.Baseline) -> list[A.Finding]:
    """Every check's findings from what the snapshot saw (a part not asked gives no rows)."""
    th = spec.audit
    cts = snap.containers.value
    containers = cts.rows if cts is not None and not cts.engine_errors else None
    c_err = snap.containers.brief or (cts.engine_errors[0].splitlines()[0][:200] if cts and cts.engine_errors else "")
    p_state, p_err = snap.patroni.value, snap.patroni.brief
    patroni_obs = p_state.audit_obs() if p_state is not None else None
    leader = None
    streaming: set[str] = set()
    if patroni_obs is not None:
        role = A.leader_role(spec)  # a standby cluster's: its standby leader
        leaders = [m.name for m in patroni_obs.members if m.role == role]
        leader = leaders[0] if len(leaders) == 1 else None
        streaming = {m.name for m in patroni_obs.members if m.role != role and m.state in ("streaming", "running")}
        streaming -= set(spec.delayed_names())  # never in R/O routing (their noloadbalance tag)
    findings: list[A.Finding] = []
    if containers is None:
        findings.append(A.Finding("container.list", spec.scope, A.Level.CRITICAL, c_err, "", "is the engine up?"))
    else:
        findings += A.check_containers(containers, spec, th, baseline)
        findings += A.check_log_caps(containers, spec)
    if snap.resources.asked:
        pressure, res_err = snap.resources.pair()
        findings += A.check_resources(pressure or [], spec, th) if pressure is not None else [
            A.Finding("resource.memory", spec.scope, A.Level.WARN, res_err, "", "the engine's stats did not answer")]
    etcd_obs = snap.etcd.value.members if snap.etcd.value is not None else None
    findings += A.check_etcd(etcd_obs or [], spec, th) if etcd_obs is not None else [
        A.Finding("etcd.api", spec.scope, A.Level.CRITICAL, snap.etcd.brief, "answers", "no etcd member answers")]
    if snap.leader_key.asked:
        lk, lk_err = snap.leader_key.pair()
        findings += A.check_leader_key(lk, spec, lk_err)
    if snap.etcd_auth.asked:
        obs, err = snap.etcd_auth.pair()
        findings += A.check_etcd_auth(obs, spec, err)
    findings += A.check_patroni(patroni_obs, spec, p_err)
    rows, r_err = snap.replication.pair()
    findings += A.check_replication(leader if rows is not None else None, rows or [], spec, th,
                                    r_err or p_err or "no leader")
    h_obs, h_err = snap.haproxy.pair()
    findings += A.check_haproxy(h_obs, leader, streaming, spec, th, baseline, h_err)
    if spec.delayed:
        findings += A.check_delayed(leader, rows or [], h_obs, spec, th)
    pg_obs, pg_err = snap.postgres.pair()
    findings += A.check_postgres(pg_obs, spec, th, pg_err)
    disks = snap.disks.value
    findings += A.check_disks({m: d.used_pct if d else None for m, d in (disks or {}).items()}, spec, th)
    findings += AS.check_wal(disks or {}, spec, th, render.dcs_config(spec)["postgresql"]["parameters"])
    if spec.runs_pooler and snap.pooler.asked:
        pooler_obs, pool_err = snap.pooler.pair()
        findings += check_pooler(pooler_obs, spec, pool_err)
    if snap.apps.asked and (spec.roles or spec.databases):
        apps, a_err = snap.apps.pair()
        findings += check_apps(apps[0] if apps else None, spec, apps[1] if apps else {}, a_err)
    if snap.fencing.asked:
        per_member, f_err = snap.fencing.pair()
        findings += A.check_fencers(per_member or {}, spec, time.time(), f_err)
    if snap.failsafe.asked:
        fs, fs_err = snap.failsafe.pair()
        findings += A.check_failsafe(fs[0] if fs else None, fs[1] if fs else [], spec, fs_err)
    if snap.tls.asked:
        certs, t_err = snap.tls.pair()
        findings += A.check_tls(certs, spec, dt.datetime.now(dt.UTC), t_err)
    if snap.archiving.asked:
        findings += AB.check_archiving(snap.archiving.value, spec, snap.archiving.brief)
    if snap.backups.asked:
        findings += AB.check_backup_ages(snap.backups.value, spec, dt.datetime.now(dt.UTC), snap.backups.brief)
    if snap.repo_size.asked:
        repo = snap.backups.value
        findings += AS.check_repository_size(snap.repo_size.value, repo.sets if repo else None, spec, th,
                                             snap.repo_size.brief)
    if snap.server_db.asked:
        findings += AS.check_server_db(snap.server_db.value, th, snap.server_db.brief)
    if snap.site.asked and spec.standby_of is not None:  # a standby cluster: its link to the primary site
        site_obs, site_err = snap.site.pair()
        findings += A.check_standby(site_obs, spec, th, site_err)
    return findings


def metrics_sample(spec: ClusterSpec, snap: ClusterSnapshot, findings: list[A.Finding]) -> M.AuditSample:
    """The audit as the exporter serves it: every row's level, the last good backup, the last
    completed restore verification, the fencers' counters."""
    repo = snap.backups.value
    stops = [s.stop.timestamp() for s in repo.sets if not s.error] if repo is not None else []
    per_member = snap.fencing.value or {}
    fencers = {m: stats for m, (stats, _) in per_member.items() if stats is not None}
    return M.audit_sample(time.time(), [(f.check, f.target, f.status.value) for f in findings],
                          max(stops, default=None), M.last_verified(journal.entries(spec.scope)), fencers)


def run_audit(spec: ClusterSpec) -> AuditReport:
    """Gather concurrently, decide, keep the new baseline; returns the report (no artifacts)."""
    return audit_snapshot(spec)[0]


def audit_snapshot(spec: ClusterSpec) -> tuple[AuditReport, ClusterSnapshot]:
    """`run_audit`, and the snapshot it judged (the leader-change check reads the same one)."""
    spec = deployed(spec)  # a pooler on only by default that `pgha up` has not added yet is not judged
    from prefect.context import TagsContext

    # The gathering's task run without the flow run's tags (`pgha`, `health`: what the alerts match on
    # the flow run): a tagged task run asks the API for the tags' concurrency slots first, a round trip
    # (and a client of its own) that limits nothing here.
    with TagsContext(current_tags=set()):
        snap = gather(spec)
    t0 = time.monotonic()
    baseline = load_baseline(spec)
    findings = decide(spec, snap, baseline)
    cts = snap.containers.value
    containers = cts.rows if cts is not None and not cts.engine_errors else []
    try:
        write_private(_baseline_file(spec),
                      json.dumps(A.next_baseline(containers, snap.haproxy.value, baseline).to_dict()))
    except OSError as exc:  # e.g. two audits at once: the next audit just compares with an older baseline
        get_run_logger().warning("audit baseline not saved: %s", exc)
    if spec.metrics.enabled:
        try:
            metrics_exporter.publish_audit(spec, metrics_sample(spec, snap, findings))
        except OSError as exc:  # the exporter keeps the previous sample; its age says how old
            get_run_logger().warning("audit metrics not published: %s", exc)
    v = A.verdict(spec.scope, findings)
    rows = operator.ordered([FindingRow(**f.to_dict()) for f in findings])  # criticals, warnings, ok
    p_state = snap.patroni.value
    report = AuditReport(scope=spec.scope, status=v.level.value, message=v.message,
                         summary=operator.summary_line(spec.scope, rows, paused=bool(p_state and p_state.view.paused)),
                         elapsed_s=round(snap.elapsed_s + time.monotonic() - t0, 2), findings=rows)
    return report, snap


def leader_changed(spec: ClusterSpec, snap: ClusterSnapshot) -> operator.LeaderChange | None:
    """Compare the leader and timeline the snapshot saw with the last audit's (kept in the state
    directory); emit `pgha.leader.changed` when they differ. The first audit only records them."""
    path = cluster_dir(spec.scope) / "audit-leader.json"
    if snap.patroni.value is None:
        return None  # no leader to compare: the audit's findings say why
    lead = snap.patroni.value.view.leader()
    if lead is None:
        return None
    try:
        previous = dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        previous = None
    change = operator.leader_change(previous, lead.name, lead.timeline)
    try:
        write_private(path, json.dumps({"leader": lead.name, "timeline": lead.timeline}))
    except OSError:
        pass
    if change is not None:
        events.leader_changed(spec.scope, change)
    return change


def _artifacts(report: AuditReport) -> None:
    scope = report.scope
    findings = [f.to_json() for f in report.findings]
    # Cells as the UI shows them: ">= 2" would render as a Markdown quote.
    findings = [{k: operator.md_cell(v) for k, v in f.items()} for f in findings]
    create_table_artifact(key=f"{scope}-audit", table=findings, description=(report.summary or report.message)[:500])
    bad = [f for f in findings if f["status"] != "ok"]
    md = [f"# Health audit of `{scope}`: {report.status.upper()}", "", f"**{report.summary}**", "", report.message, "",
          f"{len(findings)} checks in {report.elapsed_s} s; {len(bad)} not ok.", ""]
    if bad:
        md += ["| check | target | status | observed | threshold | hint |", "|---|---|---|---|---|---|"]
        md += [f"| {f['check']} | {f['target']} | {f['status']} | {f['observed']} | {f['threshold']} | {f['hint']} |"
               for f in bad]
    create_markdown_artifact(key=f"{scope}-audit-summary", markdown="\n".join(md), description=report.message[:500])


def _heartbeat() -> alerts_mod.Heartbeat | None:
    """The dead man's switch to ping (deployments/alerts.yaml `heartbeat`, $PGHA_HEARTBEAT_URL), or None.
    Read at every run, so a changed file needs no restart of the worker."""
    try:
        cfg = alerts_mod.load_alerts() if alerts_mod.ALERTS_FILE.exists() else None
        return alerts_mod.heartbeat(cfg)
    except PghaError as exc:  # a broken alerts file must not stop the audit: it says so, and pings nothing
        get_run_logger().warning("heartbeat not pinged: %s", exc)
        return None


class PlainParamsFlow(Flow[Any, Any]):
    """A flow whose run records its parameters (a pydantic model, plain values) without FastAPI.

    Prefect's `serialize_parameters` imports FastAPI for its `jsonable_encoder` (about 0.2 s of CPU
    in a process that has no other use for it); for a pydantic model that encoder gives the model's
    JSON dump by alias, so the run records the same parameters. Any other value: Prefect's own way.
    """

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        plain: dict[str, Any] = {}
        for key, value in parameters.items():
            if isinstance(value, BaseModel):
                plain[key] = value.model_dump(mode="json", by_alias=True)
            elif value is None or isinstance(value, (str, int, float, bool)):
                plain[key] = value
            else:
                return super().serialize_parameters(parameters)
        return plain


def plain_params_flow(**options: Any) -> Any:
    """`@flow(**options)`, as a `PlainParamsFlow`."""
    return lambda fn: PlainParamsFlow(fn=fn, **options)


@plain_params_flow(name="health-audit",
                   description="Read-only health audit: every check as a row; Failed when any is critical.")
def audit(spec: ClusterSpec = ClusterSpec(), scope: str = "") -> State:  # noqa: B008 - pydantic default is immutable
    """`scope`: audit the cluster of that scope as its last `pgha up` stored it, instead of `spec`
    (what the leader-change automation passes). With a heartbeat configured, the run pings it when
    it starts, when it succeeds and, with the reason, when it fails or breaks."""
    log = get_run_logger()
    hb = _heartbeat()
    name = scope or spec.scope
    with ThreadPoolExecutor(max_workers=1) as pinger:  # the start ping runs beside the gathering
        started = pinger.submit(heartbeat.ping, hb, name, "start") if hb else None
        try:
            state = _audit(spec, scope)
        except BaseException as exc:
            if hb:
                if started is not None:
                    started.result()  # the start ping first: the service orders them by arrival
                end = heartbeat.ping(hb, name, "fail", f"health audit of {name} broke: {type(exc).__name__}")
                log.info("heartbeat %s", end)
            raise
        if hb and started is not None:
            log.info("heartbeat %s", started.result())
            outcome = "fail" if state.is_failed() else "success"
            log.info("heartbeat %s", heartbeat.ping(hb, name, outcome, state.message or ""))
    return state


def _audit(spec: ClusterSpec, scope: str) -> State:
    # The serving generation of a cluster's name; in a deployment run, the spec stored for it.
    spec = stored_spec(scope) if scope else serving(pinned_spec(spec))
    report, snap = audit_snapshot(spec)
    _artifacts(report)
    leader_changed(spec, snap)
    events.audit_completed(spec.scope, report.status, report.message)  # silence is what the proactive alert watches
    log = get_run_logger()
    # The server's and workers' logs grow while they run for months: the audit, every 15 minutes on
    # this host, keeps them bounded (stack.housekeeping).
    for name in rotate_server_logs():
        log.info("rotated %s (past %d MiB)", name, SERVER_LOG_BYTES // 2**20)
    if report.status == A.Level.CRITICAL.value:
        log.error(report.message)
        return Failed(message=report.message, data=report)
    log.info("%s (%s s)", report.message, report.elapsed_s)
    return Completed(message=report.message, data=report)
