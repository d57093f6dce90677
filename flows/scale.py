"""scale: change the number of Patroni nodes without dropping a client session.

Growing adds pg-<n+1>.. (Patroni clones them from the cluster), then HAProxy is re-rendered
and reloaded in place (master-worker SIGUSR2: the old worker finishes its sessions), so no
client session is dropped. Shrinking removes the highest-numbered nodes, after a switchover
when the leader is among them, never below one node; each one is first taken out of the R/O
pool and HAProxy's config before it stops.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.steps.cluster import require_healthy, store_spec
from flows.steps.ops import current, mutating_flow, note
from stack.errors import StateError
from stack.results import ScaleResult
from stack.rolling import plan_scale
from stack.scale import scaled_spec
from stack.spec import ClusterSpec
from tasks import docker_hosts, engine_client, patroni
from tasks.cluster_health import wait_healthy
from tasks.cluster_resources import ensure_image_on_hosts
from tasks.host import tls as host_tls
from tasks.host.state import config_dir, write_private
from tasks.members import reload_haproxy, remove_node
from tasks.rolling import node_ctx, planned_node, take_out
from tasks.switchover import switchover


def running_nodes(spec: ClusterSpec) -> list[str]:
    """The Patroni members whose containers exist (the containers say how many nodes there are)."""
    found = sorted({ct.labels.get(engine_client.LABEL_MEMBER, "")
                    for e in docker_hosts.engines(spec).all() for ct in e.cluster_containers(spec.scope, "patroni")})
    if not found:
        raise StateError(f"cluster {spec.scope} has no Patroni node; run `pgha up` first")
    if found != sorted(f"pg-{i}" for i in range(1, len(found) + 1)):
        raise StateError(f"cluster {spec.scope} has nodes {', '.join(found)}, not pg-1..pg-{len(found)}; "
                         "run `pgha up` with its spec first")
    return found


@flow(name="scale", description="Add or remove Patroni nodes; HAProxy reloaded without dropping sessions.")
@mutating_flow("scale")
def scale(spec: ClusterSpec = ClusterSpec(), nodes: int = 3) -> ScaleResult:  # noqa: B008
    scaled_spec(spec, nodes)  # a node count the spec refuses (range, placement over hosts) changes nothing
    found = running_nodes(spec)
    if len(found) != spec.nodes:
        # A hand-written spec file may be stale: scale from what runs.
        get_run_logger().warning("the spec says %d nodes but %d run; scaling from %d", spec.nodes, len(found), len(found))
        spec = spec.model_copy(update={"nodes": len(found)})
    view = require_healthy(spec, "to scale")
    lead = view.leader()
    assert lead is not None
    plan = plan_scale(spec.node_names(), nodes, lead.name, [m.name for m in view.replicas() if m.is_sync])
    timeout = spec.upgrade.node_timeout_s
    ctx = node_ctx(spec, timeout)
    # Validated, not a bare copy: over hosts the validators place the new nodes (and refuse a
    # count the hosts cannot hold), and the engine map must come from the spec that has them.
    new_spec = scaled_spec(spec, nodes)
    new_eng = docker_hosts.engines(new_spec)
    image = new_eng.of(spec.node_names()[0]).image_of(spec.container(spec.node_names()[0]))
    if plan.add:
        if new_spec.multi_host:
            ensure_image_on_hosts(new_spec, image)  # a host that never ran a node may lack the image
        for m in plan.add:
            engine = new_eng.of(m)
            engine.ensure_volume(spec.scope, "patroni", m, new_spec.volume(m))
            planned = planned_node(ctx, m, image, new_spec)
            host_tls.install(new_spec, m)  # spec.tls: CA and certificates in its config dir
            for fname, text in planned.files.items():
                write_private(config_dir(spec.scope, m) / fname, text)
            where = f" on host {new_spec.host_of(m)}" if new_spec.multi_host else ""
            note(f"{m}{where}: {engine.ensure_container(planned.container).value} on {image}; Patroni clones it")
        patroni.wait_whole(new_spec, timeout=timeout)
        reload_haproxy(new_spec)
        note(f"HAProxy reloaded with {nodes} servers")
    if plan.switchover_to:
        note(f"{lead.name} leads and is to be removed: switchover to {plan.switchover_to}")
        switchover(spec, lead.name, plan.switchover_to, timeout)
    if plan.remove:
        for m in plan.remove:
            take_out(ctx, m, is_leader=False)
        reload_haproxy(new_spec)
        note(f"HAProxy reloaded with {nodes} servers")
        for m in plan.remove:
            remove_node(spec, m)
            note(f"{m} removed (container, data volume, member key)")
        patroni.wait_whole(new_spec, timeout=timeout)
    store_spec(new_spec)
    wait_healthy(new_spec, timeout)
    op = current()
    return ScaleResult(plan=plan.describe(), nodes=nodes, events=op.events, elapsed_s=op.elapsed())
