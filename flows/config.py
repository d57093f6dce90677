"""config: change PostgreSQL parameters through Patroni's dynamic configuration, then a rolling
restart of the members that report `pending_restart` (replicas first, then the primary by
switchover or in-place restart as `upgrade.primary` says).

Parameters Patroni or pgha own, memory settings the node's limit cannot hold, and values
PostgreSQL cannot take are refused before anything changes. The stored spec's
`postgres_parameters` follow the change only once every member runs it, so the spec stays the
source of truth. When a restarted member does not come back (`superuser_reserved_connections` above
`max_connections`: the postmaster refuses to start), or a new session through the R/W port does
not open after the change, the change is rolled back: the dynamic configuration reverted, the
members touched restarted on the old values, the cluster healthy again, the spec unchanged.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.steps import preflight_once
from flows.steps.cluster import require_healthy, store_spec
from flows.steps.ops import current, mutating_flow, note
from stack.cluster import MemberRole
from stack.errors import PghaError, PostgresError, RolledBack, StateError, UsageError
from stack.parameters import LIBRARY_PARAMS, library_list
from stack.render import dcs_config
from stack.results import ConfigSetResult
from stack.rolling import check_parameter
from stack.spec import ClusterSpec, RestartPolicy
from stack.wait import wait_for
from tasks import patroni, postgres
from tasks.cluster_health import cluster_status
from tasks.host.secrets import cluster_secrets
from tasks.rolling import NodeCtx, node_ctx, put_back, restart_node, wait_caught_up
from tasks.switchover import switchover

PRELOADS = ("shared_preload_libraries", "session_preload_libraries")


def validate(spec: ClusterSpec, params: dict[str, str]) -> dict[str, bool]:
    """Refuse what cannot be set (UsageError, one line); return {name: needs restart}.

    The leader's pg_settings say what each parameter is (context, category, type, bounds): the
    allowlist of `stack.parameters`. An empty value resets the parameter and is always allowed;
    it is not checked against a server that may no longer let sessions in.
    """
    setting = {k: v for k, v in params.items() if v != ""}
    lead = patroni.cluster_view(spec).leader()
    if lead is None:
        if not setting:
            return dict.fromkeys(params, False)
        raise StateError(f"cluster {spec.scope} has no leader to check the parameters against (see `pgha status`)")
    try:
        found = postgres.settings(spec, lead.name, sorted(set(params) | set(PRELOADS)))
    except PostgresError:
        if setting:
            raise
        return dict.fromkeys(params, False)  # resets only: the server may no longer let sessions in
    preloaded = [lib for p in PRELOADS for lib in library_list(setting.get(p, found[p].setting if p in found else ""))]
    libs = postgres.libraries(spec, lead.name) if set(setting) & set(LIBRARY_PARAMS) else set()
    limit = spec.resources.patroni.memory_mib
    problems = [p for name, value in setting.items()
                if (p := check_parameter(name, value, found.get(name), limit, libs, preloaded))]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(problems[0] + more)
    return {n: bool(found.get(n) and found[n].needs_restart) for n in params}


def reset_values(spec: ClusterSpec, params: dict[str, str]) -> dict[str, Any]:
    """The dynamic configuration's values for `params`: a reset ("") goes back to what pgha renders
    for the spec without the user's value, or out of the configuration (PostgreSQL's default)."""
    names = {k for k, v in params.items() if v == ""}
    base = spec.model_copy(update={"postgres_parameters": {k: v for k, v in spec.postgres_parameters.items()
                                                           if k not in names}})
    rendered = dcs_config(base)["postgresql"]["parameters"]
    return {k: (rendered.get(k) if v == "" else v) for k, v in params.items()}


def check_session(spec: ClusterSpec, timeout: float = 15) -> None:
    """A new session through the R/W port opens (retried briefly: HAProxy may be re-routing after a
    restart); PostgresError with the server's words when it does not."""
    secrets = cluster_secrets(spec.scope)
    deadline = time.monotonic() + timeout
    while (why := postgres.session_opens(spec, secrets)) is not None:
        # The server's own refusal (FATAL) is final; a refused or reset connection may be HAProxy
        # re-routing after a restart.
        final = "FATAL" in why and not any(s in why for s in ("starting up", "shutting down", "recovery mode"))
        if final or time.monotonic() >= deadline:
            raise PostgresError(f"a new session through the R/W port does not open after the change: {why}")
        time.sleep(1)


def _restarted_candidate(spec: ClusterSpec) -> str:
    """A streaming replica already restarted (the sync standby in synchronous mode); '' if none yet."""
    view = patroni.cluster_view(spec)
    reps = [m for m in view.replicas() if m.streaming and not m.pending_restart]
    if spec.timing.synchronous_mode or any(m.role == MemberRole.SYNC_STANDBY for m in view.members):
        # Patroni refuses any candidate but the sync standby (also while it has none yet).
        return next((m.name for m in reps if m.role == MemberRole.SYNC_STANDBY), "")
    return reps[0].name if reps else ""


def _rolling_restart(ctx: NodeCtx, touched: list[str]) -> list[str]:
    """Restart the pending members one at a time; each is added to `touched` before its restart
    (so a rollback knows which members run, or failed to run, the new values)."""
    spec = ctx.spec
    done: list[str] = []
    view = patroni.cluster_view(spec)
    lead = view.leader()
    assert lead is not None
    for m in sorted((m for m in view.replicas() if m.pending_restart), key=lambda m: m.name):
        note(f"restarting replica {m.name}")
        touched.append(m.name)
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
            touched.append(lead.name)
            restart_node(ctx, lead.name, False)
    else:
        note(f"restarting primary {lead.name} in place")
        touched.append(lead.name)
        restart_node(ctx, lead.name, True)
    done.append(lead.name)
    return done


def _previous(spec: ClusterSpec, params: dict[str, str]) -> dict[str, Any]:
    """The values of `params` to go back to: the dynamic configuration's, else what the leader runs.

    Not "remove the key" for one the dynamic configuration did not hold: PostgreSQL keeps a
    server-start parameter removed from postgresql.conf flagged pending_restart until the next
    restart, so every member would be left asking for one; the explicit running value clears it.
    """
    current = (patroni.dynamic_config(spec).get("postgresql") or {}).get("parameters") or {}
    lead = patroni.cluster_view(spec).leader()
    assert lead is not None  # require_healthy passed
    return {k: current[k] if k in current else postgres.show(spec, lead.name, k) for k in params}


def _roll_back(ctx: NodeCtx, before: dict[str, Any], touched: list[str], why: PghaError) -> str:
    """Revert the dynamic configuration, restart the members touched on the old values, wait until
    the cluster is healthy; the one line the flow fails with."""
    spec = ctx.spec
    first = str(why).splitlines()[0]
    note(f"rolling back: {first}")
    patroni.edit_parameters(spec, before)
    for member in reversed(touched):
        since = time.time()
        try:
            note(f"restarting {member} on the previous values")
            patroni.restart_member(spec, member)
        except PghaError as exc:  # Patroni may already be starting it on the reverted configuration
            note(f"{member}: {str(exc).splitlines()[0]}; waiting for Patroni to start it")
        wait_caught_up(ctx, member, since, True, f"{member} back on the previous values")
        put_back(ctx, member)
    wait_for("the cluster healthy again after the rollback", lambda: cluster_status(spec),
             lambda st: st.healthy, timeout=ctx.timeout, interval=1,
             describe=lambda st: "; ".join(st.problems) or "healthy")
    wait_for("no member with a pending restart", lambda: [m.name for m in patroni.cluster_view(spec).members
                                                          if m.pending_restart],
             lambda left: not left, timeout=spec.timing.loop_wait * 3 + 20, interval=0.5)
    return (f"rolled back: {first}; the previous values are back on every member, the cluster is healthy "
            "and the spec unchanged")


def _wait_applied(spec: ClusterSpec, params: dict[str, Any], needs: dict[str, bool], restart: bool,
                  patched_at: float) -> dict[str, dict[str, str]]:
    """Every member runs the new values (asked of each one); None: a reset to PostgreSQL's default."""
    def values() -> dict[str, dict[str, str]]:
        return {m: {k: postgres.show(spec, m, k) for k in params} for m in spec.node_names()}

    settle = spec.timing.loop_wait * 2 + 2
    reloaded = spec.timing.loop_wait + 2  # Patroni's loop has run (and reloaded) at least once

    def applied(v: dict[str, dict[str, str]]) -> bool:
        if restart and any(patroni.pending_restart(spec, m) for m in v):
            return False
        if not restart and any(needs.values()):
            return True  # restart-requiring values take effect at the next restart
        waited = time.monotonic() - patched_at
        if waited > reloaded and all(vals[k] == "" for vals in v.values() for k in params):
            return True  # reloaded, and no member lets a session in: the session check says why
        # PostgreSQL shows values normalised (8192kB -> 8MB): equal to what was asked, or the
        # same on every member once Patroni has had two loops to reload them. A reset to
        # PostgreSQL's default (None): the same on every member once Patroni has reloaded.
        for k, want in params.items():
            shown = {vals[k] for vals in v.values()}
            if want is None:
                if not (len(shown) == 1 and waited > reloaded):
                    return False
            elif shown != {str(want)} and not (len(shown) == 1 and waited > settle):
                return False
        return True

    return wait_for("every member to run the new values", values, applied,
                    timeout=spec.timing.loop_wait * 3 + 30, interval=0.5)


@flow(name="config-set", description="Change PostgreSQL parameters (Patroni dynamic config) with a rolling restart.")
@mutating_flow("config-set")
def config_set(spec: ClusterSpec = ClusterSpec(), parameters: dict[str, str] | None = None,  # noqa: B008
               restart: bool = True) -> ConfigSetResult:
    """Set `parameters` (an empty value resets one); restart members with pending_restart one at a
    time unless restart=False; roll back when a member does not come back or a new session
    through the R/W port does not open."""
    if not parameters:
        raise UsageError("give at least one KEY=VALUE")
    params = dict(parameters)
    # A reset is what repairs a cluster no session can enter: it is not refused for that.
    require_healthy(spec, "the change", sessions_optional=all(v == "" for v in params.values()))
    needs = preflight_once(validate, spec, params)
    before = _previous(spec, params)
    target = reset_values(spec, params)
    patroni.edit_parameters(spec, target)
    patched_at = time.monotonic()
    note("dynamic configuration patched: " + ", ".join(f"{k}={v}" if v != "" else f"{k} reset"
                                                       for k, v in params.items()))
    restarted: list[str] = []
    touched: list[str] = []
    ctx = node_ctx(spec, spec.upgrade.node_timeout_s)
    try:
        if any(needs.values()):
            # Patroni notices the new configuration on its next loop and flags pending_restart.
            wait_for("every member to see the change (pending_restart)",
                     lambda: [m.name for m in patroni.cluster_view(spec).members if not m.pending_restart],
                     lambda left: not left, timeout=spec.timing.loop_wait * 3 + 20, interval=0.5,
                     describe=lambda left: "not yet: " + ", ".join(left))
            if restart:
                restarted = _rolling_restart(ctx, touched)
        else:
            note("no parameter needs a restart; reloaded by Patroni")
        seen = _wait_applied(spec, target, needs, restart, patched_at)
        check_session(spec)
        note("a new session through the R/W port opens")
    except PghaError as exc:
        raise RolledBack(_roll_back(ctx, before, touched, exc)) from None
    # Only now, with every member running the new values, does the spec follow.
    kept = {k: v for k, v in spec.postgres_parameters.items() if params.get(k) != ""}
    store_spec(spec.model_copy(update={"postgres_parameters": {**kept, **{k: v for k, v in params.items() if v != ""}}}))
    rows = [{"member": m, **vals, "pending_restart": str(patroni.pending_restart(spec, m))} for m, vals in seen.items()]
    create_table_artifact(key=f"{spec.scope}-config-set", table=rows,
                          description=", ".join(f"{k}={v}" for k, v in params.items()))
    op = current()
    return ConfigSetResult(parameters=params, needs_restart=needs, restarted=restarted, values=seen,
                           events=op.events, elapsed_s=op.elapsed())
