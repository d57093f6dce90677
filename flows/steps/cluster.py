"""The cluster as a whole: its status, "wait until whole", "switch over and wait", the spec kept."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext, suppress

import yaml

from stack.cluster import ClusterView, assess, led_by, quorum
from stack.errors import HaproxyError, PatroniError, PghaError, WaitTimeout
from stack.pooler import pooler_problems
from stack.results import ClusterStatus, MemberRow, SwitchoverTimes
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_engine, docker_hosts, etcd, haproxy, patroni, pgbouncer, postgres
from tasks._prefect import task
from tasks.host.generations import deployed
from tasks.host.secrets import cluster_secrets
from tasks.host.state import cluster_dir, secrets_file, write_private

SESSION_PROBLEM = "no new session opens through the R/W port"


def _session_problem(spec: ClusterSpec) -> str | None:
    """Why a new client session through the R/W port does not open; None when it does (or when
    this machine holds no password for the cluster: nothing to log in with, nothing to judge)."""
    if not secrets_file(spec.scope).exists():
        return None
    why = postgres.session_opens(spec, cluster_secrets(spec.scope))
    return f"{SESSION_PROBLEM}: {why}" if why else None


def cluster_status(spec: ClusterSpec) -> ClusterStatus:
    """What Docker, etcd, Patroni and HAProxy say, as one status; never raises for a sick cluster.

    Read-only and quick: the CLI's `status` calls it directly (no flow, no Prefect API). A new
    session is opened through the R/W port as a client would: a cluster whose members all run
    but that no client can enter (a preload library that fails in every session) is not healthy.
    """
    spec = deployed(spec)
    st = ClusterStatus(scope=spec.scope)
    eng = docker_hosts.engines(spec)
    # The systems are asked at once: status answers in the time of the slowest, not the sum.
    with ThreadPoolExecutor(max_workers=4) as pool:
        f_view = pool.submit(patroni.cluster_view, spec)
        f_etcd = pool.submit(etcd.health, spec)
        f_haproxy = pool.submit(haproxy.backend_states, spec)
        f_session = pool.submit(_session_problem, spec)
        containers = {}
        for e in eng.all():
            try:
                containers |= {c.name: c for c in e.cluster_containers(spec.scope)}
            except PghaError as exc:  # many hosts: a lost host's engine; its members show as missing
                st.problems.append(str(exc))
    view: ClusterView | None = None
    try:
        view = f_view.result()
    except PghaError as exc:
        st.problems.append(str(exc))
    by_name = {m.name: m for m in view.members} if view else {}

    for member, role in spec.expected_members():
        name = spec.container(member)
        ct = containers.get(name)
        state = ct.status if ct else "missing"
        ms = MemberRow(member=member, role=role, container=name, container_state=state,
                       health=(docker_engine.health_of(ct) if ct else "") or "-")
        if role == "patroni" and member in by_name:
            pm = by_name[member]
            ms.pg_role, ms.pg_state, ms.timeline, ms.lag_bytes = pm.role.value, pm.state, pm.timeline, pm.lag
        elif role == "patroni":
            ms.pg_state = "not registered"
        if role == "patroni" and (delayed := spec.delay_of(member)) is not None:
            ms.delay = delayed.delay
        # Without the fencing watcher failover still works (by ttl): shown, and warned by the
        # audit, but not a reason to call the cluster unhealthy (and refuse drills or changes).
        # Nor the repository host: failover does not need it (the audit's archiving row says so).
        # Nor the exporter: it only reports.
        if state != "running" and role not in ("fencer", "repo", "metrics"):
            st.problems.append(f"{name} is {state}")
        st.members.append(ms)

    try:
        rows = f_etcd.result()
        for r in rows:
            if not r.healthy:
                st.problems.append(f"etcd {r.endpoint} unhealthy: {r.error or 'down'}")
        if not quorum(rows, spec.etcd_members):
            st.problems.append("etcd has no quorum")
    except PghaError as exc:
        st.problems.append(str(exc))

    if view is not None:
        verdict = assess(view, spec)
        st.readiness = verdict.reason
        if not verdict.ok:
            st.problems.append(verdict.reason)
    st.endpoints = {"rw": postgres.dsn(spec), "ro": postgres.dsn(spec, read_only=True)}
    try:
        backends = f_haproxy.result()
        up_primary = [s for s, v in backends["primary"].items() if v.startswith("UP")]
        up_replicas = [s for s, v in backends["replicas"].items() if v.startswith("UP")]
        st.endpoints |= {"rw_backends": ",".join(up_primary) or "none", "ro_backends": ",".join(up_replicas) or "none"}
        if len(up_primary) != 1:
            st.problems.append(f"HAProxy R/W port has {len(up_primary)} primaries up (expected 1)")
        if spec.nodes > 1 and not up_replicas:
            st.problems.append("HAProxy R/O port has no replica up")
        # Only judged while HAProxy routes to one primary: otherwise that is the problem to show.
        if len(up_primary) == 1 and (session := f_session.result()) is not None:
            st.problems.append(session)
    except PghaError as exc:
        st.problems.append(str(exc))
    if spec.runs_pooler:
        obs = pgbouncer.observe(spec)
        st.endpoints |= {"pool": postgres.dsn(spec, pooled=True), "pooler": obs.summary()}
        st.problems += pooler_problems(obs, spec)
    st.healthy = not st.problems
    return st


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
    write_private(cluster_dir(spec.scope) / "spec.yaml", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))


def stored_spec(scope: str) -> ClusterSpec:
    """The spec the last `pgha up` of `scope` stored (StateError when there is none)."""
    from stack.errors import StateError
    from stack.spec import load_spec
    from tasks.host.generations import serving, stored_spec_file

    path = stored_spec_file(scope)  # after a major upgrade: the serving generation's
    if not path.exists():
        raise StateError(f"no cluster '{scope}' was brought up from this machine (no {path})")
    return serving(load_spec(path))
