"""A deployment run's spec: the one stored on this host for the scope it names (`stack.deployed`)."""

from __future__ import annotations

from flows.steps.approval import in_deployment_run
from stack.deployed import deployment_spec, restore_target_refusal
from stack.errors import UsageError
from stack.spec import ClusterSpec


def deployment_entry() -> bool:
    """True in the flow a deployment started (its parameters came from whoever started the run);
    False outside a deployment and in its subflows, whose specs the flow itself derived (a major
    upgrade's green, a restore's new cluster)."""
    if not in_deployment_run():
        return False
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = getattr(ctx, "flow_run", None)
    return run is None or run.parent_task_run_id is None


def pinned_spec(spec: ClusterSpec, creates: bool = False) -> ClusterSpec:
    """In the flow a deployment started, the stored spec of `spec.scope` (UsageError when `spec`
    says more than its scope, or when none is stored unless the operation `creates` a cluster:
    `stack.deployed.deployment_spec`); elsewhere (the CLI, which resolved the spec on the host itself; a
    subflow), `spec`."""
    if not deployment_entry():
        return spec
    from tasks.host.generations import stored_spec, stored_spec_file

    stored = stored_spec(spec.scope) if stored_spec_file(spec.scope).exists() else None
    try:
        return deployment_spec(spec, stored, creates)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_restore_target(into: ClusterSpec, source: ClusterSpec) -> None:
    """In a deployment run, `into` may change only the scope and ports of the source's stored spec."""
    if deployment_entry() and (why := restore_target_refusal(into, source)) is not None:
        raise UsageError(why)
