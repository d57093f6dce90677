"""Backup verbs: backup, dump, verify-restore, restore."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cli import render
from cli.core import (
    BACKUPS,
    Done,
    JsonOpt,
    ScopeOpt,
    SpecOpt,
    Verb,
    app,
    checks,
    command,
    run_flow,
)
from stack.backup_decisions import BackupType
from stack.errors import UsageError
from stack.results import BackupResult, DumpResult, RestoreResult, VerifyResult
from stack.spec import load_spec

IntoSpecOpt = typer.Option(None, "--into-spec", help="spec file of the new cluster (default: the source's, ports + 10)")


@app.command(rich_help_panel=BACKUPS)
@command(render.backup, flows=True)
def backup(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
           backup_type: BackupType = typer.Option(BackupType.FULL, "--type", help="full | diff | incr"),
           no_verify: bool = typer.Option(False, "--no-verify", help="skip the verified restore after the backup"),
           as_json: bool = JsonOpt) -> Done[BackupResult]:
    """pgBackRest backup from a replica, then restore it into a scratch container and check it.

    Example: pgha backup --type diff
    """
    verb = Verb.open("backup", spec_file, scope).warm()
    from flows.backup import backup as backup_flow
    from flows.backup import preflight

    verb.engines()
    with checks() as check:
        check(preflight, verb.spec)
        return verb.run(backup_flow, backup_type, verify=False if no_verify else None)


@app.command(rich_help_panel=BACKUPS)
@command(render.dump, flows=True)
def dump(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, as_json: bool = JsonOpt) -> Done[DumpResult]:
    """pg_dump -Fc of every database from a replica into the repository volume (own retention).

    Example: pgha dump --json
    """
    verb = Verb.open("dump", spec_file, scope).warm()
    from flows.backup import dump as dump_flow

    return verb.engines().run(dump_flow)


@app.command("verify-restore", rich_help_panel=BACKUPS)
@command(render.verify_restore, flows=True)
def verify_restore(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
                   label: str | None = typer.Option(None, "--set", help="backup set label (default: the newest)"),
                   as_json: bool = JsonOpt) -> Done[VerifyResult]:
    """Restore a backup set into a scratch container, check it, remove it. Exit non-zero on any failure.

    Example: pgha verify-restore --set 20260301-020000F
    """
    verb = Verb.open("verify-restore", spec_file, scope).warm()
    from flows.verify import preflight
    from flows.verify import verify_restore as verify_flow

    verb.engines()
    with checks() as check:
        check(preflight, verb.spec, label)
        return verb.run(verify_flow, label=label)


@app.command(rich_help_panel=BACKUPS)
@command(render.restore, flows=True)
def restore(to: str = typer.Option(..., "--to", help="target time with zone, e.g. '2026-11-25 21:03:00+00'"),
            spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
            into: str | None = typer.Option(None, "--into", help="new cluster scope to restore into (default)"),
            into_spec: Path | None = IntoSpecOpt,
            in_place: bool = typer.Option(False, "--in-place", help="rebuild the live cluster from the restore"),
            yes: bool = typer.Option(False, "--yes", help="confirm --in-place"),
            as_json: bool = JsonOpt) -> Done[RestoreResult]:
    """Point-in-time restore into a new cluster (safe default), or in place with --in-place --yes.

    Example: pgha restore --to '2026-03-01 09:30:00+00' --into restored
    """
    from stack.backup_decisions import parse_target_time

    target = parse_target_time(to)
    if isinstance(target, str):
        raise UsageError(target)
    if in_place and (into or into_spec):
        raise UsageError("--in-place and --into/--into-spec exclude each other")
    if in_place and not yes:
        raise UsageError("--in-place stops the live cluster and replaces its data; add --yes to confirm")
    if not in_place and not (into or into_spec):
        raise UsageError("say where to restore: --into SCOPE (a new cluster) or --in-place --yes")
    verb = Verb.open("restore", spec_file, scope).warm()
    from flows.restore import preflight, target_spec
    from flows.restore import restore as restore_flow

    spec = verb.engines().spec
    new_spec = None if in_place else target_spec(spec, into, load_spec(into_spec) if into_spec else None)
    when = target.isoformat()  # what the flow gets, so its preflight call is the same one
    with checks() as check:
        check(preflight, spec, when, new_spec, in_place)
        if in_place:
            # Said before anything changes: the user asked for it with --yes, but should see it.
            sys.stderr.write(f"pgha: {spec.scope} will be stopped and rebuilt; everything written after "
                             f"{target.isoformat(' ')} is discarded\n")
        result = run_flow(restore_flow, spec, when, new_spec, in_place=in_place)
    return Done(result, new_spec)
