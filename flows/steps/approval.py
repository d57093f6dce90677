"""Approval of a destructive deployment run: the run pauses until someone types the cluster's scope.

A deployment can be started by anyone who reaches the Prefect API (a schedule, an automation,
a click in the UI), so the parameters that destroy data — teardown with `volumes`, an in-place
restore — are not enough on their own there: the run pauses (`pause_flow_run(wait_for_input=...)`)
before anything changes and shows a form in the UI ("Resume" on the run's page) asking for the
scope. The exact scope resumes it; anything else fails the run with nothing changed; no answer
within the timeout fails it too.

Outside a deployment (the CLI runs flows in its own process) there is nobody to ask in a UI:
the CLI's own confirmation (`--yes`) is the approval, so this step passes.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.input import RunInput
from pydantic import Field

from stack.errors import StateError, UsageError
from stack.spec import ClusterSpec

APPROVAL_TIMEOUT_S = 3600
POLL_S = 2


class DestructiveApproval(RunInput):
    """What the paused run's form asks: the scope, typed by hand."""

    scope: str = Field("", description="type the cluster's scope exactly to approve; anything else refuses")


def in_deployment_run() -> bool:
    """True in a flow run a deployment started, and in its subflows.

    A top-level run answers from the run it holds: Prefect's `runtime.deployment.id` would ask
    the API for the run (a client of its own, three round trips) when the run was not started by
    a deployment.
    """
    try:
        from prefect.context import FlowRunContext

        run = getattr(FlowRunContext.get(), "flow_run", None)
        if run is not None and run.parent_task_run_id is None:
            return run.deployment_id is not None
        from prefect.runtime import deployment

        return bool(deployment.id)
    except Exception:  # noqa: BLE001 - outside Prefect: not a deployment run
        return False


def approval_refusal(spec: ClusterSpec, typed: str) -> str | None:
    """None when `typed` approves the change to `spec`'s cluster, else the one-line refusal."""
    if typed.strip() == spec.scope:
        return None
    shown = typed.strip()[:60] or "nothing"
    return f"approval refused: {shown!r} was typed, not the cluster's scope {spec.scope}; nothing changed"


def require_approval(spec: ClusterSpec, action: str, timeout_s: int = APPROVAL_TIMEOUT_S) -> str:
    """Pause a deployment run until its scope is typed in the UI; returns how it was approved.

    Call it before the first change (after the checks that refuse bad input). Raises UsageError
    for a wrong answer and StateError when nobody answers within `timeout_s`.
    """
    if not in_deployment_run():
        return "run outside a deployment: confirmed by its caller"
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    log = get_run_logger()
    log.warning("%s of cluster %s waits for approval: resume this run in the UI and type the scope %s "
                "(anything else refuses; %d s at most)", action, spec.scope, spec.scope, timeout_s)
    form = DestructiveApproval.with_initial_data(
        description=f"**{action}** of cluster **{spec.scope}** destroys data. Type the scope `{spec.scope}` "
                    "to approve; anything else refuses and changes nothing.", scope="")
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=POLL_S)
    except FlowPauseTimeout:
        raise StateError(f"{action} of {spec.scope} was not approved within {timeout_s} s; nothing changed") from None
    if (refusal := approval_refusal(spec, answer.scope if answer is not None else "")) is not None:
        raise UsageError(refusal)
    log.warning("%s of cluster %s approved in the UI", action, spec.scope)
    return "approved in the UI"
