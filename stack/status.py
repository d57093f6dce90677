"""`pgha status` from a snapshot: the member table, the endpoints and the short judgement.

Pure: `tasks/observe.py` gathers the `ClusterSnapshot` (`STATUS_PARTS`), this turns it into a
`ClusterStatus` whose `problems` are the reasons the cluster is not healthy, in a fixed order
(engines, Patroni, members, etcd, Patroni's readiness, HAProxy and sessions, the pooler).
"""

from __future__ import annotations

from stack.cluster import assess, quorum
from stack.pooler import pooler_problems
from stack.results import ClusterStatus, MemberRow
from stack.snapshot import ClusterSnapshot
from stack.spec import ClusterSpec

SESSION_PROBLEM = "no new session opens through the R/W port"

# Without the fencing watcher failover still works (by ttl): shown, and warned by the audit, but
# not a reason to call the cluster unhealthy (and refuse drills or changes). Nor the repository
# host: failover does not need it (the audit's archiving row says so). Nor the exporter: it only reports.
NOT_REQUIRED = ("fencer", "repo", "metrics")


def judge(spec: ClusterSpec, snap: ClusterSnapshot, endpoints: dict[str, str]) -> ClusterStatus:
    """The status of `spec`'s cluster as `snap` saw it; `endpoints`: the R/W and R/O (and pool) DSNs."""
    st = ClusterStatus(scope=spec.scope)
    cts = snap.containers.value
    if cts is not None:
        st.problems += cts.engine_errors
    elif snap.containers.error:
        st.problems.append(snap.containers.error)
    by_container = {c.name: c for c in cts.rows} if cts else {}
    p = snap.patroni.value
    if p is None and snap.patroni.error:
        st.problems.append(snap.patroni.error)
    by_name = {m.name: m for m in p.view.members} if p else {}

    for member, role in spec.expected_members():
        name = spec.container(member)
        ct = by_container.get(name)
        state = ct.status if ct else "missing"
        ms = MemberRow(member=member, role=role, container=name, container_state=state,
                       health=(ct.health if ct else "") or "-")
        if role == "patroni" and member in by_name:
            pm = by_name[member]
            ms.pg_role, ms.pg_state, ms.timeline, ms.lag_bytes = pm.role.value, pm.state, pm.timeline, pm.lag
        elif role == "patroni":
            ms.pg_state = "not registered"
        if role == "patroni" and (delayed := spec.delay_of(member)) is not None:
            ms.delay = delayed.delay
        if state != "running" and role not in NOT_REQUIRED:
            st.problems.append(f"{name} is {state}")
        st.members.append(ms)

    e = snap.etcd.value
    if e is not None:
        for r in e.health:
            if not r.healthy:
                st.problems.append(f"etcd {r.endpoint} unhealthy: {r.error or 'down'}")
        if not quorum(e.health, spec.etcd_members):
            st.problems.append("etcd has no quorum")
    elif snap.etcd.error:
        st.problems.append(snap.etcd.error)

    if p is not None:
        verdict = assess(p.view, spec)
        st.readiness = verdict.reason
        if not verdict.ok:
            st.problems.append(verdict.reason)
    st.endpoints = {k: v for k, v in endpoints.items() if k in ("rw", "ro")}
    b = snap.backends.value
    if b is not None:
        up_primary = [s for s, v in b[0].items() if v.status.startswith("UP")]
        up_replicas = [s for s, v in b[1].items() if v.status.startswith("UP")]
        st.endpoints |= {"rw_backends": ",".join(up_primary) or "none", "ro_backends": ",".join(up_replicas) or "none"}
        if len(up_primary) != 1:
            st.problems.append(f"HAProxy R/W port has {len(up_primary)} primaries up (expected 1)")
        if spec.nodes > 1 and not up_replicas:
            st.problems.append("HAProxy R/O port has no replica up")
        # Only judged while HAProxy routes to one primary: otherwise that is the problem to show.
        if len(up_primary) == 1:
            if snap.session.value is not None:
                st.problems.append(f"{SESSION_PROBLEM}: {snap.session.value}")
            elif snap.session.error:
                st.problems.append(snap.session.error)
    elif snap.backends.error:
        st.problems.append(snap.backends.error)
    if spec.runs_pooler and snap.pooler.value is not None:
        obs = snap.pooler.value
        st.endpoints |= {"pool": endpoints.get("pool", ""), "pooler": obs.summary()}
        st.problems += pooler_problems(obs, spec)
    elif spec.runs_pooler and snap.pooler.error:
        st.problems.append(snap.pooler.error)
    st.healthy = not st.problems
    return st
