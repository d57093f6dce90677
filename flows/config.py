"""config: change PostgreSQL parameters through Patroni's dynamic configuration, then a rolling
restart of the members that report `pending_restart` (replicas first, then the primary by
switchover or in-place restart as `upgrade.primary` says).

Parameters Patroni owns or PostgreSQL cannot take are refused before anything changes. The
stored spec's `postgres_parameters` follow the change, so the spec stays the source of truth.
"""

from __future__ import annotations

import time

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.steps import preflight_once
from flows.steps.cluster import require_healthy, store_spec, switchover
from flows.steps.nodes import NodeCtx, node_ctx, restart_node
from flows.steps.ops import current, mutating_flow, note
from stack.cluster import MemberRole
from stack.errors import StateError, UsageError
from stack.results import ConfigSetResult
from stack.rolling import check_parameter
from stack.spec import ClusterSpec, RestartPolicy
from stack.wait import wait_for
from tasks import patroni, postgres


def validate(spec: ClusterSpec, params: dict[str, str]) -> dict[str, bool]:
    """Refuse what cannot be set (UsageError, one line); return {name: needs restart}.

    The leader's pg_settings say what each parameter is (context, type, bounds).
    """
    lead = patroni.cluster_view(spec).leader()
    if lead is None:
        raise StateError(f"cluster {spec.scope} has no leader to check the parameters against (see `pgha status`)")
    found = postgres.settings(spec, lead.name, list(params))
    problems = [p for name, value in params.items() if (p := check_parameter(name, value, found.get(name)))]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(problems[0] + more)
    return {n: bool(found.get(n) and found[n].needs_restart) for n in params}


def _restarted_candidate(spec: ClusterSpec) -> str:
    """A streaming replica already restarted (the sync standby in synchronous mode); '' if none yet."""
    view = patroni.cluster_view(spec)
    reps = [m for m in view.replicas() if m.streaming and not m.pending_restart]
    if spec.timing.synchronous_mode or any(m.role == MemberRole.SYNC_STANDBY for m in view.members):
        # Patroni refuses any candidate but the sync standby (also while it has none yet).
        return next((m.name for m in reps if m.role == MemberRole.SYNC_STANDBY), "")
    return reps[0].name if reps else ""


def _rolling_restart(ctx: NodeCtx) -> list[str]:
    spec = ctx.spec
    done: list[str] = []
    view = patroni.cluster_view(spec)
    lead = view.leader()
    assert lead is not None
    for m in sorted((m for m in view.replicas() if m.pending_restart), key=lambda m: m.name):
        note(f"restarting replica {m.name}")
        restart_node(ctx, m.name, False)
        done.append(m.name)
    if not patroni.pending_restart(spec, lead.name):
        return done
    if spec.upgrade.primary == RestartPolicy.SWITCHOVER and spec.nodes > 1:
        cand = wait_for("a restarted replica to hand the leadership to", lambda: _restarted_candidate(spec), bool,
                        timeout=30, interval=0.5)
        switchover(spec, lead.name, cand, ctx.timeout)
        note(f"switched over {lead.name} -> {cand}")
        if patroni.pending_restart(spec, lead.name):
            note(f"restarting {lead.name} (now a replica)")
            restart_node(ctx, lead.name, False)
    else:
        note(f"restarting primary {lead.name} in place")
        restart_node(ctx, lead.name, True)
    done.append(lead.name)
    return done


def _wait_applied(spec: ClusterSpec, params: dict[str, str], needs: dict[str, bool], restart: bool,
                  patched_at: float) -> dict[str, dict[str, str]]:
    """Every member runs the new values (asked of each one)."""
    def values() -> dict[str, dict[str, str]]:
        return {m: {k: postgres.show(spec, m, k) for k in params} for m in spec.node_names()}

    settle = spec.timing.loop_wait * 2 + 2

    def applied(v: dict[str, dict[str, str]]) -> bool:
        if restart and any(patroni.pending_restart(spec, m) for m in v):
            return False
        if not restart and any(needs.values()):
            return True  # restart-requiring values take effect at the next restart
        # PostgreSQL shows values normalised (8192kB -> 8MB): equal to what was asked, or the
        # same on every member once Patroni has had two loops to reload them.
        for k, want in params.items():
            shown = {vals[k] for vals in v.values()}
            if shown != {want} and not (len(shown) == 1 and time.monotonic() - patched_at > settle):
                return False
        return True

    return wait_for("every member to run the new values", values, applied,
                    timeout=spec.timing.loop_wait * 3 + 30, interval=0.5)


@flow(name="config-set", description="Change PostgreSQL parameters (Patroni dynamic config) with a rolling restart.")
@mutating_flow("config-set")
def config_set(spec: ClusterSpec = ClusterSpec(), parameters: dict[str, str] | None = None,  # noqa: B008
               restart: bool = True) -> ConfigSetResult:
    """Set `parameters`; restart members with pending_restart one at a time unless restart=False."""
    if not parameters:
        raise UsageError("give at least one KEY=VALUE")
    params = dict(parameters)
    require_healthy(spec, "the change")
    needs = preflight_once(validate, spec, params)
    patroni.edit_parameters(spec, params)
    patched_at = time.monotonic()
    store_spec(spec.model_copy(update={"postgres_parameters": {**spec.postgres_parameters, **params}}))
    note("dynamic configuration patched: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    restarted: list[str] = []
    if any(needs.values()):
        # Patroni notices the new configuration on its next loop and flags pending_restart.
        wait_for("every member to see the change (pending_restart)",
                 lambda: [m.name for m in patroni.cluster_view(spec).members if not m.pending_restart],
                 lambda left: not left, timeout=spec.timing.loop_wait * 3 + 20, interval=0.5,
                 describe=lambda left: "not yet: " + ", ".join(left))
        if restart:
            restarted = _rolling_restart(node_ctx(spec, spec.upgrade.node_timeout_s))
    else:
        note("no parameter needs a restart; reloaded by Patroni")
    seen = _wait_applied(spec, params, needs, restart, patched_at)
    rows = [{"member": m, **vals, "pending_restart": str(patroni.pending_restart(spec, m))} for m, vals in seen.items()]
    create_table_artifact(key=f"{spec.scope}-config-set", table=rows,
                          description=", ".join(f"{k}={v}" for k, v in params.items()))
    op = current()
    return ConfigSetResult(parameters=params, needs_restart=needs, restarted=restarted, values=seen,
                           events=op.events, elapsed_s=op.elapsed())
