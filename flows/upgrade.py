"""upgrade: rolling minor upgrade of the Patroni nodes to another image, without downtime.

Replicas first, one at a time: out of the R/O pool, failover candidacy and synchronous
replication (Patroni tags), CHECKPOINT, recreated on the target image with the same data
volume, back once it streams with lag ~0. Then a switchover to an upgraded replica and the
old leader the same way. A node that does not come back on the target image is put back on
its old image, every node this run upgraded is rolled back too, and the flow fails loudly
with the cluster healthy on the old version. A re-run after an interruption continues from
the nodes still on the old image (never upgrading a node twice).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from flows.steps import preflight_once
from flows.steps.cluster import store_spec
from flows.steps.nodes import finish_leftovers
from flows.steps.ops import current, mutating_flow, note
from stack.cluster import MemberRole
from stack.errors import PghaError, StateError, UsageError
from stack.results import UpgradeResult, UpgradeRow
from stack.rolling import (
    NodeFacts,
    Step,
    StepKind,
    UpgradeFacts,
    pg_major_of,
    plan_upgrade,
    precheck,
    switchover_candidate,
    version_text,
)
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_hosts, docker_images, patroni, postgres
from tasks.cluster_health import cluster_status, wait_healthy
from tasks.cluster_resources import ensure_image_on_hosts
from tasks.host.state import cluster_dir, write_private
from tasks.rolling import NodeCtx, node_ctx, recreate, roll_node, wait_caught_up
from tasks.switchover import switchover


class UpgradeFailed(PghaError):
    """A node did not come back healthy on the target image; the cluster was rolled back."""


def pending_file(spec: ClusterSpec) -> Path:
    return cluster_dir(spec.scope) / "upgrade-pending.json"


def upgrade_target(spec: ClusterSpec) -> str:
    """The image a deployment run upgrades to (it takes no image): the interrupted upgrade's target
    when one is pending on this host, else pgha's own build of the spec's image with the suite's
    security updates, built if missing (what `pgha upgrade --updates security` rolls out)."""
    pf = pending_file(spec)
    if pf.exists() and (target := str(json.loads(pf.read_text()).get("target") or "")):
        return target
    from tasks.images import ensure_image

    target, log = ensure_image(spec.model_copy(update={"image": None}), "security")
    for line in log:
        get_run_logger().info(line)
    return target


def node_images(spec: ClusterSpec) -> dict[str, str]:
    """The image tag each Patroni node's container was created from ('' when missing)."""
    eng = docker_hosts.engines(spec)
    return {m: eng.of(m).image_of(spec.container(m)) for m in spec.node_names()}


def node_facts(spec: ClusterSpec) -> list[NodeFacts]:
    view = patroni.cluster_view(spec)
    imgs = node_images(spec)
    out = []
    for m in spec.node_names():
        me = view.member(m)
        out.append(NodeFacts(name=m, image=imgs.get(m, ""), is_leader=bool(me and me.is_leader),
                             is_sync=bool(me and me.role == MemberRole.SYNC_STANDBY)))
    return out


def versions(spec: ClusterSpec) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for m in spec.node_names():
        try:
            out[m] = patroni.server_version(spec, m)
        except PghaError:
            out[m] = None
    return out


def gather_facts(spec: ClusterSpec, target: str) -> UpgradeFacts:
    """What the pre-check judges: health, lag, the oldest transaction, the target image."""
    # Where `pgha images build` puts it: this machine's engine (over hosts, the flow loads it into each).
    env = docker_images.image_env(docker_hosts.local_engine(), target)
    st = cluster_status(spec)
    lag: int | None = 0
    paused = False
    xact = 0.0
    try:
        view = patroni.cluster_view(spec)
        paused = view.paused
        lag = view.max_replica_lag()
        lead = view.leader()
        if lead is not None:
            xact = postgres.oldest_transaction_s(spec, lead.name)
    except PghaError:
        pass
    return UpgradeFacts(current_major=spec.postgres_version, target_image=target, target_exists=env is not None,
                        target_major=pg_major_of(env or []), healthy=st.healthy,
                        problem=st.problems[0] if st.problems else "", max_lag_bytes=lag, oldest_transaction_s=xact,
                        paused=paused)


def upgrade_preflight(spec: ClusterSpec, target: str) -> UpgradeFacts:
    """Refuse an upgrade the pre-check says no to (StateError, one line); the facts it judged.

    With an interrupted upgrade pending, the flow finishes that node first and judges after.
    """
    facts = gather_facts(spec, target)
    if (why := precheck(facts, spec.upgrade.max_lag_bytes, spec.upgrade.max_transaction_age_s)) is not None:
        raise StateError(f"upgrade refused: {why}")
    return facts


def with_node_image(spec: ClusterSpec, image: str) -> ClusterSpec:
    return spec.model_copy(update={"upgrade": spec.upgrade.model_copy(update={"node_image": image})})


def _resume_in_flight(ctx: NodeCtx, pending: dict[str, Any]) -> None:
    """A run killed between stopping a node and its recreation left it stopped or missing: finish it."""
    member = str(pending.get("member") or "")
    if not member or member not in ctx.spec.node_names():
        return
    if not docker_hosts.engines(ctx.spec).of(member).running(ctx.spec.container(member)):
        image = str(pending.get("image") or pending["target"])
        note(f"resuming: {member} was left stopped by an interrupted run; recreating it on {image}")
        recreate(ctx, member, image, as_leader=False)
        return
    note(f"resuming: waiting for {member}, recreated by the interrupted run, to catch up")
    wait_caught_up(ctx, member, 0, as_leader=True)


def _rollback(ctx: NodeCtx, previous: dict[str, str]) -> list[str]:
    """Every node this run moved to the target goes back to its previous image (replicas first)."""
    spec = ctx.spec
    eng = docker_hosts.engines(spec)
    done: list[str] = []
    for m in spec.node_names():
        # A failure between stopping a node and recreating it leaves it stopped on its old image.
        if not eng.of(m).running(spec.container(m)) and node_images(spec).get(m) == previous.get(m):
            note(f"rollback: {m} was left stopped; starting it on {previous[m]}")
            recreate(ctx, m, previous[m], as_leader=True)
            done.append(m)
    moved = [f for f in node_facts(spec) if f.image != previous.get(f.name, f.image)]
    for f in sorted(moved, key=lambda f: f.is_leader):
        old = previous[f.name]
        if f.is_leader and spec.nodes > 1:
            facts = node_facts(spec)
            back = [x.name for x in facts if not x.is_leader and x.image == old]
            if back:
                lead_now = next(x.name for x in facts if x.is_leader)
                cand = switchover_candidate(facts, old, spec.timing.synchronous_mode)
                if cand:
                    note(f"rollback: switchover {lead_now} -> {cand} (on {old})")
                    switchover(spec, lead_now, cand, ctx.timeout)
        note(f"rollback: {f.name} back to {old}")
        roll_node(ctx, f.name, old, as_leader=f.is_leader, rescue=True, note=note)
        done.append(f.name)
    finish_leftovers(ctx)  # a node that failed while being taken out still has its tags
    return done


def _run_step(ctx: NodeCtx, step: Step, target: str, state: dict[str, Any], pf: Path) -> None:
    spec = ctx.spec
    if step.kind == StepKind.SWITCHOVER:
        lead = patroni.cluster_view(spec).leader()
        if lead is None or lead.name != step.member:
            note(f"{step.member} no longer leads; no switchover needed")
            return
        sync = spec.timing.synchronous_mode and spec.nodes > 1
        cand = wait_for("an upgraded replica to hand the leadership to",
                        lambda: switchover_candidate(node_facts(spec), target, sync) or "", bool, timeout=30, interval=0.5)
        switchover(spec, step.member, cand, ctx.timeout)
        note(f"switched over {step.member} -> {cand}")
        return
    me = {f.name: f for f in node_facts(spec)}[step.member]
    if me.image == target:
        note(f"{step.member} is already on {target}")
        return
    state["member"], state["image"] = step.member, target
    write_private(pf, json.dumps(state))
    roll_node(ctx, step.member, target, as_leader=me.is_leader, note=note)
    state["member"] = ""
    write_private(pf, json.dumps(state))
    note(f"{step.member} on {target}: PostgreSQL {version_text(patroni.server_version(spec, step.member))}")


@flow(name="upgrade", description="Rolling minor upgrade of the Patroni nodes to another image, without downtime.")
@mutating_flow("upgrade")
def upgrade(spec: ClusterSpec = ClusterSpec(), image: str = "", node_timeout_s: int | None = None) -> UpgradeResult:  # noqa: B008
    """Upgrade every Patroni node to `image`; returns the plan, versions before/after and events."""
    if not image:
        raise UsageError("give the target image (--image TAG)")
    target, timeout = image, float(node_timeout_s or spec.upgrade.node_timeout_s)
    ctx = node_ctx(spec, timeout)
    pf = pending_file(spec)
    pending: dict[str, Any] = json.loads(pf.read_text()) if pf.exists() else {}
    if pending and pending.get("target") != target:
        raise StateError(f"an interrupted upgrade to {pending.get('target')} is pending; run it again with "
                         f"--image {pending.get('target')} to finish it first")
    if pending and docker_images.image_env(docker_hosts.local_engine(), target) is not None:
        if spec.hosts is not None:
            ensure_image_on_hosts(spec, target)
        _resume_in_flight(ctx, pending)
        finish_leftovers(ctx)
        # Right after a node is put back, Patroni may take a loop to pick a synchronous
        # standby again: let the cluster settle before the pre-check judges it.
        try:
            wait_healthy(spec, min(timeout, 60))
        except PghaError:
            pass  # the pre-check below names what is wrong
    if pending:
        upgrade_preflight(spec, target)  # judged after the resumed node came back
    else:
        preflight_once(upgrade_preflight, spec, target)

    if spec.hosts is not None:
        ensure_image_on_hosts(spec, target)  # many hosts: the target image loaded where a host lacks it
    nodes = node_facts(spec)
    previous: dict[str, str] = dict(pending.get("previous") or {}) or {n.name: n.image for n in nodes}
    before = versions(spec)
    plan = plan_upgrade(nodes, target, spec.upgrade.primary.value)
    if plan.already:
        note(f"already on {target} (not touched again): {', '.join(plan.already)}")
    progress_id = create_progress_artifact(0.0, key=f"{spec.scope}-upgrade-progress",
                                           description=f"rolling upgrade to {target}")
    state = {"target": target, "previous": previous, "member": "", "image": target}
    write_private(pf, json.dumps(state))
    failed: str | None = None
    try:
        for i, step in enumerate(plan.steps):
            note(f"step {i + 1}/{len(plan.steps)}: {step.describe()}")
            _run_step(ctx, step, target, state, pf)
            update_progress_artifact(progress_id, 100.0 * (i + 1) / len(plan.steps), description=f"{step.describe()}: done")
    except PghaError as exc:
        failed = str(exc).splitlines()[0]
        note(f"FAILED: {failed}")
        try:
            rolled = _rollback(ctx, previous)
            wait_healthy(spec, timeout)
            pf.unlink(missing_ok=True)
            note(f"rolled back {', '.join(rolled) or 'nothing'}; cluster healthy")
        except PghaError as exc2:
            raise UpgradeFailed(f"upgrade to {target} failed ({failed}) and the rollback failed too: "
                                f"{str(exc2).splitlines()[0]}; see `pgha status`") from None
    after = versions(spec)
    imgs = node_images(spec)
    rows = [UpgradeRow(node=m, image_before=previous.get(m, ""), version_before=version_text(before.get(m)),
                       version_after=version_text(after.get(m)), image_after=imgs.get(m, "")) for m in spec.node_names()]
    create_table_artifact(key=f"{spec.scope}-upgrade-versions", table=[r.to_json() for r in rows],
                          description=f"upgrade to {target}: {'FAILED, rolled back' if failed else 'done'}")
    if failed:
        raise UpgradeFailed(f"upgrade to {target} failed and was rolled back (cluster healthy on the old "
                            f"image): {failed}")
    wait_healthy(spec, timeout)
    store_spec(with_node_image(spec, target))
    pf.unlink(missing_ok=True)
    op = current()
    return UpgradeResult(target=target, steps=[s.describe() for s in plan.steps], already=plan.already,
                         before=before, after=after, rows=rows, elapsed_s=op.elapsed(), events=op.events)
