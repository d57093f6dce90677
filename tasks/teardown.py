"""The teardown's retryable steps: remove a cluster's resources on every engine, and its state
directory or move it aside (`flows.teardown` decides which, with `stack.teardown`)."""

from __future__ import annotations

import shutil
import time

from prefect import task

from stack import generations
from stack.backup import repo_volume
from stack.spec import ClusterSpec
from tasks import docker_hosts
from tasks._prefect import SIDE_EFFECT
from tasks.host.prune import prune_removed_dirs
from tasks.host.state import cluster_dir, removed_dir, removed_dirs


@task(name="remove-resources", **SIDE_EFFECT)
def remove_resources(spec: ClusterSpec, volumes: bool, keep: list[str]) -> dict[str, list[str]]:
    """Everything of every generation of the cluster (`stack.generations.teardown_steps`: the client-facing
    containers first, then the rest, then networks and volumes but `keep` when asked), on every engine."""
    removed: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
    for engine in docker_hosts.engines(spec).all():
        for scope, role in generations.teardown_steps(spec.scope):
            for ct in engine.cluster_containers(scope, role):
                if engine.remove_container(str(ct.name)):
                    removed["containers"].append(str(ct.name))
        for scope in generations.generations(spec.scope):
            for kind, names in engine.remove_labelled(scope, volumes=volumes, keep_volumes=set(keep)).items():
                removed[kind] += names
    return removed


@task(name="remove-state", **SIDE_EFFECT)
def remove_state(scope: str) -> bool:
    """A generation's state directory (passwords, configs) goes with the data and repository it belonged to."""
    path = cluster_dir(scope)
    existed = path.exists()
    shutil.rmtree(path, ignore_errors=True)
    for old in removed_dirs(scope):
        shutil.rmtree(old, ignore_errors=True)  # earlier incarnations' secrets: their repository is gone too
    return existed


@task(name="move-state-aside", **SIDE_EFFECT)
def move_state_aside(scope: str) -> str:
    """Move the state directory to `<scope>.removed-<UTC time>` (kept, 0700); its new path ('' if none)."""
    path = cluster_dir(scope)
    if not path.exists():
        return ""
    target = removed_dir(scope, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    path.rename(target)
    return str(target)


@task(name="prune-removed-state", **SIDE_EFFECT)
def prune_removed_state(spec: ClusterSpec) -> list[str]:
    """Delete the moved-aside state directories of earlier incarnations whose repository is gone."""
    created = None
    if spec.backup.s3 is None:
        created = next((c for e in docker_hosts.engines(spec).all()
                        if (c := e.volume_created(repo_volume(spec))) is not None), None)
    return prune_removed_dirs(spec.scope, spec.backup.s3 is not None, created)


def repository_kept(spec: ClusterSpec) -> bool:
    """A backup repository that outlives this teardown (the volume on any engine, or S3)."""
    if spec.backup.s3 is not None:
        return True
    return any(e.volume_exists(repo_volume(spec)) for e in docker_hosts.engines(spec).all())
