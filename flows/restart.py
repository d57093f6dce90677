"""restart: rolling restart of PostgreSQL on one member or every member (replicas first, then
the leader's turn: switchover to a restarted replica, then restart it as a replica).

Each replica is drained first (tags out of the R/O pool and synchronous replication),
restarted through Patroni, waited for until it streams caught up, and put back. Refused
before anything changes for an unknown member, a paused or unhealthy cluster, or while
another mutating flow holds the cluster's lock.
"""

from __future__ import annotations

from prefect import flow

from flows.steps.cluster import require_healthy
from flows.steps.ops import current, mutating_flow, note
from stack.cluster import MemberRole
from stack.operator import restart_plan
from stack.results import RestartResult
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import patroni
from tasks.cluster_health import wait_healthy
from tasks.host.lock import WaitSeconds
from tasks.rolling import node_ctx, restart_node
from tasks.switchover import switchover


def check(spec: ClusterSpec, member: str | None) -> None:
    """The whole pre-check (unknown member, paused, unhealthy): the CLI runs it before the flow."""
    view = patroni.cluster_view(spec)
    restart_plan(view, spec.node_names(), member)
    require_healthy(spec, "the restart")


def candidate(spec: ClusterSpec, leader: str, restarted: list[str]) -> str:
    """A streaming replica to hand the leadership to (the sync standby in synchronous mode); '' if none yet."""
    view = patroni.cluster_view(spec)
    reps = [m for m in view.replicas() if m.streaming and m.name != leader]
    if spec.timing.synchronous_mode or any(m.role == MemberRole.SYNC_STANDBY for m in view.members):
        return next((m.name for m in reps if m.role == MemberRole.SYNC_STANDBY), "")
    fresh = [m.name for m in reps if m.name in restarted]
    return (fresh or [m.name for m in reps] or [""])[0]


@flow(name="restart", description="Rolling restart of PostgreSQL: replicas first, switchover for the primary.")
@mutating_flow("restart")
def restart(spec: ClusterSpec = ClusterSpec(), member: str | None = None,  # noqa: B008
            wait_seconds: WaitSeconds = 0) -> RestartResult:
    """Restart `member` (default: every member), replicas first; the leader only after a switchover."""
    view = patroni.cluster_view(spec)
    plan = restart_plan(view, spec.node_names(), member)
    require_healthy(spec, "the restart")
    ctx = node_ctx(spec, spec.upgrade.node_timeout_s)
    done: list[str] = []
    moved = ""
    for step in plan:
        if step.leader and spec.nodes > 1:
            cand = wait_for("a streaming replica to hand the leadership to",
                            lambda m=step.member: candidate(spec, m, done), bool, timeout=60, interval=0.5)
            switchover(spec, step.member, cand, ctx.timeout)
            moved = f"{step.member} -> {cand}"
            note(f"switched over {moved}")
            note(f"restarting {step.member} (now a replica)")
            restart_node(ctx, step.member, False)
        else:
            note(f"restarting {'primary ' if step.leader else 'replica '}{step.member}")
            restart_node(ctx, step.member, step.leader)
        done.append(step.member)
    # Whole again before it returns: Patroni picks the synchronous standby a loop after the
    # old leader rejoins, and HAProxy needs its checks to pass.
    wait_healthy(spec, ctx.timeout, stable_s=1.0)
    lead = patroni.cluster_view(spec).leader()
    op = current()
    return RestartResult(scope=spec.scope, restarted=done, switchover=moved, leader=lead.name if lead else "",
                         events=op.events, elapsed_s=op.elapsed())
