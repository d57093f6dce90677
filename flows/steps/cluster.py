"""The cluster as a whole: its status, "wait until whole", "switch over and wait", the spec kept."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext, suppress

import yaml

from stack.cluster import ClusterView, assess, led_by
from stack.errors import HaproxyError, PatroniError, PghaError, WaitTimeout
from stack.results import ClusterStatus, SwitchoverTimes
from stack.snapshot import ClusterSnapshot
from stack.spec import ClusterSpec, as_stored
from stack.status import SESSION_PROBLEM, judge
from stack.wait import wait_for
from tasks import docker_hosts, haproxy, patroni, pgbouncer, postgres
from tasks._prefect import task
from tasks.host.generations import deployed
from tasks.host.secrets import cluster_secrets
from tasks.host.state import cluster_dir, write_private
from tasks.observe import STATUS_PARTS, observe


def cluster_status(spec: ClusterSpec) -> ClusterStatus:
    """What Docker, etcd, Patroni and HAProxy say, as one status; never raises for a sick cluster.

    Read-only and quick: the CLI's `status` calls it directly (no flow, no Prefect API). The
    snapshot's status parts are asked at once (`tasks.observe`), so status answers in the time
    of the slowest system, not the sum; the judgement is `stack.status.judge`. A new session is
    opened through the R/W port as a client would: a cluster whose members all run but that no
    client can enter (a preload library that fails in every session) is not healthy.
    """
    spec = deployed(spec)
    return status_of(spec, observe(spec, STATUS_PARTS, deep=False))


def status_of(spec: ClusterSpec, snap: ClusterSnapshot) -> ClusterStatus:
    """The status `snap` shows (any snapshot holding `STATUS_PARTS`: the audit's in `pgha report`)."""
    endpoints = {"rw": postgres.dsn(spec), "ro": postgres.dsn(spec, read_only=True)}
    if spec.runs_pooler:
        endpoints["pool"] = postgres.dsn(spec, pooled=True)
    return judge(spec, snap, endpoints)


@task(name="wait-healthy")
def wait_healthy(spec: ClusterSpec, timeout: float, stable_s: float = 0.0) -> ClusterStatus:
    """Wait until the status is healthy (for `stable_s` seconds in a row when given).

    Right after a restart /cluster can still show a member's stale entry for a moment, so the
    drills ask for healthy twice, a second apart.
    """
    streak: list[float] = []

    def stable(st: ClusterStatus) -> bool:
        if not st.healthy:
            streak.clear()
            return False
        streak.append(time.monotonic())
        return streak[-1] - streak[0] >= stable_s

    return wait_for("the cluster to be healthy" if not stable_s else "the cluster to be whole again",
                    lambda: cluster_status(spec), stable, timeout=timeout, interval=0.5,
                    describe=lambda s: "; ".join(s.problems[:3]))


def require_healthy(spec: ClusterSpec, doing: str, settle_s: float = 0.0,
                    sessions_optional: bool = False) -> ClusterView:
    """Refuse `doing` on a cluster that is not healthy (StateError, one line); its Patroni view.

    `settle_s`: a cluster that becomes healthy within that many seconds is accepted (a drill
    on a busy machine: one HAProxy check of 500 ms timing out twice marks the primary down for
    a second, and a single look would refuse a healthy cluster). `sessions_optional`: a cluster
    healthy but for new sessions not opening is accepted (what `config reset` repairs).
    """
    from stack.errors import StateError

    seen: list[ClusterStatus] = []

    def look() -> ClusterStatus:
        st = cluster_status(spec)
        if sessions_optional:
            st.problems = [p for p in st.problems if not p.startswith(SESSION_PROBLEM)]
            st.healthy = not st.problems
        seen.append(st)
        return st

    with suppress(WaitTimeout):
        wait_for(f"the cluster to be healthy before {doing}", look, lambda s: s.healthy, timeout=settle_s,
                 interval=0.5)
    st = seen[-1] if seen else look()
    if not st.healthy:
        raise StateError(f"cluster {spec.scope} is not healthy, refusing {doing}: {st.problems[0]} "
                         "(see `pgha status`)")
    return patroni.cluster_view(spec)


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


def store_spec(spec: ClusterSpec) -> None:
    """Keep the spec the cluster now runs as the stored one (`--scope` finds it)."""
    stored = as_stored(spec)  # with hosts, a pooler on by default is stored as on (`stack.spec.as_stored`)
    write_private(cluster_dir(spec.scope) / "spec.yaml", yaml.safe_dump(stored.model_dump(mode="json"), sort_keys=False))
