"""Rolling changes: upgrade, config set, scale, etcd replace."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from cli import render
from cli.core import (
    CHANGES,
    DAY_TWO,
    Done,
    JsonOpt,
    ScopeOpt,
    SpecOpt,
    Verb,
    app,
    checks,
    command,
    require_engines,
    resolve_spec,
    run_flow,
    stderr_line,
    warm,
)
from stack.errors import UsageError
from stack.results import ConfigSetResult, EtcdReplaceResult, MajorUpgradeResult, ScaleResult, UpgradeResult
from tasks.host.state import cluster_dir

config_app = typer.Typer(no_args_is_help=True, help="Change PostgreSQL parameters with a rolling restart.")
app.add_typer(config_app, name="config", rich_help_panel=CHANGES)
etcd_app = typer.Typer(no_args_is_help=True, help="etcd member maintenance.")
app.add_typer(etcd_app, name="etcd", rich_help_panel=DAY_TWO)


class SecurityUpdates(StrEnum):
    """`upgrade --updates`: the only build an upgrade rolls out by itself."""

    SECURITY = "security"


@app.command(rich_help_panel=CHANGES)
@command(render.any_upgrade, flows=True)
def upgrade(image: str | None = typer.Option(None, "--image", help="target node image tag (same PostgreSQL major)"),
            updates: SecurityUpdates | None = typer.Option(
                None, "--updates", help="security: build (if missing) and roll out the spec's image "
                                        "with the suite's security updates, instead of --image"),
            spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
            node_timeout: int | None = typer.Option(None, "--node-timeout", min=10, max=3600,
                                                    help="seconds one node may take to come back (default: spec)"),
            major: str | None = typer.Option(None, "--major", metavar="[MAJOR]",
                                             help="blue/green major upgrade to this PostgreSQL major (default: "
                                                  "the newest pgha packages) through logical replication"),
            rollback: bool = typer.Option(False, "--rollback", help="with --major: clients back to the old cluster"),
            finish: bool = typer.Option(False, "--finish", help="with --major: drop the old cluster (needs --yes)"),
            yes: bool = typer.Option(False, "--yes", help="confirm --finish (the old cluster's data is deleted)"),
            replica_identity_full: bool = typer.Option(
                False, "--replica-identity-full", help="with --major: set REPLICA IDENTITY FULL on tables without a key"),
            as_json: bool = JsonOpt) -> Done[UpgradeResult] | Done[MajorUpgradeResult]:
    """Rolling minor upgrade of the Patroni nodes to IMAGE: replicas first, switchover, then the old leader.

    With --major: blue/green upgrade to a new PostgreSQL major (--rollback, --finish --yes).

    Example: pgha upgrade --updates security
    """
    if major is not None or rollback or finish:
        if image is not None or updates is not None:
            raise UsageError("--major is a blue/green upgrade; it takes no --image or --updates")
        return _major(major, rollback, finish, yes, replica_identity_full, spec_file, scope)
    if replica_identity_full or yes:
        raise UsageError("--replica-identity-full and --yes go with --major")
    if (image is None) == (updates is None):
        raise UsageError("give exactly one of --image TAG or --updates security")
    if image is not None and not image.strip():
        raise UsageError("--image must name an image tag")
    verb = Verb.open("upgrade", spec_file, scope).warm()
    from flows.upgrade import upgrade as upgrade_flow
    from flows.upgrade import upgrade_preflight

    spec = verb.engines().spec
    target = image or ""
    if updates is not None:
        from tasks.images import ensure_image

        target, log = ensure_image(spec.model_copy(update={"image": None}), updates.value)
        for line in log:
            stderr_line(f"pgha: {line}")
    with checks() as check:
        # Refuse before paying the flow's start-up when the pre-check already says no. An
        # interrupted upgrade is resumed first by the flow, which judges the cluster after that.
        if not (cluster_dir(spec.scope) / "upgrade-pending.json").exists():
            check(upgrade_preflight, spec, target)
        return verb.run(upgrade_flow, image=target, node_timeout_s=node_timeout)


def _major(major: str | None, rollback: bool, finish: bool, yes: bool, replica_identity_full: bool,
           spec_file: Path | None, scope: str | None) -> Done[MajorUpgradeResult]:
    """`upgrade --major`: pre-check (and wal_level=logical by a rolling restart), then the major-upgrade flow."""
    from stack.major import Request
    from stack.spec import SUITE_FOR_MAJOR

    if rollback and finish:
        raise UsageError("give one of --rollback or --finish")
    if finish and not yes:
        raise UsageError("--finish deletes the old cluster's nodes and data; add --yes to confirm")
    target = max(SUITE_FOR_MAJOR)
    if major not in (None, "latest"):
        if not major.isdigit():
            raise UsageError(f"--major takes a PostgreSQL major version such as {target}, not '{major}'")
        target = int(major)
    request = Request.ROLLBACK if rollback else Request.FINISH if finish else Request.UPGRADE
    spec = resolve_spec(spec_file, scope)
    from stack.major import hosts_refusal

    if (why := hosts_refusal(spec)) is not None:
        raise UsageError(why)
    warm()
    from flows.config import config_set as config_flow
    from flows.major_upgrade import major_upgrade as major_flow
    from flows.steps.major import major_preflight
    from tasks.host.generations import major_state_file

    require_engines(spec)
    if request == Request.UPGRADE and not major_state_file(spec.scope).exists():
        verdict = major_preflight(spec, target, replica_identity_full)
        for n in verdict.notes:
            stderr_line(f"pgha: {n}")
        if any(n.startswith("wal_level") for n in verdict.notes):
            run_flow(config_flow, spec, parameters={"wal_level": "logical"}, restart=True)
            spec = resolve_spec(None, spec.scope) if spec_file is None else spec
    result = run_flow(major_flow, spec, target=target, request=request, replica_identity_full=replica_identity_full)
    return Done(result, spec)


@config_app.command("set")
@command(render.config_set, flows=True)
def config_set(assignments: list[str] = typer.Argument(..., help="KEY=VALUE PostgreSQL parameters (KEY= resets KEY)"),  # noqa: B008
               spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
               no_restart: bool = typer.Option(False, "--no-restart", help="leave members with pending_restart"),
               as_json: bool = JsonOpt) -> Done[ConfigSetResult]:
    """Set PostgreSQL parameters through Patroni; restart members that need it, one at a time.

    Only parameters pgha allows (by their pg_settings context and category) are accepted; a
    preload list may name only libraries the image carries. When a new session through the R/W
    port does not open after the change, it is rolled back (exit 4). `KEY=` resets KEY.

    Example: pgha config set work_mem=64MB max_connections=200
    """
    from stack.rolling import parse_assignments

    try:
        params = parse_assignments(assignments)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return _run_config(params, spec_file, scope, no_restart)


@config_app.command("reset")
@command(render.config_set, flows=True)
def config_reset(keys: list[str] = typer.Argument(..., help="PostgreSQL parameters to reset"),  # noqa: B008
                 spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
                 no_restart: bool = typer.Option(False, "--no-restart", help="leave members with pending_restart"),
                 as_json: bool = JsonOpt) -> Done[ConfigSetResult]:
    """Reset PostgreSQL parameters: back to pgha's value, or PostgreSQL's default; always allowed.

    Also accepted on a cluster that no new session can enter (what a reset repairs).

    Example: pgha config reset work_mem
    """
    from stack.rolling import parse_assignments

    try:
        params = parse_assignments([f"{k}=" for k in keys])
    except ValueError as exc:
        raise UsageError(str(exc).replace("KEY=VALUE", "KEY")) from None
    return _run_config(params, spec_file, scope, no_restart)


def _run_config(params: dict[str, str], spec_file: Path | None, scope: str | None,
                no_restart: bool) -> Done[ConfigSetResult]:
    verb = Verb.open("config set", spec_file, scope).warm()
    from flows.config import config_set as config_flow
    from flows.config import validate
    from tasks.patroni import cluster_view

    verb.engines()
    with checks() as check:
        # Refuse a parameter before paying the flow's start-up.
        # Without a leader the flow's own health check says what is wrong.
        if cluster_view(verb.spec).leader() is not None:
            check(validate, verb.spec, params)
        return verb.run(config_flow, parameters=params, restart=not no_restart)


@app.command(rich_help_panel=CHANGES)
@command(render.scale, flows=True)
def scale(nodes: int = typer.Option(..., "--nodes", min=1, max=9, help="number of Patroni nodes wanted (1-9)"),
          spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
          as_json: bool = JsonOpt) -> Done[ScaleResult]:
    """Add or remove Patroni nodes; HAProxy is reloaded without dropping sessions.

    Example: pgha scale --nodes 5
    """
    from stack.scale import scaled_spec

    verb = Verb.open("scale", spec_file, scope)
    scaled_spec(verb.spec, nodes)  # over hosts: a count the hosts cannot hold is refused before any start-up
    verb.warm()
    from flows.scale import scale as scale_flow

    return verb.engines().run(scale_flow, nodes=nodes)


@etcd_app.command("replace")
@command(render.etcd_replace, flows=True)
def etcd_replace(member: str = typer.Argument(..., help="etcd member to replace, e.g. etcd-2"),
                 spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
                 as_json: bool = JsonOpt) -> Done[EtcdReplaceResult]:
    """Replace one etcd member (remove, fresh data, add back), keeping quorum throughout.

    Example: pgha etcd replace etcd-2
    """
    verb = Verb.open("etcd replace", spec_file, scope)
    if member not in verb.spec.etcd_names():
        raise UsageError(f"'{member}' is not an etcd member of {verb.spec.scope}; choose one of "
                         f"{', '.join(verb.spec.etcd_names())}")
    verb.warm()
    from flows.etcd_replace import etcd_replace as replace_flow

    return verb.engines().run(replace_flow, member=member)
