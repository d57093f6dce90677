"""etcd: health and quorum of the cluster's consensus store, read through etcdctl in a member."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from prefect import task

from stack.audit import EtcdMember
from stack.cluster import EndpointHealth
from stack.errors import EtcdError
from stack.render import etcd_hosts
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_engine as de
from tasks._prefect import READ_ONLY


def endpoints(spec: ClusterSpec) -> str:
    return ",".join(f"http://{h}" for h in etcd_hosts(spec))


def _exec_etcdctl(spec: ClusterSpec, args: list[str]) -> tuple[int, str, str]:
    for member in spec.etcd_names():
        name = spec.container(member)
        if de.running(name):
            return de.exec_in(name, ["etcdctl", f"--endpoints={endpoints(spec)}", "--command-timeout=2s", *args])
    raise EtcdError("no etcd member container is running")


def health(spec: ClusterSpec) -> list[EndpointHealth]:
    _, out, err = _exec_etcdctl(spec, ["endpoint", "health", "-w", "json"])
    try:
        rows = json.loads(out)
    except ValueError:
        raise EtcdError(f"etcdctl gave no health report: {(err or out).strip()[:200]}") from None
    return [EndpointHealth(str(r.get("endpoint")), bool(r.get("health")), str(r.get("error") or "")) for r in rows]


def _describe(rows: list[EndpointHealth]) -> str:
    return ", ".join(f"{r.endpoint}={'ok' if r.healthy else r.error or 'down'}" for r in rows)


@task(name="wait-etcd-healthy", **READ_ONLY)
def wait_healthy(spec: ClusterSpec, timeout: float = 60) -> list[EndpointHealth]:
    """Wait until every etcd member reports healthy (quorum alone is not enough at bootstrap)."""
    return wait_for(
        "every etcd member healthy",
        lambda: health(spec),
        lambda rows: len(rows) == spec.etcd_members and all(r.healthy for r in rows),
        timeout=timeout,
        interval=0.3,
        describe=_describe,
        logs=lambda: de.logs(spec.container(spec.etcd_names()[0]), tail=15),
    )


def leader_member(spec: ClusterSpec) -> str:
    """The etcd member currently leading the raft group."""
    _, out, err = _exec_etcdctl(spec, ["endpoint", "status", "-w", "json"])
    try:
        rows = json.loads(out)
    except ValueError:
        raise EtcdError(f"etcdctl gave no status: {(err or out).strip()[:200]}") from None
    for r in rows:
        status = r.get("Status", {})
        if status.get("leader") and status.get("leader") == status.get("header", {}).get("member_id"):
            host = str(r.get("Endpoint", "")).removeprefix("http://").split(":")[0]
            for m in spec.etcd_names():
                if spec.container(m) == host:
                    return m
    raise EtcdError("no etcd leader found")


def audit_members(spec: ClusterSpec) -> list[EtcdMember]:
    """Every member's health, leadership and DB size (for the health audit)."""
    # Both calls wait out the command timeout on a dead member: ask them at once.
    with ThreadPoolExecutor(max_workers=2) as pool:
        status_call = pool.submit(_exec_etcdctl, spec, ["endpoint", "status", "-w", "json"])
        rows = {r.endpoint.removeprefix("http://").split(":")[0]: r for r in health(spec)}
        _, out, _ = status_call.result()
    status: dict[str, dict[str, object]] = {}
    try:
        for r in json.loads(out) if out.strip() else []:
            status[str(r.get("Endpoint", "")).removeprefix("http://").split(":")[0]] = dict(r.get("Status", {}))
    except (ValueError, AttributeError):
        pass  # unreachable members are reported by the health rows
    members: list[EtcdMember] = []
    for m in spec.etcd_names():
        host = spec.container(m)
        h, st = rows.get(host), status.get(host, {})
        header = st.get("header") if isinstance(st.get("header"), dict) else {}
        leader = st.get("leader")
        db = st.get("dbSize")
        members.append(EtcdMember(
            member=m, healthy=bool(h and h.healthy), error=(h.error if h else "no answer")[:160],
            is_leader=bool(leader) and leader == header.get("member_id"),  # type: ignore[union-attr]
            db_size=int(db) if isinstance(db, int) else None,
        ))
    return members
