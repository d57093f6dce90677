"""The resources a cluster's members share, converged: the node image (built here, loaded into
every host's engine), the cluster network, the data volumes (and the backup repository's).

Steps of `flows.steps.converge` (and of the flows that grow or upgrade a cluster); each looks
first and acts only when needed.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from stack.backup import repo_volume
from stack.spec import ClusterSpec
from tasks import docker_hosts, docker_images, images
from tasks._prefect import ONCE, SIDE_EFFECT


@task(name="ensure-image", **ONCE)
def ensure_image(spec: ClusterSpec) -> str:
    """The node image, built when missing (a build failure is not retried)."""
    tag, log = images.ensure_image(spec)
    for line in log:
        get_run_logger().info(line)
    return tag


@task(name="ensure-image-on-hosts", **SIDE_EFFECT)
def ensure_image_on_hosts(spec: ClusterSpec, image: str) -> dict[str, str]:
    """Many hosts: the node image, built on this machine, loaded into every host's engine that lacks it."""
    hosts = docker_hosts.engines(spec).by_host
    loaded = docker_images.copy_image(docker_hosts.local_engine(), image, list(hosts.values()))
    out = {name: "loaded" if loaded[e.name] else "present" for name, e in hosts.items()}
    for name, how in out.items():
        get_run_logger().info("image %s on host %s: %s", image, name, how)
    return out


@task(name="ensure-network", **SIDE_EFFECT)
def ensure_network(spec: ClusterSpec) -> str:
    if spec.multi_host:
        return docker_hosts.node_subnets(spec)  # host networking: no network; a second site's addresses
    subnet, outcome = docker_hosts.engines(spec).default.ensure_network(spec.scope, spec.network)
    get_run_logger().info("network %s (%s): %s", spec.network, subnet, outcome.value)
    return docker_hosts.node_subnets(spec) if spec.standby_of is not None else subnet


@task(name="ensure-volumes", **SIDE_EFFECT)
def ensure_volumes(spec: ClusterSpec) -> dict[str, str]:
    eng = docker_hosts.engines(spec)
    out: dict[str, str] = {}
    for role, members in (("etcd", spec.etcd_names()), ("patroni", spec.node_names())):
        for member in members:
            out[spec.volume(member)] = eng.of(member).ensure_volume(spec.scope, role, member, spec.volume(member)).value
    if spec.backup.enabled and spec.backup.s3 is None:
        repo = repo_volume(spec)
        out[repo] = eng.repository().ensure_volume(spec.scope, "pgbackrest", "repo", repo).value
    return out
