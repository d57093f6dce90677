"""The drills' faults as Prefect tasks: a member's container stopped, killed, cut off its network,
restarted or paused, and undone; a lab host killed and booted again, cut off and reconnected.

A fault is injected once and never retried (a retried fault is a different drill); undoing one
is a side effect that may be tried again."""

from __future__ import annotations

from prefect import task

from stack.drill import DrillKind, Target
from stack.spec import ClusterSpec
from tasks import docker_hosts, docker_lab
from tasks._prefect import ONCE, SIDE_EFFECT
from tasks.switchover import hand_over


@task(name="heal", **SIDE_EFFECT)
def heal(spec: ClusterSpec, member: str) -> str:
    """Undo any drill fault on a member: reattach its network, start its container."""
    engine = docker_hosts.engines(spec).of(member)
    name = spec.container(member)
    done = []
    if engine.find_container(name) is not None and engine.unpause(name):
        done.append("unpaused")
    if not spec.multi_host and engine.connect(name, spec.network):
        done.append("network reattached")
    if engine.start(name):
        done.append("started")
    return ", ".join(done) or "nothing to undo"


@task(name="kill-host", **ONCE)
def kill_host(spec: ClusterSpec, host: str) -> str:
    return docker_lab.kill_host(spec, host)


@task(name="boot-host", **SIDE_EFFECT)
def boot_host(spec: ClusterSpec, host: str) -> str:
    return docker_lab.boot_host(spec, host)


@task(name="cut-host", **ONCE)
def cut_host(spec: ClusterSpec, host: str) -> str:
    return docker_lab.partition_host(spec, host, cut=True)


@task(name="reconnect-host", **SIDE_EFFECT)
def reconnect_host(spec: ClusterSpec, host: str) -> str:
    if not docker_lab.is_lab_host(spec, host):
        return "not a lab host"
    return docker_lab.partition_host(spec, host, cut=False)


@task(name="inject-fault", **ONCE)
def inject(spec: ClusterSpec, kind: DrillKind, target: Target) -> None:
    """The fault itself; never retried (a retried fault is a different drill)."""
    engine = docker_hosts.engines(spec).of(target.member)
    name = spec.container(target.member)
    if kind.is_switchover:
        # The same pooler-aware switchover as `pgha switchover` and the rolling changes.
        hand_over(spec, target.member, target.candidate, spec.upgrade.node_timeout_s)
    elif kind in (DrillKind.GRACEFUL_STOP, DrillKind.ETCD_MEMBER_LOSS):
        engine.stop(name, timeout=30)
    elif kind in (DrillKind.HARD_KILL, DrillKind.REPLICA_KILL):
        engine.kill(name)
    elif kind == DrillKind.PARTITION:
        engine.disconnect(name, spec.network)
    elif kind == DrillKind.HAPROXY_RESTART:
        engine.restart(name, timeout=5)
    elif kind == DrillKind.FREEZE:
        engine.pause(name)
    elif kind == DrillKind.ETCD_QUORUM_LOSS:
        for member in target.members:
            docker_hosts.engines(spec).of(member).stop(spec.container(member), timeout=10)
