"""config: change PostgreSQL parameters through Patroni's dynamic configuration, then a rolling
restart of the members that report `pending_restart` (replicas first, then the primary by
switchover or in-place restart as `upgrade.primary` says).

Parameters Patroni owns or PostgreSQL cannot take are refused before anything changes. The
stored spec's `postgres_parameters` follow the change, so the spec stays the source of truth.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows import status as status_mod
from flows.upgrade import Ctx, _store_spec, caught_up, put_back, take_out
from stack.errors import StateError, UsageError
from stack.rolling import check_parameter
from stack.spec import ClusterSpec, RestartPolicy
from stack.wait import wait_for
from tasks import docker_engine as de
from tasks import patroni
from tasks._prefect import ONCE
from tasks.host.lock import holder_name, mutating
from tasks.host.secrets import load_or_create
from tasks.host.state import secrets_file


def validate(spec: ClusterSpec, leader: str, params: dict[str, str]) -> dict[str, bool]:
    """Refuse what cannot be set (UsageError, one line); return {name: needs restart}."""
    found = patroni.settings(spec, leader, list(params))
    problems = [p for name, value in params.items() if (p := check_parameter(name, value, found.get(name)))]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(problems[0] + more)
    return {n: bool(found.get(n) and found[n].needs_restart) for n in params}


@task(name="restart-member", **ONCE)
def restart_member(ctx: Ctx, member: str, is_leader: bool) -> None:
    """Drain (tags), restart PostgreSQL through Patroni, wait until caught up, put back."""
    spec = ctx.spec
    take_out(ctx, member, is_leader)
    since = time.time()
    patroni.restart_member(spec, member)
    wait_for(f"{member} restarted and caught up", lambda: caught_up(spec, member, since,
                                                                    spec.upgrade.caught_up_lag_bytes, is_leader),
             lambda why: why == "", timeout=ctx.timeout, interval=0.5, describe=lambda why: why,
             logs=lambda: de.logs(spec.container(member), tail=12))
    put_back(ctx, member)


def _switch_to_restarted(ctx: Ctx, leader: str) -> str:
    spec = ctx.spec

    def candidate() -> str:
        view = patroni.cluster_view(spec)
        reps = [m for m in view.members if not m.is_leader and m.streaming and not m.pending_restart]
        sync = [m.name for m in reps if m.role == patroni.MemberRole.SYNC_STANDBY]
        if any(m.role == patroni.MemberRole.SYNC_STANDBY for m in view.members):
            return sync[0] if sync else ""
        return reps[0].name if reps else ""

    cand = wait_for("a restarted replica to hand the leadership to", candidate, bool, timeout=30, interval=0.5)
    patroni.switchover(spec, leader, cand)
    wait_for(f"{cand} to lead and {leader} to replicate", lambda: patroni.cluster_view(spec),
             lambda v: bool(v.leader() and v.leader().name == cand and patroni.assess(v, spec).ok),  # type: ignore[union-attr]
             timeout=ctx.timeout, interval=0.5, describe=lambda v: patroni.assess(v, spec).reason)
    return cand


@flow(name="config-set", description="Change PostgreSQL parameters (Patroni dynamic config) with a rolling restart.")
def config_set(spec: ClusterSpec = ClusterSpec(), parameters: dict[str, str] | None = None,  # noqa: B008
               restart: bool = True) -> dict[str, Any]:
    """Set `parameters`; restart members with pending_restart one at a time unless restart=False."""
    if not parameters:
        raise UsageError("give at least one KEY=VALUE")
    with mutating(spec.scope, holder_name("config-set")):
        return _config_set(spec, dict(parameters), restart)


def _config_set(spec: ClusterSpec, params: dict[str, str], restart: bool) -> dict[str, Any]:
    log = get_run_logger()
    de.client()
    st = status_mod.collect(spec)
    if not st.healthy:
        raise StateError(f"cluster {spec.scope} is not healthy, refusing the change: {st.problems[0]} (see `pgha status`)")
    view = patroni.cluster_view(spec)
    lead = view.leader()
    assert lead is not None  # healthy means exactly one
    needs = validate(spec, lead.name, params)
    started = time.monotonic()
    patroni.edit_parameters(spec, lead.name, params)
    patched_at = time.monotonic()
    new_params = {**spec.postgres_parameters, **params}
    _store_spec(spec.model_copy(update={"postgres_parameters": new_params}))
    log.info("dynamic configuration patched: %s", ", ".join(f"{k}={v}" for k, v in params.items()))
    subnet, _ = de.ensure_network(spec.scope, spec.network)
    ctx = Ctx(spec=spec, secrets=load_or_create(secrets_file(spec.scope)), subnet=subnet,
              timeout=spec.upgrade.node_timeout_s)
    restarted: list[str] = []
    if any(needs.values()):
        # Patroni notices the new configuration on its next loop and flags pending_restart.
        wait_for("every member to see the change (pending_restart)",
                 lambda: [m.name for m in patroni.cluster_view(spec).members if not m.pending_restart],
                 lambda left: not left, timeout=spec.timing.loop_wait * 3 + 20, interval=0.5,
                 describe=lambda left: "not yet: " + ", ".join(left))
        if restart:
            restarted = _rolling_restart(ctx)
    else:
        ctx.note("no parameter needs a restart; reloaded by Patroni")
    # Every member runs the new values: ask each one.
    def values() -> dict[str, dict[str, str]]:
        return {m: {k: patroni.show(spec, m, k) for k in params} for m in spec.node_names()}

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

    seen = wait_for("every member to run the new values", values, applied,
                    timeout=spec.timing.loop_wait * 3 + 30, interval=0.5)
    rows = [{"member": m, **vals, "pending_restart": str(patroni.pending_restart(spec, m))} for m, vals in seen.items()]
    create_table_artifact(key=f"{spec.scope}-config-set", table=rows,
                          description=", ".join(f"{k}={v}" for k, v in params.items()))
    return {"parameters": params, "needs_restart": needs, "restarted": restarted, "values": seen,
            "events": ctx.events, "elapsed_s": round(time.monotonic() - started, 1)}


def _rolling_restart(ctx: Ctx) -> list[str]:
    spec = ctx.spec
    done: list[str] = []
    view = patroni.cluster_view(spec)
    lead = view.leader()
    assert lead is not None
    for m in sorted((m for m in view.members if not m.is_leader and m.pending_restart), key=lambda m: m.name):
        ctx.note(f"restarting replica {m.name}")
        restart_member(ctx, m.name, False)
        done.append(m.name)
    if not patroni.pending_restart(spec, lead.name):
        return done
    if spec.upgrade.primary == RestartPolicy.SWITCHOVER and spec.nodes > 1:
        cand = _switch_to_restarted(ctx, lead.name)
        ctx.note(f"switched over {lead.name} -> {cand}")
        if patroni.pending_restart(spec, lead.name):
            ctx.note(f"restarting {lead.name} (now a replica)")
            restart_member(ctx, lead.name, False)
    else:
        ctx.note(f"restarting primary {lead.name} in place")
        restart_member(ctx, lead.name, True)
    done.append(lead.name)
    return done
