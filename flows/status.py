"""Cluster status: members, roles, lag, endpoints and container health.

Read-only and quick, so it is not a flow (a flow pays Prefect's API start-up first); the
bootstrap flow uses it for its summary too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from stack.errors import PghaError
from stack.spec import ClusterSpec
from tasks import docker_engine as de
from tasks import etcd, haproxy, patroni, postgres


@dataclass
class MemberStatus:
    member: str
    role: str  # etcd | patroni | haproxy (component) ...
    container: str
    container_state: str
    health: str
    pg_role: str = ""
    pg_state: str = ""
    timeline: int | None = None
    lag_bytes: int | None = None


@dataclass
class ClusterStatus:
    scope: str
    members: list[MemberStatus] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)
    readiness: str = ""
    healthy: bool = False
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect(spec: ClusterSpec) -> ClusterStatus:
    """Gather what Docker, etcd, Patroni and HAProxy say; never raises for a sick cluster."""
    st = ClusterStatus(scope=spec.scope)
    containers = {c.name: c for c in de.cluster_containers(spec.scope)}
    view: patroni.ClusterView | None = None
    try:
        view = patroni.cluster_view(spec)
    except PghaError as exc:
        st.problems.append(str(exc))
    by_name = {m.name: m for m in view.members} if view else {}

    expected = [(m, "etcd") for m in spec.etcd_names()] + [(m, "patroni") for m in spec.node_names()]
    expected.append((spec.haproxy_member, "haproxy"))
    for member, role in expected:
        name = spec.container(member)
        ct = containers.get(name)
        state = ct.status if ct else "missing"
        health = (ct.attrs.get("State", {}).get("Health", {}) or {}).get("Status", "") if ct else ""
        ms = MemberStatus(member=member, role=role, container=name, container_state=state, health=health or "-")
        if role == "patroni" and member in by_name:
            pm = by_name[member]
            ms.pg_role, ms.pg_state, ms.timeline, ms.lag_bytes = pm.role.value, pm.state, pm.timeline, pm.lag
        elif role == "patroni":
            ms.pg_state = "not registered"
        if state != "running":
            st.problems.append(f"{name} is {state}")
        st.members.append(ms)

    try:
        rows = etcd.health(spec)
        for r in rows:
            if not r.healthy:
                st.problems.append(f"etcd {r.endpoint} unhealthy: {r.error or 'down'}")
        if not etcd.quorum(rows, spec.etcd_members):
            st.problems.append("etcd has no quorum")
    except PghaError as exc:
        st.problems.append(str(exc))

    if view is not None:
        verdict = patroni.assess(view, spec)
        st.readiness = verdict.reason
        if not verdict.ok:
            st.problems.append(verdict.reason)
    try:
        backends = haproxy.backend_states(spec)
        up_primary = [s for s, v in backends["primary"].items() if v.startswith("UP")]
        up_replicas = [s for s, v in backends["replicas"].items() if v.startswith("UP")]
        st.endpoints = {
            "rw": postgres.dsn(spec),
            "ro": postgres.dsn(spec, read_only=True),
            "rw_backends": ",".join(up_primary) or "none",
            "ro_backends": ",".join(up_replicas) or "none",
        }
        if len(up_primary) != 1:
            st.problems.append(f"HAProxy R/W port has {len(up_primary)} primaries up (expected 1)")
        if spec.nodes > 1 and not up_replicas:
            st.problems.append("HAProxy R/O port has no replica up")
    except PghaError as exc:
        st.endpoints = {"rw": postgres.dsn(spec), "ro": postgres.dsn(spec, read_only=True)}
        st.problems.append(str(exc))
    st.healthy = not st.problems
    return st
