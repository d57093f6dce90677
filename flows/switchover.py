"""switchover: hand the leadership to a replica, invisibly to the pooler's clients.

The pooler-aware sequence (PAUSE, Patroni switchover, route at once through HAProxy's runtime
API, RESUME) is `tasks.switchover.hand_over`; rolling upgrades, config restarts and scale
use the same one. This flow adds the refusals (`preflight`) and the result.
"""

from __future__ import annotations

from contextlib import suppress

from prefect import flow

from flows.steps import preflight_once
from flows.steps.cluster import require_healthy
from flows.steps.ops import current, mutating_flow, note
from stack.errors import StateError
from stack.results import SwitchoverResult
from stack.spec import ClusterSpec
from stack.switchover import SwitchoverPlan, catch_up_window, plan_switchover
from stack.wait import WaitTimeout, wait_for
from tasks import patroni, pgbouncer
from tasks.cluster_health import wait_healthy
from tasks.switchover import switchover_and_wait


def preflight(spec: ClusterSpec, to: str | None) -> SwitchoverPlan:
    """Refuse (one line, nothing changed) a bad `--to`, an unhealthy cluster, a pooler that cannot pause."""
    view = require_healthy(spec, "a switchover")
    try:
        plan = plan_switchover(view, spec, to)
    except StateError:
        # A replica that streams but lags right after a burst of writes gets a bounded catch-up.
        window = catch_up_window(view, spec, to)
        if not window:
            raise
        seen: list[StateError | SwitchoverPlan] = []

        def attempt() -> StateError | SwitchoverPlan:
            try:
                seen.append(plan_switchover(patroni.cluster_view(spec), spec, to))
            except StateError as err:
                seen.append(err)
            return seen[-1]

        with suppress(WaitTimeout):
            wait_for("a switchover candidate to catch up", attempt, lambda r: isinstance(r, SwitchoverPlan),
                     timeout=window, interval=1.0)
        if isinstance(seen[-1], StateError):
            raise seen[-1] from None
        plan = seen[-1]
    if spec.runs_pooler:
        obs = pgbouncer.observe(spec)
        if not obs.reachable:
            raise StateError(f"the pooler cannot be paused, refusing the switchover: {obs.error}")
    return plan


@flow(name="switchover", description="Planned switchover: pooler paused, new primary routed at once, pooler resumed.")
@mutating_flow("switchover")
def switchover(spec: ClusterSpec = ClusterSpec(), to: str | None = None,  # noqa: B008
               wait_seconds: float = 0) -> SwitchoverResult:
    plan = preflight_once(preflight, spec, to)
    note(plan.describe() + (" (pooler paused around it)" if spec.runs_pooler else ""))
    timeout = float(spec.upgrade.node_timeout_s)
    times = switchover_and_wait(spec, plan.leader, plan.candidate, timeout)
    note(f"routed {times.routed_s}s after the request; pooler resumed after {times.resumed_s}s")
    status = wait_healthy(spec, timeout)
    return SwitchoverResult(scope=spec.scope, times=times, status=status, elapsed_s=current().elapsed())
