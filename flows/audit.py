"""health-audit: inspect the whole cluster, one finding row per check, Failed when any is critical.

Read-only: it never takes the cluster's mutating lock and never changes a container. The
gatherers run side by side in threads of one task (each returns its observation or the error that stopped
it, so one dead component becomes a critical finding rather than a crashed audit); the
decisions are the pure functions of `stack.audit`. Artifacts `<scope>-audit` (table) and
`<scope>-audit-summary` (markdown) keep the history per cluster in the UI.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed, State

from flows.steps.cluster import stored_spec
from flows.steps.deployment import pinned_spec
from stack import alerts as alerts_mod
from stack import appdb, operator, render
from stack import audit as A
from stack import audit_backup as AB
from stack import audit_sizes as AS
from stack import metrics as M
from stack.audit_apps import check_apps
from stack.errors import PghaError
from stack.housekeeping import SERVER_LOG_BYTES
from stack.layout import DATA_MOUNT, PGDATA, REPO_MOUNT
from stack.pooler import check_pooler
from stack.results import AuditReport, FindingRow
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from tasks import (
    docker_hosts,
    etcd,
    events,
    fencer,
    haproxy,
    heartbeat,
    metrics_exporter,
    patroni,
    pg_apps,
    pgbackrest,
    pgbouncer,
    postgres,
    server_db,
)
from tasks._prefect import READ_ONLY
from tasks.host import app_passwords, journal
from tasks.host import tls as host_tls
from tasks.host.generations import deployed, serving
from tasks.host.prune import rotate_server_logs
from tasks.host.secrets import load_or_create
from tasks.host.state import cluster_dir, secrets_file, write_private
from tasks.node_exec import node

T = TypeVar("T")
Gathered = tuple[Any, str]  # (observation or None, error message)


def _safe(fn: Callable[[], T]) -> tuple[T | None, str]:
    """Run a gatherer; a failure becomes its one-line message (it turns into a critical finding)."""
    try:
        return fn(), ""
    except PghaError as exc:
        return None, (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    except Exception as exc:  # noqa: BLE001 - e.g. a psycopg error mid-query: report it, keep auditing
        return None, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def _secrets(spec: ClusterSpec) -> Secrets:
    path = secrets_file(spec.scope)
    if not path.exists():
        raise PghaError(f"no passwords stored for {spec.scope} in {path.parent}")
    return load_or_create(path, env={})


def gather_containers(spec: ClusterSpec) -> Gathered:
    def go() -> list[A.ContainerObs]:
        return [A.ContainerObs(**r) for e in docker_hosts.engines(spec).all() for r in e.audit_containers(spec.scope)]

    return _safe(go)


def gather_resources(spec: ClusterSpec) -> Gathered:
    """Memory use vs limit and OOM kills of every container (hardening)."""
    def go() -> list[A.PressureObs]:
        since = time.time() - A.OOM_WINDOW_S
        return [A.PressureObs(**r) for e in docker_hosts.engines(spec).all() for r in e.memory_pressure(spec.scope, since)]

    return _safe(go)


def gather_etcd(spec: ClusterSpec) -> Gathered:
    return _safe(lambda: etcd.audit_members(spec))


def gather_patroni(spec: ClusterSpec) -> Gathered:
    def go() -> A.PatroniObs:
        view = patroni.cluster_view(spec)
        nodes = spec.node_names()
        with ThreadPoolExecutor(max_workers=2 * len(nodes)) as pool:
            live = {m: pool.submit(patroni.probe_code, spec, m, "/liveness") for m in nodes}
            ready = {m: pool.submit(patroni.probe_code, spec, m, "/readiness") for m in nodes}
            return A.PatroniObs(
                members=list(view.members),
                paused=view.paused,
                liveness={m: _safe(f.result)[0] for m, f in live.items()},
                readiness={m: _safe(f.result)[0] for m, f in ready.items()},
            )

    return _safe(go)


def gather_replication(spec: ClusterSpec) -> Gathered:
    return _safe(lambda: postgres.replication_rows(spec, _secrets(spec)))


def gather_site(spec: ClusterSpec) -> Gathered:
    """A standby cluster's link: its standby leader's position against its primary site's."""
    def go() -> A.StandbyObs:
        from flows.steps.standby import primary_of
        from stack.site import standby_lag

        mine = postgres.wal_position(spec, _secrets(spec))
        primary = primary_of(spec)
        try:
            theirs: str | None = postgres.wal_position(primary, _secrets(primary)).current_lsn
        except PghaError:
            theirs = None  # the primary site is down: the receiver says so
        lag_b, lag_s = standby_lag(theirs, mine.replay_lsn, mine.since_replay_s)
        return A.StandbyObs(receiver=mine.receiver, lag_bytes=lag_b, lag_s=lag_s)

    return _safe(go)


def gather_haproxy(spec: ClusterSpec) -> Gathered:
    def go() -> A.HaproxyObs:
        primary, replicas = haproxy.audit_backends(spec)
        if spec.multi_host:
            # Host networking: a node answers on its host's address (one Patroni node per host).
            names = {spec.address(m): m for m in spec.node_names()}
        else:
            prefix = spec.scope + "-"
            names = {ip: name.removeprefix(prefix) for ip, name in
                     docker_hosts.engines(spec).of(spec.haproxy_member).container_ips(spec.network).items()}

        def member(ip: str | None) -> str | None:
            return names.get(ip or "")

        secrets = _secrets(spec)
        rw, rw_err = _safe(lambda: postgres.endpoint_node(spec, secrets, read_only=False))
        ro, _ = _safe(lambda: postgres.endpoint_node(spec, secrets, read_only=True)) if spec.nodes > 1 else (None, "")
        return A.HaproxyObs(primary=primary, replicas=replicas,
                            rw_member=member(rw[0]) if rw else None, rw_writable=bool(rw and not rw[1]),
                            ro_member=member(ro[0]) if ro else None, ro_in_recovery=ro[1] if ro else None,
                            error=rw_err)

    return _safe(go)


def gather_postgres(spec: ClusterSpec) -> Gathered:
    return _safe(lambda: postgres.audit_stats(spec, _secrets(spec)))


def gather_pooler(spec: ClusterSpec) -> Gathered:
    return _safe(lambda: pgbouncer.observe(spec, _secrets(spec)) if spec.runs_pooler else None)


def gather_apps(spec: ClusterSpec) -> Gathered:
    """The catalog of the declared roles and databases, with the passwords pgha keeps (to compare verifiers)."""
    def go() -> tuple[appdb.Catalog, dict[str, str]]:
        return pg_apps.observe(spec, _secrets(spec)), app_passwords.passwords(spec, create=False)

    return _safe(go) if spec.roles or spec.databases else (None, "")


def gather_disks(spec: ClusterSpec) -> Gathered:
    """Each node's data volume (df) and its pg_wal (du), one exec per node."""
    def one(member: str) -> AS.DiskObs | None:
        got = node(spec, member).disk_usage(DATA_MOUNT, (f"{PGDATA}/pg_wal",))
        return AS.DiskObs(got[0], got[1], got[2][0]) if got else None

    def go() -> dict[str, AS.DiskObs | None]:
        with ThreadPoolExecutor(max_workers=len(spec.node_names())) as pool:
            futures = {m: pool.submit(one, m) for m in spec.node_names()}
            return {m: _safe(f.result)[0] for m, f in futures.items()}

    return _safe(go)


def gather_repo_size(spec: ClusterSpec) -> Gathered:
    """The repository volume's bytes (du) and its filesystem (df), where it is mounted (S3: None)."""
    def go() -> AS.RepoSizeObs | None:
        if not spec.backup.enabled or spec.backup.s3 is not None:
            return None
        got = node(spec, pgbackrest.reader(spec)).disk_usage(REPO_MOUNT, (REPO_MOUNT,))
        if got is None or got[2][0] is None:
            raise PghaError(f"du of {REPO_MOUNT} gave no size")
        return AS.RepoSizeObs(repo_bytes=got[2][0], used_bytes=got[0], avail_bytes=got[1])

    return _safe(go)


def gather_server_db(spec: ClusterSpec) -> Gathered:
    """The Prefect server's database file on this host (a stat, no query)."""
    return _safe(server_db.observe)


def gather_fencing(spec: ClusterSpec) -> Gathered:
    """Every watcher's counters (with hosts: one per node's host), each read from its own container."""
    return _safe(lambda: fencer.all_stats(spec))


def gather_failsafe(spec: ClusterSpec) -> Gathered:
    """(failsafe_mode in the dynamic config, nodes whose Patroni runs on failsafe now)."""
    def go() -> tuple[bool, list[str]]:
        active = []
        for m in spec.node_names():
            st, _ = _safe(lambda m=m: patroni.member_status(spec, m))
            if st and st.get("failsafe_mode_is_active"):
                active.append(m)
        return bool(patroni.dynamic_config(spec).get("failsafe_mode", False)), active

    return _safe(go)


def gather_tls(spec: ClusterSpec) -> Gathered:
    """The cluster's certificates (state directory: what `up` and `certs rotate` installed)."""
    return _safe(lambda: host_tls.certificates(spec))


# ---- b-backup: WAL archiving, backup ages, encryption (stack.audit_backup) ----
def gather_archiving(spec: ClusterSpec) -> Gathered:
    return _safe(lambda: postgres.archiver_stats(spec, _secrets(spec)) if spec.backup.enabled else None)


def gather_backups(spec: ClusterSpec) -> Gathered:
    return _safe(lambda: pgbackrest.repo_obs(spec) if spec.backup.enabled else None)


def _baseline_file(spec: ClusterSpec) -> Any:
    return cluster_dir(spec.scope) / "audit-baseline.json"


def load_baseline(spec: ClusterSpec) -> A.Baseline:
    try:
        return A.Baseline.from_dict(json.loads(_baseline_file(spec).read_text()))
    except (OSError, ValueError):
        return A.Baseline()


def decide(spec: ClusterSpec, got: dict[str, Gathered], baseline: A.Baseline) -> list[A.Finding]:
    """Every check's findings from what the gatherers saw."""
    th = spec.audit
    containers, c_err = got["containers"]
    patroni_obs, p_err = got["patroni"]
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
    if "resources" in got:
        pressure, res_err = got["resources"]
        findings += A.check_resources(pressure or [], spec, th) if pressure is not None else [
            A.Finding("resource.memory", spec.scope, A.Level.WARN, res_err, "", "the engine's stats did not answer")]
    etcd_obs, e_err = got["etcd"]
    findings += A.check_etcd(etcd_obs or [], spec, th) if etcd_obs is not None else [
        A.Finding("etcd.api", spec.scope, A.Level.CRITICAL, e_err, "answers", "no etcd member answers")]
    findings += A.check_patroni(patroni_obs, spec, p_err)
    rows, r_err = got["replication"]
    findings += A.check_replication(leader if rows is not None else None, rows or [], spec, th,
                                    r_err or p_err or "no leader")
    h_obs, h_err = got["haproxy"]
    findings += A.check_haproxy(h_obs, leader, streaming, spec, th, baseline, h_err)
    if spec.delayed:
        findings += A.check_delayed(leader, rows or [], h_obs, spec, th)
    pg_obs, pg_err = got["postgres"]
    findings += A.check_postgres(pg_obs, spec, th, pg_err)
    disks, _ = got["disks"]
    findings += A.check_disks({m: d.used_pct if d else None for m, d in (disks or {}).items()}, spec, th)
    findings += AS.check_wal(disks or {}, spec, th, render.dcs_config(spec)["postgresql"]["parameters"])
    if spec.runs_pooler and "pooler" in got:
        pooler_obs, pool_err = got["pooler"]
        findings += check_pooler(pooler_obs, spec, pool_err)
    if "apps" in got and (spec.roles or spec.databases):
        apps, a_err = got["apps"]
        findings += check_apps(apps[0] if apps else None, spec, apps[1] if apps else {}, a_err)
    if "fencing" in got:
        per_member, f_err = got["fencing"]
        findings += A.check_fencers(per_member or {}, spec, time.time(), f_err)
    if "failsafe" in got:
        fs, fs_err = got["failsafe"]
        findings += A.check_failsafe(fs[0] if fs else None, fs[1] if fs else [], spec, fs_err)
    if "tls" in got:
        certs, t_err = got["tls"]
        findings += A.check_tls(certs, spec, dt.datetime.now(dt.UTC), t_err)
    if "archiving" in got:  # b-backup
        findings += AB.check_archiving(got["archiving"][0], spec, got["archiving"][1])
    if "backups" in got:
        findings += AB.check_backup_ages(got["backups"][0], spec, dt.datetime.now(dt.UTC), got["backups"][1])
    if "repo_size" in got:
        repo = got["backups"][0] if "backups" in got else None
        findings += AS.check_repository_size(got["repo_size"][0], repo.sets if repo else None, spec, th,
                                             got["repo_size"][1])
    if "server_db" in got:
        findings += AS.check_server_db(got["server_db"][0], th, got["server_db"][1])
    if "site" in got:  # a standby cluster: its link to the primary site
        findings += A.check_standby(got["site"][0], spec, th, got["site"][1])
    return findings


@task(name="audit-gather", **READ_ONLY)
def gather(spec: ClusterSpec, gatherers: dict[str, Callable[[ClusterSpec], Gathered]]) -> dict[str, Gathered]:
    """Every gatherer side by side in threads, in one task: each asks its own system, and a task
    run per gatherer cost the audit more in the API's bookkeeping than the asking itself."""
    with ThreadPoolExecutor(max_workers=len(gatherers)) as pool:
        futures = {k: pool.submit(g, spec) for k, g in gatherers.items()}
        return {k: f.result() for k, f in futures.items()}


def metrics_sample(spec: ClusterSpec, got: dict[str, Gathered], findings: list[A.Finding]) -> M.AuditSample:
    """The audit as the exporter serves it: every row's level, the last good backup, the last
    completed restore verification, the fencers' counters."""
    repo = got["backups"][0] if "backups" in got else None
    stops = [s.stop.timestamp() for s in repo.sets if not s.error] if repo is not None else []
    per_member = (got["fencing"][0] if "fencing" in got else None) or {}
    fencers = {m: stats for m, (stats, _) in per_member.items() if stats is not None}
    return M.audit_sample(time.time(), [(f.check, f.target, f.status.value) for f in findings],
                          max(stops, default=None), M.last_verified(journal.entries(spec.scope)), fencers)


def run_audit(spec: ClusterSpec) -> AuditReport:
    """Gather concurrently, decide, keep the new baseline; returns the report (no artifacts)."""
    spec = deployed(spec)  # a pooler on only by default that `pgha up` has not added yet is not judged
    t0 = time.monotonic()
    gatherers = {"containers": gather_containers, "etcd": gather_etcd, "patroni": gather_patroni,
                 "replication": gather_replication, "haproxy": gather_haproxy, "postgres": gather_postgres,
                 "disks": gather_disks, "pooler": gather_pooler, "fencing": gather_fencing,
                 "failsafe": gather_failsafe, "resources": gather_resources, "tls": gather_tls,
                 "archiving": gather_archiving, "backups": gather_backups, "repo_size": gather_repo_size,
                 "server_db": gather_server_db, "apps": gather_apps,
                 **({"site": gather_site} if spec.standby_of is not None else {})}
    got = gather(spec, gatherers)
    baseline = load_baseline(spec)
    findings = decide(spec, got, baseline)
    containers = got["containers"][0] or []
    try:
        write_private(_baseline_file(spec),
                      json.dumps(A.next_baseline(containers, got["haproxy"][0], baseline).to_dict()))
    except OSError as exc:  # e.g. two audits at once: the next audit just compares with an older baseline
        get_run_logger().warning("audit baseline not saved: %s", exc)
    if spec.metrics.enabled:
        try:
            metrics_exporter.publish_audit(spec, metrics_sample(spec, got, findings))
        except OSError as exc:  # the exporter keeps the previous sample; its age says how old
            get_run_logger().warning("audit metrics not published: %s", exc)
    v = A.verdict(spec.scope, findings)
    rows = operator.ordered([FindingRow(**f.to_dict()) for f in findings])  # criticals, warnings, ok
    p_obs = got["patroni"][0]
    return AuditReport(scope=spec.scope, status=v.level.value, message=v.message,
                       summary=operator.summary_line(spec.scope, rows, paused=bool(p_obs and p_obs.paused)),
                       elapsed_s=round(time.monotonic() - t0, 2), findings=rows)


def leader_changed(spec: ClusterSpec) -> operator.LeaderChange | None:
    """Compare the leader and timeline with the last audit's (kept in the state directory); emit
    `pgha.leader.changed` when they differ. The first audit only records them."""
    path = cluster_dir(spec.scope) / "audit-leader.json"
    try:
        view = patroni.cluster_view(spec)
    except PghaError:
        return None  # no leader to compare: the audit's findings say why
    lead = view.leader()
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


@flow(name="health-audit", description="Read-only health audit: every check as a row; Failed when any is critical.")
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
    report = run_audit(spec)
    _artifacts(report)
    leader_changed(spec)
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
