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
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import docker.errors
import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from flows import status as status_mod
from stack.errors import PghaError, StateError, UsageError
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
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_engine as de
from tasks import haproxy, patroni
from tasks._prefect import ONCE, READ_ONLY
from tasks.host.lock import holder_name, mutating
from tasks.host.secrets import load_or_create
from tasks.host.state import cluster_dir, secrets_file, write_private


class UpgradeFailed(PghaError):
    """A node did not come back healthy on the target image; the cluster was rolled back."""


@dataclass
class Ctx:
    """What every step needs: the spec, passwords, the network's subnet and a log of events."""

    spec: ClusterSpec
    secrets: Secrets
    subnet: str
    timeout: float
    events: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")
        get_run_logger().info(text)


def pending_file(spec: ClusterSpec) -> Path:
    return cluster_dir(spec.scope) / "upgrade-pending.json"


def node_images(spec: ClusterSpec) -> dict[str, str]:
    """The image tag each Patroni node's container was created from ('' when missing)."""
    out: dict[str, str] = {}
    for m in spec.node_names():
        ct = de.find_container(spec.container(m))
        out[m] = str(ct.attrs.get("Config", {}).get("Image", "")) if ct is not None else ""
    return out


def image_major(tag: str) -> tuple[bool, int | None]:
    """(exists, PG_MAJOR) of a local image."""
    try:
        img = de.client().images.get(tag)
    except docker.errors.ImageNotFound:
        return False, None
    except docker.errors.APIError as exc:
        raise StateError(f"cannot inspect image {tag}: {exc.explanation or exc}") from None
    return True, pg_major_of(list(img.attrs.get("Config", {}).get("Env") or []))


def node_facts(spec: ClusterSpec) -> list[NodeFacts]:
    view = patroni.cluster_view(spec)
    roles = {m.name: m for m in view.members}
    imgs = node_images(spec)
    return [NodeFacts(name=m, image=imgs.get(m, ""), is_leader=bool(roles.get(m) and roles[m].is_leader),
                      is_sync=bool(roles.get(m) and roles[m].role == patroni.MemberRole.SYNC_STANDBY))
            for m in spec.node_names()]


def versions(spec: ClusterSpec) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for m in spec.node_names():
        try:
            out[m] = patroni.server_version(spec, m)
        except PghaError:
            out[m] = None
    return out


# ---- the steps (also used by `pgha scale` and `pgha config set`) ----


def take_out(ctx: Ctx, member: str, is_leader: bool) -> None:
    """Tags nofailover/noloadbalance/nosync, then wait until Patroni and HAProxy act on them."""
    spec = ctx.spec
    patroni.write_and_reload(spec, member, patroni.patroni_text(spec, member, ctx.subnet, ctx.secrets, out_of_service=True))
    wait_for(f"{member} to run with its out-of-service tags", lambda: patroni.member_tags(spec, member),
             patroni.out_of_service, timeout=30, interval=0.3)
    if is_leader or spec.nodes == 1:
        return

    def where() -> tuple[str, str]:
        role = next((m.role.value for m in patroni.cluster_view(spec).members if m.name == member), "gone")
        return role, haproxy.backend_states(spec)["replicas"].get(member, "")

    wait_for(f"{member} out of synchronous replication and the R/O pool", where,
             lambda w: w[0] != patroni.MemberRole.SYNC_STANDBY.value and not w[1].startswith("UP"),
             timeout=30, interval=0.3, describe=lambda w: f"role {w[0]}, HAProxy {w[1] or '?'}")


def put_back(ctx: Ctx, member: str) -> None:
    """Clear the tags; wait until the node serves reads again (when it is a replica)."""
    spec = ctx.spec
    patroni.write_and_reload(spec, member, patroni.patroni_text(spec, member, ctx.subnet, ctx.secrets, out_of_service=False))
    wait_for(f"{member} to run without out-of-service tags", lambda: patroni.member_tags(spec, member),
             lambda t: not any(t.get(k) for k in patroni.OUT_TAGS), timeout=30, interval=0.3)
    view = patroni.cluster_view(spec)
    lead = view.leader()
    if spec.nodes > 1 and lead is not None and lead.name != member:
        wait_for(f"HAProxy to route reads to {member} again",
                 lambda: haproxy.backend_states(spec)["replicas"].get(member, ""),
                 lambda s: s.startswith("UP"), timeout=30, interval=0.3)


def caught_up(spec: ClusterSpec, member: str, since_unix: float, max_lag: int, as_leader: bool) -> str:
    """'' when the node restarted after `since_unix` and streams with lag <= max_lag (or leads); else why not."""
    st = patroni.member_status(spec, member)
    if not patroni.back_since(st, since_unix):
        return f"PostgreSQL {st.get('state')}, started {st.get('postmaster_start_time')}"
    view = patroni.cluster_view(spec)
    me = next((m for m in view.members if m.name == member), None)
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


def recreate(ctx: Ctx, member: str, image: str, as_leader: bool) -> None:
    """Stop gracefully, recreate on `image` (same data volume), wait until it is caught up.

    The new container starts with the out-of-service tags (its host patroni.yml still has
    them), so neither HAProxy nor Patroni use it before it has caught up.
    """
    spec = ctx.spec
    name = spec.container(member)
    planned = patroni.planned_node(spec, member, image, ctx.subnet, ctx.secrets)
    since = time.time()
    if de.find_container(name) is not None:
        de.stop(name, timeout=60)
    de.ensure_container(replace(planned.container, image=image))
    wait_for(f"{member} on {image} to stream with lag <= {spec.upgrade.caught_up_lag_bytes} bytes",
             lambda: caught_up(spec, member, since, spec.upgrade.caught_up_lag_bytes, as_leader),
             lambda why: why == "", timeout=ctx.timeout, interval=0.5, describe=lambda why: why,
             logs=lambda: de.logs(name, tail=12))


@task(name="roll-node", **ONCE)
def roll_node(ctx: Ctx, member: str, image: str, as_leader: bool = False, rescue: bool = False) -> None:
    """One node to `image`: take out, CHECKPOINT, recreate, wait caught up, put back.

    `rescue`: the node may be broken (a rollback); taking it out may fail and is not required.
    """
    try:
        take_out(ctx, member, as_leader)
    except PghaError as exc:
        if not rescue:
            raise
        ctx.note(f"{member}: could not take it out cleanly ({str(exc).splitlines()[0]}); recreating anyway")
    try:
        patroni.checkpoint(ctx.spec, member)
    except PghaError as exc:  # a node that cannot checkpoint still restarts; it replays more WAL
        ctx.note(f"{member}: CHECKPOINT failed ({exc}); recreating anyway")
    recreate(ctx, member, image, as_leader)
    put_back(ctx, member)


@task(name="switchover", **ONCE)
def switch(ctx: Ctx, leader: str, target: str) -> str:
    """Hand the leadership to an upgraded replica and wait until the old leader replicates."""
    spec = ctx.spec
    cand = wait_for("an upgraded replica to hand the leadership to",
                    lambda: switchover_candidate(node_facts(spec), target) or "", bool, timeout=30, interval=0.5)
    patroni.switchover(spec, leader, cand)
    wait_for(f"{cand} to lead and {leader} to replicate",
             lambda: patroni.cluster_view(spec), lambda v: bool(v.leader() and v.leader().name == cand  # type: ignore[union-attr]
                                                                and patroni.assess(v, spec).ok),
             timeout=ctx.timeout, interval=0.5, describe=lambda v: patroni.assess(v, spec).reason)
    return cand


# ---- the flow ----


def _store_spec(spec: ClusterSpec) -> None:
    write_private(cluster_dir(spec.scope) / "spec.yaml", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))


def with_node_image(spec: ClusterSpec, image: str) -> ClusterSpec:
    return spec.model_copy(update={"upgrade": spec.upgrade.model_copy(update={"node_image": image})})


def gather_facts(spec: ClusterSpec, target: str) -> UpgradeFacts:
    exists, major = image_major(target)
    st = status_mod.collect(spec)
    lag: int | None = 0
    paused = False
    xact = 0.0
    try:
        view = patroni.cluster_view(spec)
        paused = view.paused
        lags = [m.lag for m in view.members if not m.is_leader]
        lag = None if any(x is None for x in lags) else max([0, *[x for x in lags if x is not None]])
        lead = view.leader()
        if lead is not None:
            xact = patroni.oldest_transaction_s(spec, lead.name)
    except PghaError:
        pass
    return UpgradeFacts(current_major=spec.postgres_version, target_image=target, target_exists=exists,
                        target_major=major, healthy=st.healthy, problem=st.problems[0] if st.problems else "",
                        max_lag_bytes=lag, oldest_transaction_s=xact, paused=paused)


def _resume_in_flight(ctx: Ctx, pending: dict[str, Any]) -> None:
    """A run killed between stopping a node and its recreation left it stopped or missing: finish it."""
    member = str(pending.get("member") or "")
    if not member or member not in ctx.spec.node_names():
        return
    name = ctx.spec.container(member)
    spec = ctx.spec
    if not de.running(name):
        image = str(pending.get("image") or pending["target"])
        ctx.note(f"resuming: {member} was left stopped by an interrupted run; recreating it on {image}")
        recreate(ctx, member, image, as_leader=False)
        return
    ctx.note(f"resuming: waiting for {member}, recreated by the interrupted run, to catch up")
    wait_for(f"{member} to stream with lag <= {spec.upgrade.caught_up_lag_bytes} bytes",
             lambda: caught_up(spec, member, 0, spec.upgrade.caught_up_lag_bytes, as_leader=True),
             lambda why: why == "", timeout=ctx.timeout, interval=0.5, describe=lambda why: why,
             logs=lambda: de.logs(name, tail=12))


def _finish_leftovers(ctx: Ctx) -> None:
    """Nodes left with out-of-service tags by an interrupted run are put back."""
    for m in ctx.spec.node_names():
        try:
            tags = patroni.member_tags(ctx.spec, m)
        except PghaError:
            continue
        if any(tags.get(k) for k in patroni.OUT_TAGS):
            ctx.note(f"resuming: {m} still had its out-of-service tags; putting it back")
            put_back(ctx, m)


def _rollback(ctx: Ctx, previous: dict[str, str], target: str) -> list[str]:
    """Every node this run moved to `target` goes back to its previous image (replicas first)."""
    spec = ctx.spec
    done: list[str] = []
    for m in spec.node_names():
        # A failure between stopping a node and recreating it leaves it stopped on its old image.
        if not de.running(spec.container(m)) and node_images(spec).get(m) == previous.get(m):
            ctx.note(f"rollback: {m} was left stopped; starting it on {previous[m]}")
            recreate(ctx, m, previous[m], as_leader=True)
            done.append(m)
    facts = node_facts(spec)
    moved = [f for f in facts if f.image != previous.get(f.name, f.image)]
    for f in sorted(moved, key=lambda f: f.is_leader):
        old = previous[f.name]
        if f.is_leader and spec.nodes > 1:
            back = [x.name for x in node_facts(spec) if not x.is_leader and x.image == old]
            if back:
                lead_now = next(x.name for x in node_facts(spec) if x.is_leader)
                ctx.note(f"rollback: switchover {lead_now} -> a replica on {old}")
                switch.fn(ctx, lead_now, old)
        ctx.note(f"rollback: {f.name} back to {old}")
        roll_node.fn(ctx, f.name, old, as_leader=f.is_leader, rescue=True)
        done.append(f.name)
    _finish_leftovers(ctx)  # a node that failed while being taken out still has its tags
    return done


@flow(name="upgrade", description="Rolling minor upgrade of the Patroni nodes to another image, without downtime.")
def upgrade(spec: ClusterSpec = ClusterSpec(), image: str = "", node_timeout_s: int | None = None) -> dict[str, Any]:  # noqa: B008
    """Upgrade every Patroni node to `image`; returns the plan, versions before/after and events."""
    if not image:
        raise UsageError("give the target image (--image TAG)")
    with mutating(spec.scope, holder_name("upgrade")):
        return _upgrade(spec, image, node_timeout_s or spec.upgrade.node_timeout_s)


def _upgrade(spec: ClusterSpec, target: str, timeout: float) -> dict[str, Any]:
    log = get_run_logger()
    de.client()
    secrets = load_or_create(secrets_file(spec.scope))
    subnet, _ = de.ensure_network(spec.scope, spec.network)
    ctx = Ctx(spec=spec, secrets=secrets, subnet=subnet, timeout=timeout)
    pf = pending_file(spec)
    pending: dict[str, Any] = json.loads(pf.read_text()) if pf.exists() else {}
    if pending and pending.get("target") != target:
        raise StateError(f"an interrupted upgrade to {pending.get('target')} is pending; run it again with "
                         f"--image {pending.get('target')} to finish it first")
    exists, _ = image_major(target)
    if pending and exists:
        _resume_in_flight(ctx, pending)
        _finish_leftovers(ctx)
        # Right after a node is put back, Patroni may take a loop to pick a synchronous
        # standby again: let the cluster settle before the pre-check judges it.
        try:
            _wait_healthy.fn(spec, min(timeout, 60))
        except PghaError:
            pass  # the pre-check below names what is wrong
    facts = gather_facts(spec, target)
    if (refusal := precheck(facts, spec.upgrade.max_lag_bytes, spec.upgrade.max_transaction_age_s)) is not None:
        raise StateError(f"upgrade refused: {refusal}")

    nodes = node_facts(spec)
    previous: dict[str, str] = dict(pending.get("previous") or {}) or {n.name: n.image for n in nodes}
    before = versions(spec)
    plan = plan_upgrade(nodes, target, spec.upgrade.primary.value)
    if plan.already:
        ctx.note(f"already on {target} (not touched again): {', '.join(plan.already)}")
    started = time.monotonic()
    progress_id = create_progress_artifact(0.0, key=f"{spec.scope}-upgrade-progress",
                                           description=f"rolling upgrade to {target}")
    state = {"target": target, "previous": previous, "member": "", "image": target}
    write_private(pf, json.dumps(state))
    failed: str | None = None
    try:
        for i, step in enumerate(plan.steps):
            ctx.note(f"step {i + 1}/{len(plan.steps)}: {step.describe()}")
            _run_step(ctx, step, target, state, pf)
            update_progress_artifact(progress_id, 100.0 * (i + 1) / len(plan.steps),
                                     description=f"{step.describe()}: done")
    except PghaError as exc:
        failed = f"{str(exc).splitlines()[0]}"
        ctx.note(f"FAILED: {failed}")
        state["member"], state["image"] = "", target
        try:
            rolled = _rollback(ctx, previous, target)
            status_mod_ok = _wait_healthy(spec, timeout)
            pf.unlink(missing_ok=True)
            ctx.note(f"rolled back {', '.join(rolled) or 'nothing'}; cluster healthy: {status_mod_ok}")
        except PghaError as exc2:
            raise UpgradeFailed(f"upgrade to {target} failed ({failed}) and the rollback failed too: "
                                f"{str(exc2).splitlines()[0]}; see `pgha status`") from None
    after = versions(spec)
    rows = [{"node": m, "image before": previous.get(m, ""), "version before": version_text(before.get(m)),
             "version after": version_text(after.get(m)), "image after": node_images(spec).get(m, "")}
            for m in spec.node_names()]
    create_table_artifact(key=f"{spec.scope}-upgrade-versions", table=rows,
                          description=f"upgrade to {target}: {'FAILED, rolled back' if failed else 'done'}")
    if failed:
        raise UpgradeFailed(f"upgrade to {target} failed and was rolled back (cluster healthy on the old "
                            f"image): {failed}")
    _wait_healthy(spec, timeout)
    _store_spec(with_node_image(spec, target))
    pf.unlink(missing_ok=True)
    elapsed = round(time.monotonic() - started, 1)
    log.info("upgrade to %s done in %ss", target, elapsed)
    return {"target": target, "steps": [s.describe() for s in plan.steps], "already": plan.already,
            "before": before, "after": after, "rows": rows, "elapsed_s": elapsed, "events": ctx.events}


def _run_step(ctx: Ctx, step: Step, target: str, state: dict[str, Any], pf: Path) -> None:
    spec = ctx.spec
    if step.kind == StepKind.SWITCHOVER:
        lead = patroni.cluster_view(spec).leader()
        if lead is None or lead.name != step.member:
            ctx.note(f"{step.member} no longer leads; no switchover needed")
            return
        cand = switch(ctx, step.member, target)
        ctx.note(f"switched over {step.member} -> {cand}")
        return
    facts = {f.name: f for f in node_facts(spec)}
    me = facts[step.member]
    if me.image == target:
        ctx.note(f"{step.member} is already on {target}")
        return
    state["member"], state["image"] = step.member, target
    write_private(pf, json.dumps(state))
    roll_node(ctx, step.member, target, as_leader=me.is_leader)
    state["member"] = ""
    write_private(pf, json.dumps(state))
    ctx.note(f"{step.member} on {target}: PostgreSQL {version_text(patroni.server_version(spec, step.member))}")


@task(name="wait-healthy", **READ_ONLY)
def _wait_healthy(spec: ClusterSpec, timeout: float) -> bool:
    wait_for("the cluster to be healthy", lambda: status_mod.collect(spec), lambda s: s.healthy,
             timeout=timeout, interval=0.5, describe=lambda s: "; ".join(s.problems[:3]))
    return True
