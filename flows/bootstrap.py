"""bootstrap: create or converge a cluster from its spec (the sequence is `flows.steps.converge`)."""

from __future__ import annotations

from prefect import flow

from flows.steps import preflight_once
from flows.steps.converge import bootstrap_preflight, converge
from flows.steps.ops import mutating_flow
from stack.results import BootstrapResult
from stack.spec import ClusterSpec
from tasks.host.lock import WaitSeconds


@flow(name="bootstrap", description="Create or converge a pgha cluster (etcd, Patroni, HAProxy) from its spec.")
@mutating_flow("bootstrap", creates=True)
def bootstrap(spec: ClusterSpec = ClusterSpec(),  # noqa: B008 - pydantic default is immutable
              wait_seconds: WaitSeconds = 0) -> BootstrapResult:
    """`wait_seconds`: wait that long for another mutating flow on this cluster to end (0: refuse at once)."""
    preflight_once(bootstrap_preflight, spec)
    return converge(spec)
