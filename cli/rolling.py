"""Rolling changes: upgrade, config set, scale, etcd replace."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from cli import render
from cli.core import (
    Done,
    JsonOpt,
    ScopeOpt,
    SpecOpt,
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
from stack.results import ConfigSetResult, EtcdReplaceResult, ScaleResult, UpgradeResult
from tasks.host.state import cluster_dir

config_app = typer.Typer(no_args_is_help=True, help="Change PostgreSQL parameters with a rolling restart.")
app.add_typer(config_app, name="config")
etcd_app = typer.Typer(no_args_is_help=True, help="etcd member maintenance.")
app.add_typer(etcd_app, name="etcd")


class SecurityUpdates(StrEnum):
    """`upgrade --updates`: the only build an upgrade rolls out by itself."""

    SECURITY = "security"


@app.command()
@command(render.upgrade, flows=True)
def upgrade(image: str | None = typer.Option(None, "--image", help="target node image tag (same PostgreSQL major)"),
            updates: SecurityUpdates | None = typer.Option(
                None, "--updates", help="security: build (if missing) and roll out the spec's image "
                                        "with the suite's security updates, instead of --image"),
            spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
            node_timeout: int | None = typer.Option(None, "--node-timeout", min=10, max=3600,
                                                    help="seconds one node may take to come back (default: spec)"),
            as_json: bool = JsonOpt) -> Done[UpgradeResult]:
    """Rolling minor upgrade of the Patroni nodes to IMAGE: replicas first, switchover, then the old leader."""
    if (image is None) == (updates is None):
        raise UsageError("give exactly one of --image TAG or --updates security")
    if image is not None and not image.strip():
        raise UsageError("--image must name an image tag")
    spec = resolve_spec(spec_file, scope)
    warm()
    from flows.upgrade import upgrade as upgrade_flow
    from flows.upgrade import upgrade_preflight

    require_engines(spec)
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
        result = run_flow(upgrade_flow, spec, image=target, node_timeout_s=node_timeout)
    return Done(result, spec)


@config_app.command("set")
@command(render.config_set, flows=True)
def config_set(assignments: list[str] = typer.Argument(..., help="KEY=VALUE PostgreSQL parameters"),  # noqa: B008
               spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
               no_restart: bool = typer.Option(False, "--no-restart", help="leave members with pending_restart"),
               as_json: bool = JsonOpt) -> Done[ConfigSetResult]:
    """Set PostgreSQL parameters through Patroni; restart members that need it, one at a time."""
    from stack.rolling import parse_assignments

    try:
        params = parse_assignments(assignments)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    spec = resolve_spec(spec_file, scope)
    warm()
    from flows.config import config_set as config_flow
    from flows.config import validate
    from tasks.patroni import cluster_view

    require_engines(spec)
    with checks() as check:
        # Refuse a parameter before paying the flow's start-up.
        # Without a leader the flow's own health check says what is wrong.
        if cluster_view(spec).leader() is not None:
            check(validate, spec, params)
        result = run_flow(config_flow, spec, parameters=params, restart=not no_restart)
    return Done(result, spec)


@app.command()
@command(render.scale, flows=True)
def scale(nodes: int = typer.Option(..., "--nodes", min=1, max=9, help="number of Patroni nodes wanted (1-9)"),
          spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
          as_json: bool = JsonOpt) -> Done[ScaleResult]:
    """Add or remove Patroni nodes; HAProxy is reloaded without dropping sessions."""
    spec = resolve_spec(spec_file, scope)
    warm()
    from flows.scale import scale as scale_flow

    require_engines(spec)
    return Done(run_flow(scale_flow, spec, nodes=nodes), spec)


@etcd_app.command("replace")
@command(render.etcd_replace, flows=True)
def etcd_replace(member: str = typer.Argument(..., help="etcd member to replace, e.g. etcd-2"),
                 spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
                 as_json: bool = JsonOpt) -> Done[EtcdReplaceResult]:
    """Replace one etcd member (remove, fresh data, add back), keeping quorum throughout."""
    spec = resolve_spec(spec_file, scope)
    if member not in spec.etcd_names():
        raise UsageError(f"'{member}' is not an etcd member of {spec.scope}; choose one of "
                         f"{', '.join(spec.etcd_names())}")
    warm()
    from flows.etcd_replace import etcd_replace as replace_flow

    require_engines(spec)
    return Done(run_flow(replace_flow, spec, member=member), spec)
