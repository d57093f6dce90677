"""`pgha switchover`: the planned switchover as an operator verb (pooler-aware)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli import render
from cli.core import (
    DAY_TWO,
    Done,
    JsonOpt,
    ScopeOpt,
    SpecOpt,
    Verb,
    WaitOpt,
    app,
    checks,
    command,
)
from stack.results import SwitchoverResult


@app.command(rich_help_panel=DAY_TWO)
@command(render.switchover, flows=True)
def switchover(to: str | None = typer.Option(None, "--to", help="the replica to hand over to (default: the sync standby)"),
               spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, wait: float = WaitOpt,
               as_json: bool = JsonOpt) -> Done[SwitchoverResult]:
    """Hand the leadership to a replica: pooler paused (clients wait, never fail), routed at once, resumed.

    Example: pgha switchover --to pg-2
    """
    verb = Verb.open("switchover", spec_file, scope, wait)
    from flows.switchover import preflight
    from flows.switchover import switchover as switchover_flow

    verb.engines()
    with checks() as check:
        check(preflight, verb.spec, to)  # refusals are one line, before the flow starts
        return verb.warm().run(switchover_flow, to=to, wait_seconds=wait)
