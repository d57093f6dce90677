"""Switch over and wait: the pooler-aware hand-over of the leadership (PgBouncer paused, Patroni asked,
HAProxy routed at once, PgBouncer resumed), then the wait until the candidate leads and the
cluster is whole again."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext

from stack.cluster import assess, led_by
from stack.errors import HaproxyError, PatroniError, PghaError
from stack.results import SwitchoverTimes
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_hosts, haproxy, patroni, pgbouncer, postgres
from tasks._prefect import task
from tasks.host.secrets import cluster_secrets


def hand_over(spec: ClusterSpec, leader: str, candidate: str, timeout: float) -> SwitchoverTimes:
    """The pooler-aware switchover: PAUSE → Patroni switchover → route at once → RESUME.

    1. PAUSE the pooler (when the spec runs one): in-flight transactions finish, new ones
       queue in PgBouncer, every server connection to the old primary is closed.
    2. Ask Patroni (on the leader) for the switchover, in a thread: its reply comes up to a
       second after the fact (Patroni polls its outcome once a second).
    3. Meanwhile (started just before 2) HAProxy's container polls the candidate's /leader every 50 ms and, the
       moment it holds the leader lock, the runtime API marks it up and the others down in
       the R/W backend (instead of `fall x inter` of health checks; those keep running and
       stay the truth for an unplanned failover). Then new connections on the R/W port are
       tried every 50 ms until one is out of recovery (the promotion has finished).
    4. RESUME — always, even when 2 or 3 failed: queued clients then run on the new primary.
    """
    t0 = time.monotonic()
    others = [m for m in spec.node_names() if m != candidate]
    times = SwitchoverTimes(leader=leader, candidate=candidate, pooled=spec.runs_pooler)
    pool_ctx = pgbouncer.paused(spec) if spec.runs_pooler else nullcontext()
    requested: list[Future[str]] = []

    def refused() -> bool:
        return bool(requested) and requested[0].done() and requested[0].exception() is not None

    with ThreadPoolExecutor(2, thread_name_prefix="switchover") as pool:
        with pool_ctx:
            times.paused_s = round(time.monotonic() - t0, 3) if spec.runs_pooler else None
            asked = time.monotonic()
            # The watcher first: starting a `docker exec` can take a while on a busy host, and
            # it must already be polling when the candidate takes the lock.
            route = pool.submit(haproxy.route_primary, spec, candidate, others, timeout, refused)
            request = pool.submit(patroni.switchover, spec, leader, candidate)
            requested.append(request)
            try:
                route.result()
            except HaproxyError as exc:
                if refused():
                    raise request.exception() from None  # type: ignore[misc]  # Patroni's reason says more
                # Routing is left to the health checks; the wait below still holds the pooler
                # until the R/W port reaches a writable primary.
                times.note = str(exc)
            postgres.wait_writable(spec, cluster_secrets(spec.scope), timeout)
            times.routed_s = round(time.monotonic() - asked, 3)
        times.resumed_s = round(time.monotonic() - t0, 3)
        try:
            request.result()
        except PatroniError:
            # Patroni's own poll can give up while the switchover in fact happened: the
            # cluster decides (the wait below), not the reply.
            lead = patroni.cluster_view(spec).leader()
            if lead is None or lead.name != candidate:
                raise
    return times


@task(name="switchover")
def switchover(spec: ClusterSpec, leader: str, candidate: str, timeout: float) -> str:
    """Hand the leadership to `candidate` (`hand_over`) and wait until it leads and the cluster is whole again."""
    switchover_and_wait(spec, leader, candidate, timeout)
    return candidate


def switchover_and_wait(spec: ClusterSpec, leader: str, candidate: str, timeout: float) -> SwitchoverTimes:
    times = hand_over(spec, leader, candidate, timeout)
    started = time.monotonic()
    wait_for(f"{candidate} to lead and {leader} to replicate", lambda: patroni.cluster_view(spec),
             lambda v: led_by(v, spec, candidate), timeout=timeout, interval=0.5,
             describe=lambda v: assess(v, spec).reason, logs=lambda: _member_logs(spec, (leader, candidate)))
    times.whole_s = round(times.resumed_s + time.monotonic() - started, 3)
    return times


def _member_logs(spec: ClusterSpec, members: tuple[str, ...], tail: int = 12) -> str:
    """The last log lines of `members` (Patroni's and PostgreSQL's), for a wait that timed out."""
    out = []
    for m in members:
        try:
            out.append(f"[{m}]\n{docker_hosts.engines(spec).of(m).logs(spec.container(m), tail=tail)}")
        except PghaError as exc:
            out.append(f"[{m}] logs unavailable: {exc}")
    return "\n".join(out)
