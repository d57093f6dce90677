"""Converge: from nothing (or a stopped or partial cluster) to a whole, routed cluster.

The bootstrap flow runs it under the cluster's lock; restore runs it to adopt a restored data
directory and grow the cluster. Every step is an idempotent task: a re-run on a healthy
cluster recreates nothing.
"""

from __future__ import annotations

import os
import time

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from flows.steps import ops, standby
from flows.steps.backups import ensure_archiving
from flows.steps.cluster import store_spec
from flows.steps.preflight import preflight_once
from stack import site, topology
from stack.backup import repo_volume
from stack.cluster import assess
from stack.errors import StateError
from stack.generations import base_of, generations
from stack.results import BootstrapResult
from stack.spec import ClusterSpec
from stack.teardown import kept_repository_refusal
from stack.wait import wait_for
from tasks import (
    certs,
    docker_hosts,
    etcd,
    patroni,
    postgres,
)
from tasks.app_objects import apps_preflight, ensure_app_objects
from tasks.cluster_health import cluster_status
from tasks.cluster_resources import ensure_image, ensure_image_on_hosts, ensure_network, ensure_volumes
from tasks.host import tls as host_tls
from tasks.host.generations import major_state_file, read_pointer
from tasks.host.secrets import cluster_secrets, load_or_create
from tasks.host.state import config_dir, removed_dirs, secrets_file
from tasks.members import ensure_fencer, ensure_member, ensure_metrics, ensure_pooler
from tasks.rolling import node_ctx, roll_node
from tasks.standby_slot import ensure_primary_slot
from tasks.switchover import switchover


def bootstrap_preflight(spec: ClusterSpec) -> None:
    """Refuse a spec that cannot run here, before anything is created.

    Checks every engine, POSTGRES_PASSWORD against the stored passwords, and the host ports
    (free, or already held by this very cluster). The image is checked by `ensure_image`.
    """
    eng = docker_hosts.engines(spec)
    eng.check()
    if spec.standby_of is not None:  # a second site: its primary site runs and matches (stack/site.py)
        standby.preflight(spec)
    else:  # a site demoted by a site switchover or rebuild is converged as a standby only
        standby.refuse_unnamed_standby(spec)
    apps_preflight(spec)  # declared roles' password files
    if os.environ.get("POSTGRES_PASSWORD") == "" and "POSTGRES_PASSWORD" in os.environ:
        raise StateError("POSTGRES_PASSWORD is set but empty; unset it to have a strong one generated")
    if secrets_file(spec.scope).exists():
        load_or_create(secrets_file(spec.scope))  # raises if POSTGRES_PASSWORD disagrees
    elif spec.backup.enabled and spec.backup.s3 is None and read_pointer(base_of(spec.scope)) is None:
        # A repository kept by `down --volumes` (hardening): never archive a new cluster into it,
        # nor let a new cluster meet it later as its other generation's (a major upgrade).
        for g in generations(spec.scope):
            kept = repo_volume(spec.model_copy(update={"scope": g}))
            if eng.repository().volume_exists(kept):
                aside = removed_dirs(g)
                raise StateError(kept_repository_refusal(g, kept, str(aside[-1]) if aside else ""))
    if major_state_file(spec.scope).exists():
        # Its HAProxy routes the clients to green: converging blue would re-render it for blue.
        raise StateError(f"a major upgrade of {base_of(spec.scope)} is in progress or rolled back (see `pgha "
                         "status`): finish or roll it back first (`pgha upgrade --major --finish --yes | "
                         "--rollback`)")
    # ---- tls: switching an existing cluster between TLS and plain would restart every member at
    # once with a changed etcd peer scheme; refuse it rather than break the cluster.
    if (runs_tls := certs.running_tls(spec)) is not None and runs_tls != spec.tls.enabled:
        now, asked = ("with", "without") if runs_tls else ("without", "with")
        raise StateError(f"cluster {spec.scope} runs {now} TLS but this spec asks for {asked} (tls.enabled: "
                         f"{str(spec.tls.enabled).lower()}); switching needs a new cluster (restore a backup into "
                         f"it), or set tls.enabled: {str(runs_tls).lower()} in the spec")
    # ---- end tls ----
    if spec.multi_host:
        return  # many hosts: the client ports are on the hosts' addresses, not this machine's loopback
    engine = eng.of(spec.haproxy_member)
    own = engine.host_ports_of(spec.scope)
    for key in ("rw", "ro", "stats", *(("pool",) if spec.runs_pooler else ())):
        port = int(getattr(spec.ports, key))
        if port in own:
            continue
        if (owner := engine.port_owner(port)) is not None:
            raise StateError(f"port {port} (ports.{key}) is already published by pgha cluster '{owner}'; choose another")
        if not docker_hosts.port_is_free(port):
            raise StateError(f"port {port} (ports.{key}) is already in use on 127.0.0.1; choose another in the spec")


def refuse_image_swap(spec: ClusterSpec, node_image: str) -> None:
    """Refuse to move existing Patroni nodes to another image: `up` would restart them all at once.

    That is a rolling change (`pgha upgrade`), which keeps a primary and replicas serving; a
    spec that merely lacks the `upgrade.node_image` an earlier upgrade recorded must not
    silently downgrade the cluster either.
    """
    eng = docker_hosts.engines(spec)
    for member in spec.node_names():
        current = eng.of(member).image_of(spec.container(member))
        if current and current != node_image:
            raise StateError(
                f"{member} runs image {current} but this spec asks for {node_image}; `pgha up` never swaps the "
                f"image of existing nodes (all would restart at once): run `pgha upgrade --image {node_image}` "
                f"for a rolling change, or set upgrade.node_image: {current} in the spec")


ROLLED = "recreated (rolling)"


def _redefined(spec: ClusterSpec, node_image: str, subnet: str) -> list[str]:
    """Running Patroni nodes whose definition changed (a limit, a mount): `up` would recreate them."""
    eng = docker_hosts.engines(spec)
    secrets = cluster_secrets(spec.scope)
    out = []
    for m in spec.node_names():
        label = eng.of(m).config_label(spec.container(m))
        if label is None:
            continue
        planned = topology.patroni_node(spec, m, node_image, subnet, secrets, str(config_dir(spec.scope, m)))
        if label != planned.container.config_hash:
            out.append(m)
    return out


def roll_changed_nodes(spec: ClusterSpec, node_image: str, subnet: str) -> dict[str, str]:
    """Recreate changed nodes of a live cluster one at a time (`roll_node`: replicas first, the
    leader after a switchover), instead of all at once; {member: "recreated (rolling)"}.

    Only when the cluster is healthy: a cluster being bootstrapped or repaired is converged as
    before (all nodes at once), where there is no service to keep.
    """
    changed = _redefined(spec, node_image, subnet)
    if not changed:
        return {}
    view = patroni.cluster_view(spec)
    lead = view.leader()
    if lead is None or not assess(view, spec).ok:
        get_run_logger().warning("nodes %s changed but the cluster is not healthy: recreated together",
                                 ", ".join(changed))
        return {}
    ctx = node_ctx(spec, spec.upgrade.node_timeout_s)
    out: dict[str, str] = {}
    for m in sorted(m for m in changed if m != lead.name):
        roll_node(ctx, m, node_image, note=ops.note)
        out[m] = ROLLED
    if lead.name in changed:
        if spec.nodes > 1:
            def candidate() -> str:
                v = patroni.cluster_view(spec)
                reps = [r for r in v.replicas() if r.streaming and r.name != lead.name]
                sync = [r.name for r in reps if r.role.value == "sync_standby"]
                if spec.timing.synchronous_mode:
                    return sync[0] if sync else ""
                return sync[0] if sync else (reps[0].name if reps else "")

            cand = wait_for("a replica to hand the leadership to", candidate, bool, timeout=60, interval=0.5)
            switchover(spec, lead.name, cand, ctx.timeout)
        roll_node(ctx, lead.name, node_image, as_leader=spec.nodes == 1, note=ops.note)
        out[lead.name] = ROLLED
    return out


def converge(spec: ClusterSpec) -> BootstrapResult:
    """Make the cluster of `spec` exist, run and route; the caller holds the cluster's lock."""
    log = get_run_logger()
    started = time.monotonic()
    bootstrap_preflight(spec)
    primary = standby.preflight(spec) if spec.standby_of is not None else None
    if primary is not None:  # the primary site's passwords and CA, before this cluster makes its own
        if copied := standby.adopt_primary(spec, primary):
            log.info("copied from the primary site %s: %s", primary.scope, ", ".join(copied))
        spec = site.following(spec, primary)  # over hosts: the primary site's addresses it streams from
    cluster_secrets(spec.scope)
    store_spec(spec)
    if primary is not None and (admitted := standby.admit_on_primary(primary)):
        log.info("the primary site %s admits this site's hosts: %s", primary.scope, ", ".join(admitted))

    image = ensure_image(spec)
    preflight_once(refuse_image_swap, spec, spec.upgrade.node_image or image)
    if spec.tls.enabled:
        host_tls.material(spec)  # the CA and certificates, once, before members are placed concurrently
    if spec.multi_host:
        ensure_image_on_hosts(spec, spec.upgrade.node_image or image)
    subnet = ensure_network(spec)
    ensure_volumes(spec)
    eng = docker_hosts.engines(spec)
    outcomes: dict[str, str] = {}
    # Members of one role are independent: create them concurrently (thread task runner).
    live = any(eng.of(m).find_container(spec.container(m)) is not None for m in spec.etcd_names())
    peer_cn = host_tls.peer_cn_enforced(spec, live)
    if live:
        # A live etcd cluster (a changed limit recreates members): one member at a time, quorum kept.
        # An older one moves to the peer certificate first, then switches the peer check on.
        for step in ([False, True] if not peer_cn else [True]):
            for m in spec.etcd_names():
                outcomes[m] = ensure_member(spec, "etcd", m, image, subnet, step)
                etcd.wait_healthy(spec)
            if spec.tls.enabled and not step:
                host_tls.mark_peer_cn(spec)
                log.info("etcd: every member presents the peer certificate; the peer check goes on member by member")
    else:
        etcd_runs = {m: ensure_member.submit(spec, "etcd", m, image, subnet) for m in spec.etcd_names()}
        outcomes.update({m: f.result() for m, f in etcd_runs.items()})
    etcd.wait_healthy(spec)
    if spec.tls.enabled and peer_cn:
        host_tls.mark_peer_cn(spec)
    # etcd's users, roles and authentication before any Patroni node is placed with its password.
    auth = etcd.ensure_auth(spec)
    log.info("etcd authentication: %s", auth.value)
    outcomes["etcd_auth"] = "enabled" if auth == etcd.AuthOutcome.ENABLED else "unchanged"
    # After `pgha upgrade` the nodes run the upgraded image; etcd and HAProxy keep the spec's.
    node_image = spec.upgrade.node_image or image
    if primary is not None:
        outcomes["primary_slot"] = ensure_primary_slot(spec, primary)
    rolled = roll_changed_nodes(spec, node_image, subnet)
    node_runs = {m: ensure_member.submit(spec, "patroni", m, node_image, subnet) for m in spec.node_names()}
    outcomes.update({m: rolled.get(m) or f.result() for m, f in node_runs.items()})
    # HAProxy starts while Patroni bootstraps: it resolves servers at run time and routes to
    # a node only once that node's health check passes, so nothing is routed early.
    haproxy_run = ensure_member.submit(spec, "haproxy", spec.haproxy_member, image, subnet)
    fencer_run = ensure_fencer.submit(spec, image, subnet)
    view = patroni.wait_whole(spec)
    outcomes[spec.haproxy_member] = haproxy_run.result()
    outcomes.update(fencer_run.result())
    if (exporter := ensure_metrics(spec, image, subnet)) != "absent":
        outcomes[spec.metrics_member] = exporter
    outcomes["failsafe_mode"] = patroni.ensure_failsafe(spec)
    postgres.wait_endpoints(spec, cluster_secrets(spec.scope))
    ensure_archiving(spec)  # WAL archiving + pgBackRest stanza (converges older clusters)
    if spec.roles or spec.databases or spec.prune:  # before the pooler reads the declared roles' secrets
        apps = ensure_app_objects(spec)
        ops.current().detail["apps"] = apps or ["nothing changed"]  # the operations journal's line
        if apps:
            outcomes["roles and databases"] = f"{len(apps)} changes"
    if (pooler := ensure_pooler(spec, image)) != "absent":
        outcomes[spec.pooler_member] = pooler

    st = cluster_status(spec)
    elapsed = round(time.monotonic() - started, 1)
    rows = [
        {"member": m.member, "component": m.role, "container": m.container, "action": outcomes.get(m.member, ""),
         "state": m.container_state, "pg_role": m.pg_role, "pg_state": m.pg_state,
         "timeline": m.timeline if m.timeline is not None else "",
         "lag_bytes": m.lag_bytes if m.lag_bytes is not None else ""}
        for m in st.members
    ]
    create_table_artifact(key=f"{spec.scope}-members", table=rows,
                          description=f"pgha cluster {spec.scope}: {assess(view, spec).reason}; {elapsed}s")
    result = BootstrapResult(scope=spec.scope, image=image, outcomes=outcomes, elapsed_s=elapsed, status=st)
    log.info("cluster %s ready in %ss (%s)", spec.scope, elapsed,
             "changed: " + ", ".join(result.changed) if result.changed else "nothing changed")
    return result
