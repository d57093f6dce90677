"""switchover: hand the leadership to a replica, invisibly to the pooler's clients.

The pooler-aware sequence (PAUSE, Patroni switchover, route at once through HAProxy's runtime
API, RESUME) is `flows.steps.cluster.hand_over`; rolling upgrades, config restarts and scale
use the same one. This flow adds the refusals (`preflight`) and the result.
"""

from __future__ import annotations

from prefect import flow

from flows.steps import preflight_once
from flows.steps.cluster import require_healthy, switchover_and_wait, wait_healthy
from flows.steps.ops import current, mutating_flow, note
from stack.results import SwitchoverResult
from stack.spec import ClusterSpec
from stack.switchover import SwitchoverPlan, plan_switchover
from tasks import pgbouncer


def preflight(spec: ClusterSpec, to: str | None) -> SwitchoverPlan:
    """Refuse (one line, nothing changed) a bad `--to`, an unhealthy cluster, a pooler that cannot pause."""
    view = require_healthy(spec, "a switchover")
    plan = plan_switchover(view, spec, to)
    if spec.runs_pooler:
        obs = pgbouncer.observe(spec)
        if not obs.reachable:
            from stack.errors import StateError

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
