"""teardown: remove a cluster's containers and network; its volumes only when asked."""

from __future__ import annotations

import shutil

from prefect import flow, get_run_logger, task

from flows.steps.approval import require_approval
from flows.steps.ops import mutating_flow
from stack.results import TeardownResult
from stack.spec import ClusterSpec
from tasks import docker_hosts
from tasks._prefect import SIDE_EFFECT
from tasks.host.lock import WaitSeconds
from tasks.host.state import cluster_dir


@task(name="remove-resources", **SIDE_EFFECT)
def remove_resources(spec: ClusterSpec, volumes: bool) -> dict[str, list[str]]:
    """Every container and network of the scope (and its volumes when asked), on every engine."""
    removed: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
    for engine in docker_hosts.engines(spec).all():
        for kind, names in engine.remove_labelled(spec.scope, volumes=volumes).items():
            removed[kind] += names
    return removed


@task(name="remove-state", **SIDE_EFFECT)
def remove_state(spec: ClusterSpec) -> bool:
    """The state directory (passwords, configs) goes with the data it belonged to."""
    path = cluster_dir(spec.scope)
    existed = path.exists()
    shutil.rmtree(path, ignore_errors=True)
    return existed


@flow(name="teardown", description="Remove a pgha cluster; data volumes stay unless volumes=true.")
@mutating_flow("teardown")
def teardown(spec: ClusterSpec = ClusterSpec(), volumes: bool = False,  # noqa: B008
             wait_seconds: WaitSeconds = 0) -> TeardownResult:
    if volumes:
        require_approval(spec, "teardown with volumes")  # a deployment run pauses for the typed scope
    removed = remove_resources(spec, volumes)
    result = TeardownResult(scope=spec.scope, **removed)
    if volumes:
        # The data is gone, so are the passwords and configs that belonged to it (the lock
        # file goes too: unlinking it while held is harmless, the lock is on the open file).
        result.state_removed = remove_state(spec)
    get_run_logger().info("removed %d containers, %d networks, %d volumes of %s", len(result.containers),
                          len(result.networks), len(result.volumes), spec.scope)
    return result

