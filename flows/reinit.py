"""reinit: rebuild one replica from the leader (Patroni's /reinitialize: its data directory is
wiped and cloned again), then wait until it streams caught up.

Refused before anything changes for an unknown member, the leader, a cluster without a
leader, or while another mutating flow holds the cluster's lock. A deployment run pauses for
approval (the cluster's scope typed in its Resume form) before the member is wiped; the CLI
asks for `--yes` instead.
"""

from __future__ import annotations

import time

from prefect import flow

from flows.steps.approval import require_approval
from flows.steps.ops import current, mutating_flow, note
from stack.errors import UsageError
from stack.operator import reinit_problem
from stack.results import ReinitResult
from stack.spec import ClusterSpec
from tasks import patroni
from tasks.cluster_health import wait_healthy
from tasks.host.lock import WaitSeconds
from tasks.rolling import node_ctx, wait_caught_up


def check(spec: ClusterSpec, member: str) -> str:
    """The pre-check; the leader's name."""
    view = patroni.cluster_view(spec)
    if problem := reinit_problem(view, spec.node_names(), member):
        raise UsageError(problem)
    lead = view.leader()
    assert lead is not None
    return lead.name


@flow(name="reinit", description="Rebuild one replica from the leader (its data is wiped and cloned again).")
@mutating_flow("reinit")
def reinit(spec: ClusterSpec = ClusterSpec(), member: str = "pg-2",  # noqa: B008
           wait_seconds: WaitSeconds = 0) -> ReinitResult:
    """Wipe `member`'s data and clone it again from the leader; wait until it streams caught up."""
    leader = check(spec, member)
    require_approval(spec, f"reinit of {member}")  # a deployment run pauses for the typed scope
    ctx = node_ctx(spec, spec.upgrade.node_timeout_s)
    since = time.time()
    note(f"reinitializing {member} from {leader}: {patroni.reinitialize(spec, member)}")
    wait_caught_up(ctx, member, since, False, f"{member} cloned again and streaming")
    wait_healthy(spec, ctx.timeout, stable_s=1.0)  # the sync standby chosen again, HAProxy routing to it
    note(f"{member} streams again; the cluster is whole")
    op = current()
    return ReinitResult(scope=spec.scope, member=member, leader=leader, events=op.events, elapsed_s=op.elapsed())
