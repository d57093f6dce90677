"""restore: point-in-time restore of a cluster's backups, into a NEW cluster or in place.

Into a new scope (the safe default): refuse bad input first (target outside the recoverable
range, a target scope that exists, ports in use); then restore into the new scope's pg-1
volume inside a one-shot container (own network, source repository read-only), let
PostgreSQL replay to the target and promote, and hand the data directory to Patroni: the new
cluster is bootstrapped with one node (Patroni adopts the existing data directory), then
grown to the spec's size so the other nodes clone from it. The restored databases contain
the source's roles, so the new scope gets a copy of the source's password file.

In place (`--in-place --yes`): the same refusals for the time and the base set; then, while
the cluster still serves, the backup is restored BESIDE pg-1's live data directory (in its
volume, `pgdata.restored`) and PostgreSQL replays it to the target in a one-shot container.
A restore that cannot reach its target (missing WAL, a broken set) fails here: the copy is
dropped and the cluster, never touched, keeps serving — one line, exit 4. Only then, under the
cluster's lock: the leadership moves to pg-1 (so pg-1's data is the newest to fall back to),
the Patroni and HAProxy containers are removed, the scope's Patroni keys deleted, every node's
data directory renamed to `pgdata.pre-restore` (one generation) and the restored copy renamed
into pg-1's place; the cluster is bootstrapped with one node and grown (the replicas
re-clone). When the rebuilt cluster is healthy the kept directories are removed; when it is
not, the swap is undone and the old cluster started again as it was (its data intact). Everything
written after the target time is discarded. The repository is only ever read.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from prefect import flow, get_run_logger

from flows.steps import preflight_once
from flows.steps.approval import require_approval
from flows.steps.converge import bootstrap_preflight, converge
from flows.steps.deployment import check_restore_target
from flows.steps.ops import mutating_flow
from stack import backup as bk
from stack import backup_decisions as bkd
from stack import backup_info as bki
from stack.errors import PghaError, StateError, UsageError
from stack.results import ClusterStatus, RestoreResult
from stack.spec import ClusterSpec, parse_spec
from tasks import patroni
from tasks import pgbackrest as pbr
from tasks import pgbackrest_restore as pr
from tasks.docker_hosts import engines
from tasks.host.state import secrets_file
from tasks.switchover import switchover

PORT_OFFSET = 10  # --into SCOPE without a spec file: the source's ports + 10


class RestoreFailed(PghaError):
    """An in-place restore failed; the message says in which state it left the cluster."""

    exit_code = 4


def target_spec(source: ClusterSpec, into: str | None, given: ClusterSpec | None) -> ClusterSpec:
    """The new cluster's spec: the given file, else the source's with another scope and ports."""
    if given is not None:
        if into and into != given.scope:
            raise UsageError(f"--into {into} contradicts the scope {given.scope} of --into-spec")
        new = given
    else:
        data = source.model_dump(mode="json")
        data["scope"] = into
        data["ports"] = {k: int(v) + PORT_OFFSET for k, v in data["ports"].items()}
        new = parse_spec(data, f"(derived from {source.scope} for --into)")
    if new.scope == source.scope:
        raise UsageError("--into must name another scope; restoring in place needs --in-place --yes")
    if problem := bkd.shared_hosts_problem(source, new):
        raise UsageError(problem)
    return new


def discarded_note(spec: ClusterSpec, when: dt.datetime) -> str:
    return (f"in-place restore of {spec.scope}: everything written after {when.isoformat(' ')} is discarded; "
            "replicas are re-cloned from the restored node")


def _cause(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def untouched_message(spec: ClusterSpec, exc: BaseException) -> str:
    """The one line of a restore that failed before the cluster was touched."""
    return (f"in-place restore of {spec.scope} failed before the cluster was touched: {_cause(exc)}. "
            "The cluster still serves, its data as it was; nothing was changed")


def rolled_back_message(spec: ClusterSpec, exc: BaseException) -> str:
    """The one line of a restore whose rebuilt cluster failed, after the old one came back."""
    return (f"in-place restore of {spec.scope} failed after the swap: {_cause(exc)}. The old data directories "
            "were put back and the old cluster started again (its data as before the restore)")


def down_message(spec: ClusterSpec, target: str, exc: BaseException) -> str:
    """The one line when even the way back failed: the cluster is down; how to recover."""
    # One line: the CLI prints only the first, and the recovery advice must survive.
    return (f"in-place restore of {spec.scope} failed and so did putting the old cluster back: {_cause(exc)}. "
            f"The cluster is DOWN; the old data is in each node volume's pgdata.pre-restore and the "
            f"repository volume {bk.repo_volume(spec)} was not touched. Retry `pgha restore --scope {spec.scope} "
            f"--to '{target}' --in-place --yes`, or restore into a new scope with `--into SCOPE`")


def repo_sets(spec: ClusterSpec) -> list[bki.BackupSet]:
    """Backup sets of the source, read in a running node (after a WAL switch reaches the archive)."""
    nodes = pbr.running_nodes(spec)
    if not nodes:
        raise StateError(f"no node of {spec.scope} is running to read its repository; `pgha up` it first")
    pbr.install_nodes(spec, True)
    leader = patroni.cluster_view(spec).leader()
    reader = pbr.runner_for(spec, leader.name if leader is not None else nodes[0])  # or the repository host
    # check forces a WAL switch and waits until it is archived: WAL up to now is restorable.
    pbr.check(spec, reader)
    return pbr.info(spec, reader)[0]


def preflight(spec: ClusterSpec, target: str, into: ClusterSpec | None, in_place: bool) -> tuple[dt.datetime, bki.BackupSet]:
    """Every refusal before anything changes: time, range, target scope, ports. Returns (time, base set)."""
    when = bkd.parse_target_time(target)
    if isinstance(when, str):
        raise UsageError(when)
    if in_place == (into is not None):
        raise UsageError("say where to restore: --into SCOPE (a new cluster) or --in-place --yes, not both")
    if bk.uses_repo_host(spec) and into is not None:
        # A cluster over hosts binds PostgreSQL's and Patroni's ports on its hosts: a second one
        # cannot run beside it there.
        raise UsageError("a cluster with a repository host (backup.repo_host) restores in place only "
                         "(`--in-place --yes`): a new cluster could not bind its hosts' ports beside it")
    pbr.require_repo(spec)
    if in_place:
        eng = engines(spec)
        running_etcd = sum(eng.of(m).running(spec.container(m)) for m in spec.etcd_names())
        if problem := bkd.in_place_problem(spec, running_etcd, len(pbr.running_nodes(spec))):
            raise StateError(problem)
    sets = repo_sets(spec)
    if problem := bkd.check_target(when, sets, dt.datetime.now(dt.UTC)):
        raise UsageError(problem)
    if into is not None:
        if any(e.scope_has_resources(into.scope) for e in engines(into).all()):
            raise StateError(f"scope {into.scope} already has containers or volumes; restore into a new scope "
                             f"(or remove it with `pgha down --volumes --scope {into.scope}`)")
        if secrets_file(into.scope).exists():
            raise StateError(f"scope {into.scope} already has a password file; restore into a new scope")
        bootstrap_preflight(into)
    base = max((s for s in sets if not s.error and s.stop <= when), key=lambda s: s.stop)
    try:
        pbr.verify_set_in_node(spec, pbr.running_nodes(spec)[0], base.label)
    except pbr.BackupError as exc:
        raise StateError(f"backup set {base.label} (the base for that time) fails: {exc}; nothing restored") from None
    return when, base


def restore_volume(source: ClusterSpec, spec: ClusterSpec, member: str, image: str, when: dt.datetime,
                   base: bki.BackupSet, pgdata: str = pr.PGDATA) -> float:
    """Restore `source`'s repository to `when` into `member`'s volume of `spec`; seconds of pgBackRest restore.

    A one-shot scratch container (labelled with `spec`'s scope) restores into `pgdata`, lets
    PostgreSQL replay to the target and promote there, resets the recovery settings and stops it.
    """
    engine = engines(spec).of(member)
    with pr.scratch(source, engine, f"{spec.scope}-restore", image, pr.ROLE_RESTORE, label_scope=spec.scope,
                    data_volume=spec.volume(member)) as s:
        restore_s = pr.restore_into(s, source, ["--type=time", f"--target={when.isoformat(' ')}",
                                                "--target-action=promote", f"--set={base.label}"],
                                    source.backup.process_max, pgdata=pgdata)
        pr.start_and_recover(s, pgdata=pgdata)
        pr.stop_postgres(s, reset_settings=True, pgdata=pgdata)
    return restore_s


def first_node_spec(spec: ClusterSpec) -> ClusterSpec:
    """The spec with its first node only: the state a restored cluster starts from.

    Over hosts one node is an unsafe placement by design (the spec's check would refuse it, after
    the live nodes were gone): it lasts until the same flow grows the cluster back.
    """
    return parse_spec({**spec.model_dump(mode="json"), "nodes": 1, "allow_unsafe_placement": True},
                      "(restore, first node)")


def adopt_and_grow(spec: ClusterSpec) -> ClusterStatus:
    """Bootstrap with one node (Patroni adopts the restored data directory), then grow to the spec's size."""
    one = first_node_spec(spec)
    result = converge(one)
    if spec.nodes > 1:
        result = converge(spec)
    return result.status


def _lock_scope(args: dict[str, Any]) -> str:
    """Restore into a new scope locks that scope; in place, the cluster's own."""
    into: ClusterSpec | None = args["into"]
    return into.scope if into is not None and not args["in_place"] else args["spec"].scope


@flow(name="restore", description="Point-in-time restore of a cluster's backups into a new cluster or in place.")
@mutating_flow("restore", lock=_lock_scope)
def restore(spec: ClusterSpec = ClusterSpec(), target: str = "", into: ClusterSpec | None = None,  # noqa: B008
            in_place: bool = False) -> RestoreResult:
    """Into a new scope (`into`) or, with `in_place`, the live cluster rebuilt; the lock is taken first."""
    if in_place:
        if into is not None:
            raise UsageError("--in-place and --into/--into-spec exclude each other")
        return restore_in_place(spec, target)
    if into is None:
        raise UsageError("say where to restore: --into SCOPE (a new cluster) or --in-place --yes")
    check_restore_target(into, spec)  # a deployment run: the stored spec with another scope and ports only
    return restore_into_new(spec, target, into)


def restore_into_new(spec: ClusterSpec, target: str, into: ClusterSpec) -> RestoreResult:
    """Restore into a new scope: its first node's volume, then a cluster adopted and grown from it."""
    log = get_run_logger()
    started = time.monotonic()
    when, base = preflight_once(preflight, spec, target, into, False)
    pr.copy_password_file(spec, into)
    first = into.node_names()[0]
    pr.ensure_node_volume(into, first)
    restore_s = restore_volume(spec, into, first, pr.node_image(spec), when, base)
    log.info("restored %s to %s from %s in %.1fs; starting cluster %s", spec.scope, when, base.label, restore_s,
             into.scope)
    status = adopt_and_grow(into)
    return RestoreResult(source=spec.scope, into=into.scope, target=when.isoformat(" "), from_set=base.label,
                         restore_s=round(restore_s, 1), duration_s=round(time.monotonic() - started, 1),
                         status=status)


def restore_in_place(spec: ClusterSpec, target: str) -> RestoreResult:
    """Restore beside the live data, then swap it in; any failure leaves the old cluster serving (or says why not)."""
    log = get_run_logger()
    started = time.monotonic()
    when, base = preflight_once(preflight, spec, target, None, True)
    took = {"preflight_s": round(time.monotonic() - started, 1)}
    require_approval(spec, "in-place restore")  # a deployment run pauses for the typed scope
    image = pr.node_image(spec)  # before the nodes go: the image they ran
    first = spec.node_names()[0]
    mark = time.monotonic()
    try:
        restore_s = restore_volume(spec, spec, first, image, when, base, pgdata=pr.STAGED)
    except Exception as exc:  # noqa: BLE001 - nothing live was touched: drop the copy, say so
        try:
            pr.drop_staged(spec, image)
        except Exception as drop_exc:  # noqa: BLE001 - the live data is intact either way
            log.warning("could not remove the staged copy: %s", drop_exc)
        raise RestoreFailed(untouched_message(spec, exc)) from exc
    took["restore_and_replay_s"] = round(time.monotonic() - mark, 1)
    log.warning(discarded_note(spec, when))
    log.info("restored %s to %s from %s in %.1fs beside the live data; swapping it in", spec.scope, when,
             base.label, restore_s)
    mark = time.monotonic()
    leader = patroni.cluster_view(spec).leader()
    if leader is not None and leader.name != first and spec.nodes > 1:
        # The way back starts pg-1 alone: its data must be the newest of the old cluster.
        switchover(spec, leader.name, first, timeout=60)
    removed = pr.stop_nodes(spec)
    log.info("removed %s; keys of %s cleared from etcd", ", ".join(removed) or "nothing", spec.scope)
    took["stop_s"] = round(time.monotonic() - mark, 1)
    mark = time.monotonic()
    try:
        pr.swap_in(spec, image)
        status = adopt_and_grow(spec)
        if not status.healthy:
            raise StateError(f"the restored cluster is not healthy: {'; '.join(status.problems)[:200]}")
    except Exception as exc:  # noqa: BLE001 - the old cluster must come back
        log.error("the restored cluster failed (%s); putting the old data back", _cause(exc))
        try:
            pr.stop_nodes(spec)
            pr.swap_back(spec, image)
            adopt_and_grow(spec)
        except Exception as back_exc:  # noqa: BLE001 - say the cluster is down, and how to recover
            raise RestoreFailed(down_message(spec, target, back_exc)) from exc
        raise RestoreFailed(rolled_back_message(spec, exc)) from exc
    took["rebuild_s"] = round(time.monotonic() - mark, 1)
    kept_removed = pr.drop_kept(spec)
    log.info("old data directories removed from %s", ", ".join(kept_removed) or "no node")
    mark = time.monotonic()
    timeline, archived = archive_new_timeline(spec)
    took["archive_check_s"] = round(time.monotonic() - mark, 1)
    return RestoreResult(source=spec.scope, into=spec.scope, in_place=True, target=when.isoformat(" "),
                         from_set=base.label, restore_s=round(restore_s, 1), timeline=timeline,
                         history_archived=archived, **took, duration_s=round(time.monotonic() - started, 1),
                         discarded=f"everything written after {when.isoformat(' ')}", status=status)


def archive_new_timeline(spec: ClusterSpec) -> tuple[int | None, str]:
    """The new timeline, and its history file pushed to the archive; then `pgbackrest check` must pass.

    The restored copy promoted with archiving off, so the history file of the timeline it
    opened never reached the repository; a later PITR along the new timeline needs it.
    """
    leader = patroni.cluster_view(spec).leader()
    if leader is None:
        raise StateError(f"cluster {spec.scope} has no leader after the in-place restore")
    tl = leader.timeline
    archived = "none (timeline 1)"
    if tl and tl > 1:
        archived = pbr.archive_history(spec, leader.name, tl)
    pbr.check_archiving(spec, leader.name)
    return tl, archived
