"""The operator's day-two verbs: restart, reinit, pause, resume, logs, psql, backups, history, report.

Verbs that change the cluster run a flow (`flows/restart.py`, `reinit.py`, `maintenance.py`)
after the same pre-check the flow makes, so a bad member or a paused cluster is one line
before anything starts. The read-only ones (logs, psql, backups, history, report) are not
flows: they answer without loading Prefect.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from cli import render
from cli.core import (
    BACKUPS,
    CLUSTER,
    DAY_TWO,
    SUPPORT,
    Done,
    JsonOpt,
    ScopeOpt,
    SpecOpt,
    Verb,
    WaitOpt,
    app,
    checks,
    command,
    require_engines,
    resolve_spec,
    run_flow,
    warm,
)
from stack.errors import PghaError, StateError, UsageError
from stack.results import (
    BackupsResult,
    CertsRenewResult,
    CertsRotateResult,
    HistoryResult,
    PauseResult,
    RecoverDelayedResult,
    ReinitResult,
    ReportResult,
    RestartResult,
)
from stack.spec import ClusterSpec


@app.command(rich_help_panel=DAY_TWO)
@command(render.restart, flows=True)
def restart(member: str | None = typer.Argument(None, help="the Patroni member to restart (pg-N)"),
            all_members: bool = typer.Option(False, "--all", help="every member: replicas first, then the leader after a switchover"),
            spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, wait: float = WaitOpt,
            as_json: bool = JsonOpt) -> Done[RestartResult]:
    """Rolling restart of PostgreSQL on MEMBER or --all (replicas first; the leader after a switchover).

    Example: pgha restart --all
    """
    if (member is None) == (not all_members):
        raise UsageError("give exactly one of MEMBER or --all")
    verb = Verb.open("restart", spec_file, scope, wait).engines()
    from flows.restart import check

    check(verb.spec, member)
    verb.not_busy().warm()
    from flows.restart import restart as restart_flow

    return verb.run(restart_flow, member=member, wait_seconds=wait)


@app.command(rich_help_panel=DAY_TWO)
@command(render.reinit, flows=True)
def reinit(member: str = typer.Argument(..., help="the replica to rebuild (pg-N)"),
           yes: bool = typer.Option(False, "--yes", help="confirm: MEMBER's data directory is wiped and cloned again"),
           spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, wait: float = WaitOpt,
           as_json: bool = JsonOpt) -> Done[ReinitResult]:
    """Rebuild the replica MEMBER from the leader (its data is wiped and cloned again; needs --yes).

    Example: pgha reinit pg-3 --yes
    """
    verb = Verb.open("reinit", spec_file, scope, wait).engines()
    from flows.reinit import check

    check(verb.spec, member)
    if not yes:
        raise UsageError(f"reinit wipes {member}'s data directory and clones it again from the leader; "
                         "add --yes to confirm")
    verb.not_busy().warm()
    from flows.reinit import reinit as reinit_flow

    return verb.run(reinit_flow, member=member, wait_seconds=wait)


@app.command(name="recover-from-delayed", rich_help_panel=DAY_TWO)
@command(render.recover_from_delayed, flows=True)
def recover_from_delayed(table: str = typer.Option(..., "--table", help="the dropped table, SCHEMA.TABLE "
                                                                        "(plain lowercase identifiers)"),
                         db: str = typer.Option("postgres", "--db", help="the database that held it"),
                         source: str | None = typer.Option(None, "--from", help="the delayed replica to take it "
                                                                                "from (default: the spec's first)"),
                         spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, wait: float = WaitOpt,
                         as_json: bool = JsonOpt) -> Done[RecoverDelayedResult]:
    """Bring a dropped table back from a delayed replica: replay paused there, pg_dump -t, restored into the primary.

    Example: pgha recover-from-delayed --table public.orders --db shop
    """
    verb = Verb.open("recover-from-delayed", spec_file, scope, wait).engines()
    from flows.recover_delayed import preflight
    from flows.recover_delayed import recover_from_delayed as recover_flow

    with checks() as check:
        check(preflight, verb.spec, table, db, source)  # refusals are one line, before the flow starts
        verb.not_busy().warm()
        return verb.run(recover_flow, table=table, database=db, source=source, wait_seconds=wait)


@app.command(rich_help_panel=DAY_TWO)
@command(render.pause, flows=True)
def pause(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, wait: float = WaitOpt,
          as_json: bool = JsonOpt) -> Done[PauseResult]:
    """Maintenance mode on: Patroni stops failing over and restarting PostgreSQL (the audit warns).

    Example: pgha pause --wait 60
    """
    verb = Verb.open("pause", spec_file, scope, wait).engines().answers().not_busy().warm()
    from flows.maintenance import pause as pause_flow

    return verb.run(pause_flow, wait_seconds=wait)


@app.command(rich_help_panel=DAY_TWO)
@command(render.pause, flows=True)
def resume(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, wait: float = WaitOpt,
           as_json: bool = JsonOpt) -> Done[PauseResult]:
    """Maintenance mode off: Patroni manages the cluster again.

    Example: pgha resume
    """
    verb = Verb.open("resume", spec_file, scope, wait).engines().answers().not_busy().warm()
    from flows.maintenance import resume as resume_flow

    return verb.run(resume_flow, wait_seconds=wait)


# ---- tls: pgha certs rotate ----
certs_app = typer.Typer(help="The cluster's TLS certificates, issued by its own CA.", no_args_is_help=True)
app.add_typer(certs_app, name="certs", rich_help_panel=DAY_TWO)


def _certs_ready(spec_file: Path | None, scope: str | None, wait: float, name: str) -> Verb:
    """The checks `certs rotate` and `certs renew` share, before any flow starts."""
    verb = Verb.open(name, spec_file, scope, wait).engines()
    from flows.certs import check

    check(verb.spec)
    return verb.answers().not_busy().warm()


@certs_app.command("rotate")
@command(render.certs_rotate, flows=True)
def certs_rotate(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, wait: float = WaitOpt,
                 as_json: bool = JsonOpt) -> Done[CertsRotateResult]:
    """New member and client certificates from the cluster CA, rolled out with reloads (no restart, no switchover).

    Example: pgha certs rotate
    """
    verb = _certs_ready(spec_file, scope, wait, "certs rotate")
    from flows.certs import certs_rotate as rotate_flow

    return verb.run(rotate_flow, wait_seconds=wait)


@certs_app.command("renew")
@command(render.certs_renew, flows=True)
def certs_renew(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, wait: float = WaitOpt,
                within_days: int | None = typer.Option(None, "--within-days", min=1, max=3650,
                                                       help="renew when fewer days than this remain "
                                                            "(default: the spec's tls.renew_within_days, 45)"),
                as_json: bool = JsonOpt) -> Done[CertsRenewResult]:
    """Renew the member and client certificates if they expire soon (what the daily deployment runs); else nothing.

    Example: pgha certs renew --within-days 60
    """
    verb = _certs_ready(spec_file, scope, wait, "certs renew")
    from flows.certs import certs_renew as renew_flow

    return verb.run(renew_flow, within_days=within_days, wait_seconds=wait)
# ---- end tls ----


def _members(spec: ClusterSpec) -> list[str]:
    return [*spec.etcd_names(), *spec.node_names(), spec.haproxy_member]


SINCE = re.compile(r"^(\d+)([smhd])$")


def parse_since(text: str) -> float:
    """`30s`, `10m`, `2h`, `1d` → a Unix time that long ago."""
    m = SINCE.match(text.strip())
    if not m:
        raise UsageError(f"--since must look like 30s, 10m, 2h or 1d, not {text!r}")
    return time.time() - int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


@app.command(rich_help_panel=SUPPORT)
@command()
def logs(member: str = typer.Argument(..., help="etcd-N, pg-N or haproxy"),
         follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new lines (Ctrl-C ends)"),
         since: str | None = typer.Option(None, "--since", help="only lines newer than this: 30s, 10m, 2h, 1d"),
         tail: int = typer.Option(200, "--tail", min=1, max=100000, help="last N lines (without --since)"),
         spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt) -> None:
    """A member's container log (Patroni and PostgreSQL, etcd or HAProxy), with timestamps.

    Example: pgha logs pg-1 --since 10m
    """
    spec = resolve_spec(spec_file, scope)
    if member not in _members(spec):
        raise UsageError(f"unknown member {member}; members are {', '.join(_members(spec))}")
    start = parse_since(since) if since else None
    from tasks import docker_hosts

    engine = docker_hosts.engines(spec).of(member)
    try:
        for chunk in engine.stream_logs(spec.container(member), follow=follow, since=start,
                                        tail=None if start is not None else tail):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
    except BrokenPipeError:  # `pgha logs pg-1 | head`
        return


@app.command(rich_help_panel=CLUSTER)
@command()
def psql(ro: bool = typer.Option(False, "--ro", help="the read-only endpoint (a replica, through HAProxy)"),
         pool: bool = typer.Option(False, "--pool", help="through the connection pooler (when the spec has one)"),
         sql: str | None = typer.Option(None, "-c", "--command", help="run this SQL and exit"),
         dbname: str = typer.Option("postgres", "--dbname", "-d", help="the database to connect to"),
         spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt) -> None:
    """psql on the cluster's R/W (or --ro) endpoint; the password goes through a 0600 passfile, never argv or env.

    Example: pgha psql -c 'select pg_is_in_recovery()'
    """
    if ro and pool:
        raise UsageError("give at most one of --ro and --pool")
    spec = resolve_spec(spec_file, scope)
    if pool and not spec.runs_pooler:
        raise UsageError(f"cluster {spec.scope} runs no connection pooler (pooler.enabled: false); drop --pool")
    from tasks.host.state import secrets_file

    if not secrets_file(spec.scope).exists():
        raise StateError(f"no passwords stored for '{spec.scope}'; run `pgha up` first")
    port = spec.ports.pool if pool else spec.ports.ro if ro else spec.ports.rw
    host = "127.0.0.1"
    if pool:  # the first pooler (with hosts, the first host's; `pgha dsn --pool` names them all)
        host, port = spec.client_endpoints(pooled=True)[0]
    host_psql = shutil.which("psql") is not None
    if pool and not host_psql:
        raise UsageError("--pool needs psql on this machine (Debian: apt-get install postgresql-client)")
    code = _host_psql(spec, port, dbname, sql, host) if host_psql else _node_psql(spec, ro, dbname, sql)
    raise typer.Exit(code)


def _host_psql(spec: ClusterSpec, port: int, dbname: str, sql: str | None, host: str = "127.0.0.1") -> int:
    """The host's psql; the password in a private passfile (PGPASSFILE names the file, not the password)."""
    from tasks.host.secrets import load_or_create
    from tasks.host.state import secrets_file

    password = load_or_create(secrets_file(spec.scope)).superuser
    esc = password.replace("\\", "\\\\").replace(":", "\\:")
    with tempfile.TemporaryDirectory(prefix="pgha-psql-") as d:
        passfile = Path(d) / "pgpass"
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{host}:{port}:*:postgres:{esc}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGPASSFILE=str(passfile), PGCONNECT_TIMEOUT="5", PGAPPNAME="pgha psql")
        from tasks.postgres import tls_params  # spec.tls: verified against the cluster CA (the pooler too)

        env.update({f"PG{k.upper()}": v for k, v in tls_params(spec).items()})  # PGSSLMODE, PGSSLROOTCERT
        cmd = ["psql", "-h", host, "-p", str(port), "-U", "postgres", "-d", dbname]
        if sql is not None:
            cmd += ["-v", "ON_ERROR_STOP=1", "-c", sql]
        return subprocess.call(cmd, env=env)


def _node_psql(spec: ClusterSpec, ro: bool, dbname: str, sql: str | None) -> int:
    """No psql on the host: psql inside the leader (or a replica for --ro) over its local socket (peer auth)."""
    from tasks import patroni

    view = patroni.cluster_view(spec)
    lead = view.leader()
    target = next((m.name for m in view.replicas() if m.streaming), None) if ro else (lead.name if lead else None)
    if target is None:
        raise StateError(f"no {'streaming replica' if ro else 'leader'} to connect to (see `pgha status`)")
    tty = ["-it"] if sql is None and sys.stdin.isatty() else ["-i"]
    cmd = ["docker", "exec", *tty, "-u", "postgres", spec.container(target), "psql", "-d", dbname]
    if sql is not None:
        cmd += ["-v", "ON_ERROR_STOP=1", "-c", sql]
    return subprocess.call(cmd)


@app.command(rich_help_panel=BACKUPS)
@command(render.backups)
def backups(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, as_json: bool = JsonOpt) -> Done[BackupsResult]:
    """Backup sets (type, size, WAL range, last verification) and the window a PITR restore can reach.

    Example: pgha backups --json
    """
    spec = resolve_spec(spec_file, scope)
    if not spec.backup.enabled:
        raise UsageError(f"backups are disabled in {spec.scope}'s spec (backup.enabled: false)")
    import datetime as dt

    from stack import backup as bk
    from stack import backup_decisions as bkd
    from tasks import pgbackrest
    from tasks.host import journal

    if bk.uses_repo_host(spec):
        sets, wal_min, wal_max = pgbackrest.info(spec, spec.repo_member)  # read in the repository host
    else:
        nodes = pgbackrest.running_nodes(spec)
        if not nodes:
            raise StateError(f"no Patroni node of {spec.scope} runs; the repository is read through one")
        sets, wal_min, wal_max = pgbackrest.info(spec, nodes[0])
    checked: dict[str, str] = {}
    for e in journal.entries(spec.scope):
        if e.get("operation") == "verify-restore" and e.get("label"):
            checked[str(e["label"])] = "passed" if e.get("verified") else f"FAILED: {e.get('error') or e.get('outcome')}"
    rows = [_backup_row(s, checked.get(s.label, "never")) for s in reversed(sets)]  # newest first
    window = bkd.recoverable_range(sets, dt.datetime.now(dt.UTC))
    return Done(BackupsResult(scope=spec.scope, sets=rows, recoverable_from=window[0].isoformat() if window else "",
                              recoverable_to=window[1].isoformat() if window else "",
                              archive_min=wal_min or "", archive_max=wal_max or ""), spec)


def _backup_row(s: object, verified: str) -> object:
    from stack.results import BackupRow

    return BackupRow(label=s.label, type=s.type, started=s.start.isoformat(), stopped=s.stop.isoformat(),  # type: ignore[attr-defined]
                     size_bytes=s.size, repo_bytes=s.repo_size, wal_start=s.wal_start, wal_stop=s.wal_stop,  # type: ignore[attr-defined]
                     verified="FAILED: pgBackRest marks it in error" if s.error else verified)  # type: ignore[attr-defined]


@app.command(rich_help_panel=SUPPORT)
@command(render.history)
def history(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, as_json: bool = JsonOpt) -> Done[HistoryResult]:
    """Timelines and leader changes, with times and causes (switchover, failover, drill, upgrade, ...).

    Example: pgha history --json
    """
    spec = resolve_spec(spec_file, scope)
    from stack.errors import PatroniError
    from stack.operator import history_events
    from stack.results import HistoryRow
    from tasks.host import journal
    from tasks.observe import HISTORY_PARTS, observe

    # Patroni's view and its /history, asked side by side in one snapshot (`tasks.observe`).
    snap = observe(spec, HISTORY_PARTS, deep=False)
    p_state, switches = snap.patroni.value, snap.history.value
    if p_state is None or switches is None:
        raise PatroniError(snap.patroni.error or snap.history.error)
    lead = p_state.view.leader()
    events = history_events(switches, journal.entries(spec.scope))
    rows = [HistoryRow(timeline=e.timeline, time=e.time, new_leader=e.new_leader, cause=e.cause, detail=e.detail)
            for e in events]
    return Done(HistoryResult(scope=spec.scope, leader=lead.name if lead else "", timeline=lead.timeline if lead else None,
                              rows=rows), spec)


@app.command(rich_help_panel=SUPPORT)
@command(render.report, flows=True)
def report(output: Path | None = typer.Option(None, "--output", "-o", help="tarball path (default ./pgha-report-<scope>-<time>.tar.gz)"),
           audit: bool = typer.Option(True, "--audit/--no-audit", help="include a health audit (runs the flow)"),
           spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, as_json: bool = JsonOpt) -> Done[ReportResult]:
    """A tarball for support: spec and configs (rendered without credentials), status, audit, history, recent logs.

    Every member of the tarball is scanned for every secret pgha holds; a hit means no report.

    Example: pgha report --output /tmp/pgha-report.tar.gz
    """
    spec = resolve_spec(spec_file, scope)
    require_engines(spec)
    from dataclasses import asdict

    from tasks import patroni, support_report
    from tasks.cluster_health import cluster_status, status_of

    path = output or Path(f"pgha-report-{spec.scope}-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz")
    audit_json = None
    seen = ahead = None
    if audit:
        warm()
        from tasks.host.generations import deployed, serving
        from tasks.observe import REPORT_PARTS, prefetch

        # One observation for the audit and the status: the audit's flow takes this snapshot.
        seen = deployed(serving(spec))
        ahead = prefetch(seen, REPORT_PARTS) if seen == deployed(spec) else None
        from flows.audit import audit as audit_flow

        state = run_flow(audit_flow, spec, return_state=True)
        audit_json = state.result(raise_on_failure=False)
        audit_json = audit_json.to_json() if hasattr(audit_json, "to_json") else {"error": str(audit_json)}
    history: list[dict[str, Any]] | dict[str, Any]
    snap = ahead.result() if seen and ahead else None
    if snap is not None and snap.history.asked:  # the audit's snapshot saw it
        history = ([asdict(h) for h in snap.history.value] if snap.history.value is not None
                   else {"error": snap.history.error})
    else:
        try:
            history = [asdict(h) for h in patroni.history(spec)]
        except PghaError as exc:
            history = {"error": str(exc)}
    status = (status_of(seen, snap) if seen and snap else cluster_status(spec)).to_json()
    return Done(support_report.build(spec, path, status, audit_json, history), spec)
