"""scale / etcd replace: change the number of Patroni nodes, or replace one etcd member.

Growing adds pg-<n+1>.. (Patroni clones them from the cluster), then HAProxy is re-rendered
and reloaded in place (master-worker SIGUSR2: the old worker finishes its sessions), so no
client session is dropped. Shrinking removes the highest-numbered nodes, after a switchover
when the leader is among them, never below one node; each one is first taken out of the R/O
pool and HAProxy's config before it stops. Replacing an etcd member removes it from the raft
group, gives it fresh data and adds it back with `--initial-cluster-state existing`; the
other members keep a quorum all the time.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from typing import Any

import docker.errors
from prefect import flow, get_run_logger, task

from flows.upgrade import Ctx, _store_spec, take_out
from stack import layout, render, topology
from stack.errors import EtcdError, HaproxyError, StateError, UsageError
from stack.rolling import etcd_replace_refusal, plan_scale
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_engine as de
from tasks import etcd, haproxy, patroni
from tasks._prefect import ONCE
from tasks.host.lock import holder_name, mutating
from tasks.host.secrets import load_or_create
from tasks.host.state import config_dir, secrets_file, write_private


def _image_of(name: str) -> str:
    ct = de.find_container(name)
    if ct is None:
        raise StateError(f"container {name} does not exist; run `pgha up` first")
    return str(ct.attrs.get("Config", {}).get("Image", ""))


@task(name="reload-haproxy", **ONCE)
def reload_haproxy(spec: ClusterSpec) -> None:
    """Write haproxy.cfg for `spec` and reload HAProxy in place (no session dropped).

    HAProxy runs in master-worker mode (`-W`): SIGUSR2 makes the master start new workers on
    the new file while old workers serve their existing connections until they close. The
    container is not recreated, so its pgha.config label keeps the old hash; the next
    `pgha up` recreates HAProxy once to match (see README).
    """
    text = render.render_haproxy_cfg(spec)
    write_private(config_dir(spec.scope, spec.haproxy_member) / "haproxy.cfg", text)
    name = spec.container(spec.haproxy_member)
    code, out, err = de.exec_in(name, ["haproxy", "-c", "-q", "-f", "/etc/pgha/haproxy.cfg"])
    if code != 0:
        raise HaproxyError(f"the new haproxy.cfg does not validate: {(err or out).strip()[:200]}")
    code, out, err = de.exec_in(name, ["kill", "-USR2", "1"], user="root")
    if code != 0:
        raise HaproxyError(f"reloading HAProxy failed: {(err or out).strip()[:200]}")
    want = set(spec.node_names())
    wait_for("HAProxy to serve the new server list", lambda: set(haproxy.backend_states(spec)["primary"]),
             lambda got: got == want, timeout=30, interval=0.3)


def _drop_member_key(spec: ClusterSpec, member: str) -> None:
    """Remove a stopped node's member key at once instead of waiting out its TTL."""
    etcd._exec_etcdctl(spec, ["del", f"/service/{spec.scope}/members/{member}"])  # noqa: SLF001


@flow(name="scale", description="Add or remove Patroni nodes; HAProxy reloaded without dropping sessions.")
def scale(spec: ClusterSpec = ClusterSpec(), nodes: int = 3) -> dict[str, Any]:  # noqa: B008
    if not 1 <= nodes <= 9:
        raise UsageError(f"nodes must be between 1 and 9, not {nodes}")
    with mutating(spec.scope, holder_name("scale")):
        return _scale(spec, nodes)


def _scale(spec: ClusterSpec, nodes: int) -> dict[str, Any]:
    log = get_run_logger()
    from flows import status as status_mod

    started = time.monotonic()
    # The containers say how many nodes there are (a hand-written spec file may be stale).
    found = sorted({ct.labels.get(de.LABEL_MEMBER, "") for ct in de.cluster_containers(spec.scope, "patroni")})
    if not found:
        raise StateError(f"cluster {spec.scope} has no Patroni node; run `pgha up` first")
    if sorted(found) != sorted(f"pg-{i}" for i in range(1, len(found) + 1)):
        raise StateError(f"cluster {spec.scope} has nodes {', '.join(found)}, not pg-1..pg-{len(found)}; "
                         "run `pgha up` with its spec first")
    if len(found) != spec.nodes:
        log.warning("the spec says %d nodes but %d run; scaling from %d", spec.nodes, len(found), len(found))
        spec = spec.model_copy(update={"nodes": len(found)})
    st = status_mod.collect(spec)
    if not st.healthy:
        raise StateError(f"cluster {spec.scope} is not healthy, refusing to scale: {st.problems[0]} (see `pgha status`)")
    view = patroni.cluster_view(spec)
    lead = view.leader()
    assert lead is not None
    sync = [m.name for m in view.members if m.role == patroni.MemberRole.SYNC_STANDBY]
    plan = plan_scale(spec.node_names(), nodes, lead.name, sync)
    secrets = load_or_create(secrets_file(spec.scope))
    subnet, _ = de.ensure_network(spec.scope, spec.network)
    ctx = Ctx(spec=spec, secrets=secrets, subnet=subnet, timeout=spec.upgrade.node_timeout_s)
    new_spec = spec.model_copy(update={"nodes": nodes})
    image = _image_of(spec.container(spec.node_names()[0]))
    if plan.add:
        for m in plan.add:
            de.ensure_volume(spec.scope, "patroni", m, new_spec.volume(m))
            planned = topology.patroni_node(new_spec, m, image, subnet, secrets)
            for fname, text in planned.files.items():
                write_private(config_dir(spec.scope, m) / fname, text)
            ctx.note(f"{m}: {de.ensure_container(planned.container).value} on {image}; Patroni clones it")
        patroni.wait_whole.fn(new_spec, timeout=spec.upgrade.node_timeout_s)
        reload_haproxy(new_spec)
        ctx.note(f"HAProxy reloaded with {nodes} servers")
    if plan.switchover_to:
        ctx.note(f"{lead.name} leads and is to be removed: switchover to {plan.switchover_to}")
        patroni.switchover(spec, lead.name, plan.switchover_to)
        wait_for(f"{plan.switchover_to} to lead", lambda: patroni.cluster_view(spec),
                 lambda v: bool(v.leader() and v.leader().name == plan.switchover_to  # type: ignore[union-attr]
                                and patroni.assess(v, spec).ok),
                 timeout=spec.upgrade.node_timeout_s, interval=0.5, describe=lambda v: patroni.assess(v, spec).reason)
    if plan.remove:
        for m in plan.remove:
            take_out(ctx, m, is_leader=False)
        reload_haproxy(new_spec)
        ctx.note(f"HAProxy reloaded with {nodes} servers")
        for m in plan.remove:
            name = spec.container(m)
            de.stop(name, timeout=60)
            de.find_container(name).remove(force=True)  # type: ignore[union-attr]
            try:
                de.client().volumes.get(spec.volume(m)).remove(force=True)
            except docker.errors.NotFound:
                pass
            shutil.rmtree(config_dir(spec.scope, m), ignore_errors=True)
            _drop_member_key(spec, m)
            ctx.note(f"{m} removed (container, data volume, member key)")
        patroni.wait_whole.fn(new_spec, timeout=spec.upgrade.node_timeout_s)
    _store_spec(new_spec)
    wait_for("the cluster to be healthy", lambda: status_mod.collect(new_spec), lambda s: s.healthy,
             timeout=spec.upgrade.node_timeout_s, interval=0.5, describe=lambda s: "; ".join(s.problems[:3]))
    log.info("scaled %s to %d nodes: %s", spec.scope, nodes, plan.describe())
    return {"plan": plan.describe(), "nodes": nodes, "events": ctx.events,
            "elapsed_s": round(time.monotonic() - started, 1)}


# ---- etcd member replacement ----


def _etcdctl(spec: ClusterSpec, via: str, endpoints: list[str], args: list[str]) -> str:
    eps = ",".join(f"http://{spec.container(m)}:{layout.ETCD_CLIENT_PORT}" for m in endpoints)
    code, out, err = de.exec_in(spec.container(via), ["etcdctl", f"--endpoints={eps}", "--command-timeout=5s", *args],
                                timeout=20)
    if code != 0:
        raise EtcdError(f"etcdctl {args[0]} {args[1] if len(args) > 1 else ''}: {(err or out).strip()[:200]}")
    return out


def _member_ids(spec: ClusterSpec, via: str, endpoints: list[str]) -> dict[str, int]:
    """etcd member IDs by member name. A member added but never started has no name yet
    (an interrupted replacement): it is recognised by its peer URL."""
    rows = json.loads(_etcdctl(spec, via, endpoints, ["member", "list", "-w", "json"]))
    by_peer = {f"http://{spec.container(m)}:{layout.ETCD_PEER_PORT}": m for m in spec.etcd_names()}
    out: dict[str, int] = {}
    for m in rows.get("members", []):
        name = str(m.get("name") or "") or next((by_peer[u] for u in m.get("peerURLs", []) if u in by_peer), "")
        if name:
            out[name] = int(m["ID"])
    return out


def _healthy_by_member(spec: ClusterSpec) -> dict[str, bool]:
    rows = etcd.health(spec)
    out: dict[str, bool] = {}
    for m in spec.etcd_names():
        host = spec.container(m)
        out[m] = any(host in r.endpoint and r.healthy for r in rows)
    return out


@flow(name="etcd-replace", description="Replace one etcd member, keeping quorum throughout.")
def etcd_replace(spec: ClusterSpec = ClusterSpec(), member: str = "etcd-1") -> dict[str, Any]:  # noqa: B008
    with mutating(spec.scope, holder_name("etcd-replace")):
        return _etcd_replace(spec, member)


def _etcd_replace(spec: ClusterSpec, member: str) -> dict[str, Any]:
    log = get_run_logger()
    started = time.monotonic()
    members = spec.etcd_names()
    healthy = _healthy_by_member(spec)
    if (why := etcd_replace_refusal(members, healthy, member)) is not None:
        raise StateError(f"etcd replace refused: {why}")
    others = [m for m in members if m != member]
    via = others[0]
    ids = _member_ids(spec, via, others)
    name = spec.container(member)
    # An interrupted replacement may have removed the container already: any member's image will do.
    image = _image_of(name) if de.find_container(name) is not None else _image_of(spec.container(via))
    events: list[str] = []

    def note(text: str) -> None:
        events.append(f"{time.strftime('%H:%M:%S')} {text}")
        log.info(text)

    old_id = ids.get(member)
    if old_id is not None and etcd.leader_member(spec) == member:
        # Removing the raft leader forces an election (a second or so without writes): hand
        # the leadership over first, which etcd does at once and without a gap.
        to = others[0]
        _etcdctl(spec, via, [member], ["move-leader", f"{ids[to]:x}"])
        wait_for(f"etcd leadership to move to {to}", lambda: etcd.leader_member(spec), lambda lead: lead != member,
                 timeout=30, interval=0.3)
        note(f"{member} led etcd; leadership moved to {to} first")
    if old_id is not None:
        _etcdctl(spec, via, others, ["member", "remove", f"{old_id:x}"])
        note(f"{member} (id {old_id:x}) removed from the raft group; {len(others)} members keep quorum")
    ct = de.find_container(name)
    if ct is not None:
        ct.remove(force=True)
    try:
        de.client().volumes.get(spec.volume(member)).remove(force=True)
    except docker.errors.NotFound:
        pass
    de.ensure_volume(spec.scope, "etcd", member, spec.volume(member))
    peer = f"http://{name}:{layout.ETCD_PEER_PORT}"

    def add() -> bool:
        # etcd refuses a new voting member until its leader has seen a quorum of members
        # connected for a few seconds (right after the removal, or a leader change, it has not):
        # the refusal changes nothing, so it is safe to ask again. A member already added (an
        # earlier attempt whose answer was lost) is recognised by its peer URL.
        if member not in _member_ids(spec, via, others):
            _etcdctl(spec, via, others, ["member", "add", member, f"--peer-urls={peer}"])
        return True

    wait_for(f"etcd to accept {member} as a new member", add, bool, timeout=60, interval=1)
    initial = ",".join(f"{m}=http://{spec.container(m)}:{layout.ETCD_PEER_PORT}" for m in members)
    note(f"{member} added back as a new member (fresh data)")
    planned = topology.etcd_member(spec, member, image)
    cmd = [a for a in planned.container.command
           if not a.startswith(("--initial-cluster=", "--initial-cluster-state="))]
    cmd += [f"--initial-cluster={initial}", "--initial-cluster-state=existing"]
    # The label keeps the rendered definition's hash: with a data dir present etcd ignores the
    # initial-cluster flags, so the rendered command is equivalent and `pgha up` leaves it alone.
    de.ensure_container(replace(planned.container, command=cmd))
    etcd.wait_healthy.fn(spec, timeout=90)
    new_id = _member_ids(spec, via, members).get(member)
    note(f"{member} healthy again as member {new_id:x}" if new_id is not None else f"{member} healthy again")
    return {"member": member, "old_id": f"{old_id:x}" if old_id is not None else "", "events": events,
            "new_id": f"{new_id:x}" if new_id is not None else "", "elapsed_s": round(time.monotonic() - started, 1)}
