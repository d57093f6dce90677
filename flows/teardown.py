"""teardown: remove a cluster's containers and network; its volumes only when asked."""

from __future__ import annotations

import shutil

from prefect import flow, get_run_logger, task

from stack.spec import ClusterSpec
from tasks import docker_engine as de
from tasks._prefect import SIDE_EFFECT
from tasks.host.lock import WaitSeconds, holder_name, mutating
from tasks.host.state import cluster_dir


@task(name="remove-resources", **SIDE_EFFECT)
def remove_resources(scope: str, volumes: bool) -> dict[str, list[str]]:
    return de.remove_cluster(scope, volumes=volumes)


@flow(name="teardown", description="Remove a pgha cluster; data volumes stay unless volumes=true.")
def teardown(spec: ClusterSpec = ClusterSpec(), volumes: bool = False,  # noqa: B008
             wait_seconds: WaitSeconds = 0) -> dict[str, list[str]]:
    log = get_run_logger()
    with mutating(spec.scope, holder_name("teardown"), wait_seconds=wait_seconds):
        removed = remove_resources(spec.scope, volumes)
    if volumes:
        # The data is gone, so are the passwords and configs that belonged to it.
        shutil.rmtree(cluster_dir(spec.scope), ignore_errors=True)
    log.info("removed %d containers, %d networks, %d volumes of %s", len(removed["containers"]),
             len(removed["networks"]), len(removed["volumes"]), spec.scope)
    return removed
