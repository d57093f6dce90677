"""bootstrap: from nothing (or a stopped or partial cluster) to a whole, routed cluster.

Every step is an idempotent task: a re-run on a healthy cluster recreates nothing.
"""

from __future__ import annotations

import os
import time
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows import status as status_mod
from flows.steps import ensure_archiving
from stack import backup as bk
from stack import topology
from stack.errors import StateError
from stack.spec import ClusterSpec
from tasks import docker_engine as de
from tasks import etcd, images, patroni, postgres
from tasks._prefect import ONCE, SIDE_EFFECT
from tasks.host.lock import WaitSeconds, holder_name, mutating
from tasks.host.secrets import load_or_create
from tasks.host.state import cluster_dir, config_dir, secrets_file, write_private


def preflight(spec: ClusterSpec) -> None:
    """Refuse a spec that cannot run here, before anything is created.

    Checks the engine, POSTGRES_PASSWORD against the stored passwords, and the host ports
    (free, or already held by this very cluster). The image is checked by `ensure_image`.
    """
    de.client()
    if os.environ.get("POSTGRES_PASSWORD") == "" and "POSTGRES_PASSWORD" in os.environ:
        raise StateError("POSTGRES_PASSWORD is set but empty; unset it to have a strong one generated")
    if secrets_file(spec.scope).exists():
        load_or_create(secrets_file(spec.scope))  # raises if POSTGRES_PASSWORD disagrees
    own = de.host_ports_of(spec.scope)
    for key in ("rw", "ro", "stats"):
        port = int(getattr(spec.ports, key))
        if port in own:
            continue
        if (owner := de.port_owner(port)) is not None:
            raise StateError(f"port {port} (ports.{key}) is already published by pgha cluster '{owner}'; choose another")
        if not de.port_is_free(port):
            raise StateError(f"port {port} (ports.{key}) is already in use on 127.0.0.1; choose another in the spec")


def refuse_image_swap(spec: ClusterSpec, node_image: str) -> None:
    """Refuse to move existing Patroni nodes to another image: `up` would restart them all at once.

    That is a rolling change (`pgha upgrade`), which keeps a primary and replicas serving; a
    spec that merely lacks the `upgrade.node_image` an earlier upgrade recorded must not
    silently downgrade the cluster either.
    """
    for member in spec.node_names():
        ct = de.find_container(spec.container(member))
        if ct is None:
            continue
        current = str(ct.attrs.get("Config", {}).get("Image", ""))
        if current and current != node_image:
            raise StateError(
                f"{member} runs image {current} but this spec asks for {node_image}; `pgha up` never swaps the "
                f"image of existing nodes (all would restart at once): run `pgha upgrade --image {node_image}` "
                f"for a rolling change, or set upgrade.node_image: {current} in the spec")


@task(name="ensure-image", **ONCE)
def ensure_image(spec: ClusterSpec) -> str:
    """The node image, built when missing (a build failure is not retried)."""
    tag, log = images.ensure_image(spec)
    for line in log:
        get_run_logger().info(line)
    return tag


@task(name="ensure-network", **SIDE_EFFECT)
def ensure_network(spec: ClusterSpec) -> str:
    subnet, outcome = de.ensure_network(spec.scope, spec.network)
    get_run_logger().info("network %s (%s): %s", spec.network, subnet, outcome.value)
    return subnet


@task(name="ensure-volumes", **SIDE_EFFECT)
def ensure_volumes(spec: ClusterSpec) -> dict[str, str]:
    out: dict[str, str] = {}
    for member in spec.etcd_names():
        out[spec.volume(member)] = de.ensure_volume(spec.scope, "etcd", member, spec.volume(member)).value
    for member in spec.node_names():
        out[spec.volume(member)] = de.ensure_volume(spec.scope, "patroni", member, spec.volume(member)).value
    if spec.backup.enabled and spec.backup.s3 is None:
        repo = bk.repo_volume(spec)
        out[repo] = de.ensure_volume(spec.scope, "pgbackrest", "repo", repo).value
    return out


@task(name="ensure-member", **SIDE_EFFECT)
def ensure_member(spec: ClusterSpec, role: str, member: str, image: str, subnet: str) -> str:
    """Render the member's config files (0600, passwords inside) and make its container run."""
    if role == "etcd":
        planned = topology.etcd_member(spec, member, image)
    elif role == "patroni":
        planned = topology.patroni_node(spec, member, image, subnet, load_or_create(secrets_file(spec.scope)))
    else:
        planned = topology.haproxy(spec, image)
    for fname, text in planned.files.items():
        write_private(config_dir(spec.scope, member) / fname, text)
    outcome = de.ensure_container(planned.container)
    get_run_logger().info("%s %s: %s", role, planned.container.name, outcome.value)
    return outcome.value


@task(name="wait-endpoints", **ONCE)
def wait_endpoints(spec: ClusterSpec) -> None:
    postgres.wait_endpoints.fn(spec, load_or_create(secrets_file(spec.scope)))


@flow(name="bootstrap", description="Create or converge a pgha cluster (etcd, Patroni, HAProxy) from its spec.")
def bootstrap(spec: ClusterSpec = ClusterSpec(),  # noqa: B008 - pydantic default is immutable
              wait_seconds: WaitSeconds = 0) -> dict[str, Any]:
    """`wait_seconds`: wait that long for another mutating flow on this cluster to end (0: refuse at once)."""
    with mutating(spec.scope, holder_name("bootstrap"), wait_seconds=wait_seconds):
        return _bootstrap(spec)


def _bootstrap(spec: ClusterSpec) -> dict[str, Any]:
    log = get_run_logger()
    started = time.monotonic()
    preflight(spec)
    load_or_create(secrets_file(spec.scope))
    write_private(cluster_dir(spec.scope) / "spec.yaml", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))

    image = ensure_image(spec)
    refuse_image_swap(spec, spec.upgrade.node_image or image)
    subnet = ensure_network(spec)
    ensure_volumes(spec)
    outcomes: dict[str, str] = {}
    # Members of one role are independent: create them concurrently (thread task runner).
    etcd_runs = {m: ensure_member.submit(spec, "etcd", m, image, subnet) for m in spec.etcd_names()}
    outcomes.update({m: f.result() for m, f in etcd_runs.items()})
    etcd.wait_healthy(spec)
    # After `pgha upgrade` the nodes run the upgraded image; etcd and HAProxy keep the spec's.
    node_image = spec.upgrade.node_image or image
    node_runs = {m: ensure_member.submit(spec, "patroni", m, node_image, subnet) for m in spec.node_names()}
    outcomes.update({m: f.result() for m, f in node_runs.items()})
    # HAProxy starts while Patroni bootstraps: it resolves servers at run time and routes to
    # a node only once that node's health check passes, so nothing is routed early.
    haproxy_run = ensure_member.submit(spec, "haproxy", spec.haproxy_member, image, subnet)
    view = patroni.wait_whole(spec)
    outcomes[spec.haproxy_member] = haproxy_run.result()
    wait_endpoints(spec)
    ensure_archiving(spec)  # WAL archiving + pgBackRest stanza (converges older clusters)

    st = status_mod.collect(spec)
    elapsed = round(time.monotonic() - started, 1)
    rows = [
        {"member": m.member, "component": m.role, "container": m.container, "action": outcomes.get(m.member, ""),
         "state": m.container_state, "pg_role": m.pg_role, "pg_state": m.pg_state,
         "timeline": m.timeline if m.timeline is not None else "", "lag_bytes": m.lag_bytes if m.lag_bytes is not None else ""}
        for m in st.members
    ]
    create_table_artifact(key=f"{spec.scope}-members", table=rows,
                          description=f"pgha cluster {spec.scope}: {patroni.assess(view, spec).reason}; {elapsed}s")
    changed = sorted(k for k, v in outcomes.items() if v != de.Outcome.UNCHANGED.value)
    log.info("cluster %s ready in %ss (%s)", spec.scope, elapsed, "changed: " + ", ".join(changed) if changed else "nothing changed")
    return {"scope": spec.scope, "image": image, "outcomes": outcomes, "elapsed_s": elapsed,
            "status": st.to_dict()}
