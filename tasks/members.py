"""Members changed one at a time, outside a full converge: HAProxy reloaded with a new server
list, a Patroni node removed (`flows.scale`), an etcd member recreated empty to rejoin its raft
group (`flows.etcd_replace`)."""

from __future__ import annotations

import shutil
from dataclasses import replace

from prefect import task

from stack import render, topology
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import config_volume, docker_hosts, etcd, haproxy
from tasks._prefect import ONCE
from tasks.host import tls as host_tls
from tasks.host.state import config_dir, write_private


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
