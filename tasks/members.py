"""A cluster's members placed on their engines: each member's files rendered and its container made
to match (`place_member`, the one place that does it), the pooler, the fencing watchers and the
metrics exporter; and members changed one at a time outside a full converge: HAProxy reloaded
with a new server list, a Patroni node removed (`flows.scale`), an etcd member recreated empty
to rejoin its raft group (`flows.etcd_replace`)."""

from __future__ import annotations

import shutil
from dataclasses import replace

from prefect import get_run_logger, task

from stack import render, topology
from stack.errors import StateError
from stack.pooler import pooled_roles
from stack.pooler import where as pooler_where
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import config_volume, docker_hosts, etcd, fencer, haproxy, metrics_exporter, patroni, pgbouncer, postgres
from tasks._prefect import ONCE, SIDE_EFFECT
from tasks.engine_client import LABEL_MEMBER
from tasks.host import tls as host_tls
from tasks.host.secrets import cluster_secrets
from tasks.host.state import config_dir, write_private


@task(name="ensure-member", **SIDE_EFFECT)
def ensure_member(spec: ClusterSpec, role: str, member: str, image: str, subnet: str, peer_cn: bool = True) -> str:
    """Render the member's config files (0600, passwords inside) and make its container run."""
    return place_member(spec, role, member, image, subnet, peer_cn)


def place_member(spec: ClusterSpec, role: str, member: str, image: str, subnet: str, peer_cn: bool = True) -> str:
    """`ensure_member`'s body, for tasks that place a member as one step of their own (`peer_cn`: etcd's
    peer check, `tasks.host.tls.peer_cn_enforced`)."""
    conf = str(config_dir(spec.scope, member))
    host_tls.install(spec, member)  # spec.tls: the CA and certificates in the member's config dir
    if role == "etcd":
        planned = topology.etcd_member(spec, member, image, conf, peer_cn)
    elif role == "patroni":
        planned = topology.patroni_node(spec, member, image, subnet, cluster_secrets(spec.scope), conf)
    elif role == "fencer":
        planned = topology.fencer(spec, image, conf, fencer.agent_files(), member,
                                  etcd_password=cluster_secrets(spec.scope).etcd_fencer)
    elif role == "metrics":
        planned = topology.metrics_exporter(spec, image, conf, metrics_exporter.agent_files())
    else:
        planned = topology.haproxy(spec, image, conf)
    for fname, text in planned.files.items():
        write_private(config_dir(spec.scope, member) / fname, text)
    # HAProxy runs on every host of a many-hosts cluster; every other member on one engine.
    outcomes = [e.ensure_container(planned.container) for e in docker_hosts.engines(spec).placed(member)]
    outcome = next((o for o in outcomes if o.value != "unchanged"), outcomes[0])
    get_run_logger().info("%s %s: %s", role, planned.container.name, outcome.value)
    return outcome.value


@task(name="ensure-pooler", **SIDE_EFFECT)
def ensure_pooler(spec: ClusterSpec, image: str) -> str:
    """PgBouncer next to HAProxy (every host's, with `hosts`) with the SCRAM secrets of pg_authid;
    removed when the spec turns it off."""
    engines = docker_hosts.engines(spec).placed(spec.pooler_member)  # beside HAProxy, wherever it runs
    name = spec.container(spec.pooler_member)
    if not spec.runs_pooler:
        removed = [e.remove_container(name) for e in engines]
        return "removed" if any(removed) else "absent"
    lead = patroni.cluster_view(spec).leader()
    if lead is None:
        raise StateError(f"cluster {spec.scope} has no leader to read the pooler's SCRAM secrets from")
    secrets = postgres.scram_secrets(spec, lead.name, pooled_roles(spec))
    host_tls.install(spec, spec.pooler_member)  # the CA it verifies the server side with (spec.tls)
    planned = topology.pooler(spec, image, str(config_dir(spec.scope, spec.pooler_member)), secrets)
    for fname, text in planned.files.items():
        write_private(config_dir(spec.scope, spec.pooler_member) / fname, text)
    outcomes = [e.ensure_container(planned.container) for e in engines]
    outcome = next((o for o in outcomes if o.value != "unchanged"), outcomes[0])
    wait_for(f"the pooler on {pooler_where(spec)} to answer", lambda: pgbouncer.observe(spec),
             lambda o: o.reachable, timeout=30, interval=0.3, describe=lambda o: o.error,
             logs=lambda: "\n".join(e.logs(name, tail=20) for e in engines))
    get_run_logger().info("pooler %s: %s", name, outcome.value)
    return outcome.value


@task(name="ensure-fencer", **SIDE_EFFECT)
def ensure_fencer(spec: ClusterSpec, image: str, subnet: str) -> dict[str, str]:
    """The fencing watchers run when `spec.fencing` (one per engine: with `hosts`, one on every host
    running a Patroni node), and any other fencer of the cluster is removed (fencing off, a host
    without a node any more), found by label on every engine; {member: outcome}."""
    wanted = spec.fencer_members()
    out = {m: place_member(spec, "fencer", m, image, subnet) for m in wanted}
    gone: list[bool] = []
    for e in docker_hosts.engines(spec).all():
        for ct in e.cluster_containers(spec.scope, "fencer"):
            if ct.labels.get(LABEL_MEMBER) in wanted:
                continue
            gone.append(e.remove_container(str(ct.name)))
            if e.config_volumes:  # a host's copy of its files (pgha's etcd client key among them) goes too
                e.remove_volume(config_volume.volume_name(str(ct.name)))
    if not wanted or any(gone):
        out[spec.fencer_member if not wanted else "fencers removed"] = "removed" if any(gone) else "unchanged"
    return out


@task(name="ensure-metrics", **SIDE_EFFECT)
def ensure_metrics(spec: ClusterSpec, image: str, subnet: str) -> str:
    """pgha's Prometheus exporter runs when `spec.metrics.enabled`, and is removed when it is off."""
    if spec.metrics.enabled:
        return place_member(spec, "metrics", spec.metrics_member, image, subnet)
    removed = docker_hosts.engines(spec).default.remove_container(spec.container(spec.metrics_member))
    return "removed" if removed else "absent"


@task(name="reload-haproxy", **ONCE)
def reload_haproxy(spec: ClusterSpec) -> None:
    """Write haproxy.cfg for `spec`, reload HAProxy in place and wait until it serves the new servers.

    The container is not recreated, so its pgha.config label keeps the old hash; the next
    `pgha up` recreates HAProxy once to match (docs/known-limits.md).
    """
    write_private(config_dir(spec.scope, spec.haproxy_member) / "haproxy.cfg", render.render_haproxy_cfg(spec))
    haproxy.reload(spec)
    want = set(spec.node_names())
    # Many hosts: every host's HAProxy (clients may use any of them), not the first that answers.
    wait_for("every HAProxy to serve the new server list",
             lambda: {host: set(st.get("primary", {})) for host, st in haproxy.backend_states_each(spec).items()},
             lambda got: all(servers == want for servers in got.values()), timeout=30, interval=0.3,
             describe=lambda got: "; ".join(f"{h}: {', '.join(sorted(s)) or 'no answer'}" for h, s in got.items()))


@task(name="remove-node", **ONCE)
def remove_node(spec: ClusterSpec, member: str) -> None:
    """Stop a node that is out of service, delete its container, data volume, config and member key."""
    engine = docker_hosts.engines(spec).of(member)
    name = spec.container(member)
    if engine.find_container(name) is not None:
        engine.stop(name, timeout=60)
        engine.remove_container(name)
    engine.remove_volume(spec.volume(member))
    engine.remove_volume(config_volume.volume_name(name))  # many hosts: its config volume (none otherwise)
    shutil.rmtree(config_dir(spec.scope, member), ignore_errors=True)
    etcd.delete_member_key(spec, member)  # at once, instead of waiting out its TTL


@task(name="etcd-recreate-member", **ONCE)
def recreate_etcd_member(spec: ClusterSpec, member: str, image: str) -> None:
    """A fresh volume and a container that joins the existing raft group."""
    engine = docker_hosts.engines(spec).of(member)
    engine.remove_container(spec.container(member))
    engine.remove_volume(spec.volume(member))
    engine.ensure_volume(spec.scope, "etcd", member, spec.volume(member))
    initial = ",".join(f"{m}={etcd.peer_url(spec, m)}" for m in spec.etcd_names())
    host_tls.install(spec, member)
    planned = topology.etcd_member(spec, member, image, str(config_dir(spec.scope, member)),
                                   host_tls.peer_cn_enforced(spec, etcd_live=True))
    cmd = [a for a in planned.container.command if not a.startswith(("--initial-cluster=", "--initial-cluster-state="))]
    cmd += [f"--initial-cluster={initial}", "--initial-cluster-state=existing"]
    # The label keeps the rendered definition's hash: with a data dir present etcd ignores the
    # initial-cluster flags, so the rendered command is equivalent and `pgha up` leaves it alone.
    engine.ensure_container(replace(planned.container, command=cmd))
