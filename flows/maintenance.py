"""pause / resume: Patroni's maintenance mode for the whole cluster.

Paused, Patroni neither fails over nor restarts PostgreSQL: an operator can stop a node
for work by hand. The audit reports a paused cluster as a warning so it is not forgotten.
"""

from __future__ import annotations

from prefect import flow

from flows.steps.ops import current, mutating_flow, note
from stack.results import PauseResult
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import patroni
from tasks.host.lock import WaitSeconds


def _set(spec: ClusterSpec, paused: bool) -> PauseResult:
    before = patroni.cluster_view(spec).paused
    if before != paused:
        patroni.set_paused(spec, paused)
        wait_for(f"Patroni to report {'paused' if paused else 'resumed'}", lambda: patroni.cluster_view(spec).paused,
                 lambda p: p == paused, timeout=spec.timing.loop_wait * 3 + 10, interval=0.3)
        note("maintenance mode on: no failover, no automatic restart" if paused else "maintenance mode off")
    else:
        note(f"already {'paused' if paused else 'running normally'}")
    return PauseResult(scope=spec.scope, paused=paused, changed=before != paused, elapsed_s=current().elapsed())


@flow(name="pause", description="Maintenance mode on: Patroni stops failing over and restarting PostgreSQL.")
@mutating_flow("pause")
def pause(spec: ClusterSpec = ClusterSpec(), wait_seconds: WaitSeconds = 0) -> PauseResult:  # noqa: B008
    return _set(spec, True)


@flow(name="resume", description="Maintenance mode off: Patroni manages the cluster again.")
@mutating_flow("resume")
def resume(spec: ClusterSpec = ClusterSpec(), wait_seconds: WaitSeconds = 0) -> PauseResult:  # noqa: B008
    return _set(spec, False)
