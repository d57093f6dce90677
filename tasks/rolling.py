"""Rolling steps on one Patroni node: take it out of service, recreate or restart it, wait until
it has caught up, put it back. Used by upgrade, config set, restart, scale and converge."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from prefect import get_run_logger, task

from stack import render, topology
from stack.cluster import MemberRole
from stack.errors import PghaError
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_hosts, haproxy, patroni, postgres
from tasks._prefect import ONCE
from tasks.host.secrets import cluster_secrets
from tasks.host.state import config_dir
from tasks.node_exec import node


@dataclass(frozen=True)
class NodeCtx:
    """What the node steps need: the spec, passwords, the network's subnet, a per-node timeout."""

    spec: ClusterSpec
    secrets: Secrets
    subnet: str
    timeout: float


def node_ctx(spec: ClusterSpec, timeout: float) -> NodeCtx:
    subnet = docker_hosts.node_subnets(spec)
    return NodeCtx(spec=spec, secrets=cluster_secrets(spec.scope), subnet=subnet, timeout=timeout)


def take_out(ctx: NodeCtx, member: str, is_leader: bool) -> None:
    """Tags nofailover/noloadbalance/nosync, then wait until Patroni and HAProxy act on them."""
    spec = ctx.spec
    patroni.write_and_reload(spec, member, patroni.patroni_text(spec, member, ctx.subnet, ctx.secrets, True))
    wait_for(f"{member} to run with its out-of-service tags", lambda: patroni.member_tags(spec, member),
             patroni.out_of_service, timeout=30, interval=0.3)
    if is_leader or spec.nodes == 1:
        return

    def where() -> tuple[str, str]:
        me = patroni.cluster_view(spec).member(member)
        return (me.role.value if me else "gone"), haproxy.backend_states(spec)["replicas"].get(member, "")

    wait_for(f"{member} out of synchronous replication and the R/O pool", where,
             lambda w: w[0] != MemberRole.SYNC_STANDBY.value and not w[1].startswith("UP"),
             timeout=30, interval=0.3, describe=lambda w: f"role {w[0]}, HAProxy {w[1] or '?'}")


def put_back(ctx: NodeCtx, member: str) -> None:
    """Back to the node's own tags; wait until the node serves reads again (when it is a replica that
    serves reads: a delayed node keeps its tags and stays out of R/O routing)."""
    spec = ctx.spec
    own = render.node_tags(spec, member)
    patroni.write_and_reload(spec, member, patroni.patroni_text(spec, member, ctx.subnet, ctx.secrets, False))
    wait_for(f"{member} to run with its own tags", lambda: patroni.member_tags(spec, member),
             lambda t: all(bool(t.get(k)) == own[k] for k in patroni.OUT_TAGS), timeout=30, interval=0.3)
    lead = patroni.cluster_view(spec).leader()
    if spec.nodes > 1 and lead is not None and lead.name != member and spec.delay_of(member) is None:
        wait_for(f"HAProxy to route reads to {member} again",
                 lambda: haproxy.backend_states(spec)["replicas"].get(member, ""),
                 lambda s: s.startswith("UP"), timeout=30, interval=0.3)


def caught_up(spec: ClusterSpec, member: str, since_unix: float, max_lag: int, as_leader: bool) -> str:
    """'' when the node restarted after `since_unix` and streams with lag <= max_lag (or leads); else why not."""
    from stack.cluster import back_since

    st = patroni.member_status(spec, member)
    if not back_since(st, since_unix):
        return f"PostgreSQL {st.state}, started {st.postmaster_start_time}"
    me = patroni.cluster_view(spec).member(member)
    if me is None:
        return "not registered in the cluster"
    if as_leader and me.is_leader:
        # A recreated leader may come back leading (one node) or, after a failover, as a replica.
        return "" if me.state == "running" else f"{me.role.value} {me.state}"
    if not me.streaming:
        return f"{me.role.value} {me.state}, not streaming"
    if me.lag is None or me.lag > max_lag:
        return f"lag {me.lag} bytes"
    return ""


def wait_caught_up(ctx: NodeCtx, member: str, since_unix: float, as_leader: bool, what: str = "") -> None:
    spec = ctx.spec
    wait_for(what or f"{member} to stream with lag <= {spec.upgrade.caught_up_lag_bytes} bytes",
             lambda: caught_up(spec, member, since_unix, spec.upgrade.caught_up_lag_bytes, as_leader),
             lambda why: why == "", timeout=ctx.timeout, interval=0.5, describe=lambda why: why,
             logs=lambda: node(spec, member).logs(tail=12))


def planned_node(ctx: NodeCtx, member: str, image: str, spec: ClusterSpec | None = None) -> topology.Planned:
    s = spec or ctx.spec
    return topology.patroni_node(s, member, image, ctx.subnet, ctx.secrets, str(config_dir(s.scope, member)))


def recreate(ctx: NodeCtx, member: str, image: str, as_leader: bool) -> None:
    """Stop gracefully, recreate on `image` (same data volume), wait until it is caught up.

    The new container starts with the out-of-service tags (its host patroni.yml still has
    them), so neither HAProxy nor Patroni use it before it has caught up.
    """
    spec = ctx.spec
    engine = docker_hosts.engines(spec).of(member)
    name = spec.container(member)
    planned = planned_node(ctx, member, image)
    since = time.time()
    if engine.find_container(name) is not None:
        engine.stop(name, timeout=60)
    engine.ensure_container(replace(planned.container, image=image))
    wait_caught_up(ctx, member, since, as_leader, f"{member} on {image} to stream with lag <= "
                                                  f"{spec.upgrade.caught_up_lag_bytes} bytes")


@task(name="roll-node", **ONCE)
def roll_node(ctx: NodeCtx, member: str, image: str, as_leader: bool = False, rescue: bool = False,
              note: Callable[[str], None] | None = None) -> None:
    """One node to `image`: take out, CHECKPOINT, recreate, wait caught up, put back.

    `rescue`: the node may be broken (a rollback); taking it out may fail and is not required.
    `note`: where a step that failed but did not stop the roll is told (the operation's events,
    `flows.steps.ops.note`; None: the run's log).
    """
    note = note or _log
    try:
        take_out(ctx, member, as_leader)
    except PghaError as exc:
        if not rescue:
            raise
        note(f"{member}: could not take it out cleanly ({str(exc).splitlines()[0]}); recreating anyway")
    try:
        postgres.checkpoint(ctx.spec, member)
    except PghaError as exc:  # a node that cannot checkpoint still restarts; it replays more WAL
        note(f"{member}: CHECKPOINT failed ({exc}); recreating anyway")
    recreate(ctx, member, image, as_leader)
    put_back(ctx, member)


@task(name="restart-member", **ONCE)
def restart_node(ctx: NodeCtx, member: str, is_leader: bool) -> None:
    """Drain (tags), restart PostgreSQL through Patroni, wait until caught up, put back."""
    take_out(ctx, member, is_leader)
    since = time.time()
    patroni.restart_member(ctx.spec, member)
    wait_caught_up(ctx, member, since, is_leader, f"{member} restarted and caught up")
    put_back(ctx, member)


def _log(text: str) -> None:
    get_run_logger().info(text)
