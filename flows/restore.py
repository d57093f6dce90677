"""restore: point-in-time restore of a cluster's backups, into a NEW cluster or in place.

Into a new scope (the safe default): refuse bad input first (target outside the recoverable
range, a target scope that exists, ports in use); then restore into the new scope's pg-1
volume inside a one-shot container (own network, source repository read-only), let
PostgreSQL replay to the target and promote, and hand the data directory to Patroni: the new
cluster is bootstrapped with one node (Patroni adopts the existing data directory), then
grown to the spec's size so the other nodes clone from it. The restored databases contain
the source's roles, so the new scope gets a copy of the source's password file.

In place (`--in-place --yes`): the same refusals for the time and the base set; then, under
the cluster's mutating lock, the Patroni and HAProxy containers are removed (etcd, the
repository volume and the password file stay), the scope's Patroni keys are deleted from
etcd so the restored node bootstraps as a new leader, the node volumes are recreated empty,
pg-1's is filled by the same one-shot restore, and the cluster is bootstrapped with one node
and grown (the replicas re-clone). Everything written after the target time is discarded.
The repository is only ever read, so a failed in-place restore can be retried, or restored
into a new scope.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from stack import backup as bk
from stack import layout
from stack.errors import PghaError, StateError, UsageError
from stack.spec import ClusterSpec, parse_spec
from tasks import docker_engine as de
from tasks import etcd
from tasks import pgbackrest as pbr
from tasks.host.lock import holder_name, mutating
from tasks.host.state import secrets_file

PORT_OFFSET = 10  # --into SCOPE without a spec file: the source's ports + 10
PATRONI_NAMESPACE = "/service"  # Patroni's default etcd namespace (render.py sets none)


class RestoreFailed(PghaError):
    """An in-place restore failed after the cluster was stopped: the message says how to recover."""

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
    return new


def in_place_problem(spec: ClusterSpec, etcd_running: int, nodes_running: int) -> str | None:
    """Why the live cluster cannot be rebuilt in place now (None: it can). Pure."""
    if spec.backup.s3 is not None:
        return "in-place restore needs the local repository volume; with an S3 repository restore --into a new scope"
    if etcd_running < spec.etcd_members // 2 + 1:
        return (f"only {etcd_running} of {spec.etcd_members} etcd members run (no quorum): the restored node "
                f"could not take the leader key; `pgha up` the cluster first")
    if nodes_running == 0:
        return "no node of the cluster runs; `pgha up` it first (the repository is read through a node)"
    return None


def discarded_note(spec: ClusterSpec, when: dt.datetime) -> str:
    return (f"in-place restore of {spec.scope}: everything written after {when.isoformat(' ')} is discarded; "
            "replicas are re-cloned from the restored node")


def down_message(spec: ClusterSpec, target: str, exc: BaseException) -> str:
    """The one line a failed in-place restore ends with: the cluster is down; how to recover."""
    # One line: the CLI prints only the first, and the recovery advice must survive.
    cause = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
    return (f"in-place restore of {spec.scope} failed after the cluster was stopped: {cause}. "
            f"The cluster is DOWN; its repository volume {bk.repo_volume(spec)} was not touched. "
            f"Retry `pgha restore --scope {spec.scope} --to '{target}' --in-place --yes`, or restore into a new "
            f"scope with `--into SCOPE`")


def repo_sets(spec: ClusterSpec) -> list[bk.BackupSet]:
    """Backup sets of the source, read in a running node (after a WAL switch reaches the archive)."""
    from flows.backup import _members, prepare_nodes

    nodes = [m for m in spec.node_names() if de.running(spec.container(m))]
    if not nodes:
        raise StateError(f"no node of {spec.scope} is running to read its repository; `pgha up` it first")
    prepare_nodes.fn(spec, True)
    leader = next((m for m, role, _, _ in _members(spec) if role == "leader"), nodes[0])
    # check forces a WAL switch and waits until it is archived: WAL up to now is restorable.
    pbr.check(spec, leader)
    return pbr.info(spec, leader)[0]


def preflight(spec: ClusterSpec, target: str, into: ClusterSpec | None, in_place: bool) -> tuple[dt.datetime, bk.BackupSet]:
    """Every refusal before anything changes: time, range, target scope, ports. Returns (time, base set)."""
    from flows.bootstrap import preflight as bootstrap_preflight

    when = bk.parse_target_time(target)
    if isinstance(when, str):
        raise UsageError(when)
    if in_place == (into is not None):
        raise UsageError("say where to restore: --into SCOPE (a new cluster) or --in-place --yes, not both")
    pbr.require_repo(spec)
    if in_place:
        running_etcd = sum(de.running(spec.container(m)) for m in spec.etcd_names())
        running_nodes = sum(de.running(spec.container(m)) for m in spec.node_names())
        if problem := in_place_problem(spec, running_etcd, running_nodes):
            raise StateError(problem)
    sets = repo_sets(spec)
    if problem := bk.check_target(when, sets, dt.datetime.now(dt.UTC)):
        raise UsageError(problem)
    if into is not None:
        if de.cluster_containers(into.scope) or de.client().volumes.list(filters={"label": f"{de.LABEL_CLUSTER}={into.scope}"}):
            raise StateError(f"scope {into.scope} already has containers or volumes; restore into a new scope "
                             f"(or remove it with `pgha down --volumes --scope {into.scope}`)")
        if secrets_file(into.scope).exists():
            raise StateError(f"scope {into.scope} already has a password file; restore into a new scope")
        bootstrap_preflight(into)
    base = max((s for s in sets if not s.error and s.stop <= when), key=lambda s: s.stop)
    node = next(m for m in spec.node_names() if de.running(spec.container(m)))
    try:
        pbr.verify_set_in_node(spec, node, base.label)
    except pbr.BackupError as exc:
        raise StateError(f"backup set {base.label} (the base for that time) fails: {exc}; nothing restored") from None
    return when, base


def restore_volume(spec: ClusterSpec, scope_label: str, volume: str, when: dt.datetime, base: bk.BackupSet) -> float:
    """Restore `spec`'s repository to `when` into `volume` in a one-shot container; seconds of pgBackRest restore.

    PostgreSQL replays to the target and promotes there; the recovery settings pgBackRest
    wrote are then reset, since Patroni owns the configuration of the node that adopts it.
    """
    scratch = pbr.create_scratch(scope_label, f"{scope_label}-restore", _image(spec), bk.repo_volume(spec), "restore",
                                 data_volume=volume)
    try:
        restore_s = pbr.scratch_restore(scratch, spec.scope, ["--type=time", f"--target={when.isoformat(' ')}",
                                                              "--target-action=promote", f"--set={base.label}"],
                                        spec.backup.process_max)
        pbr.scratch_start(scratch)
        pbr.wait_promoted(scratch)
        pbr.scratch_sql(scratch, "alter system reset all")
        pbr.scratch_sql(scratch, "checkpoint")
        pbr.scratch_stop(scratch)
    finally:
        pbr.remove_scratch(scratch, keep_volume=True)
    return restore_s


def adopt_and_grow(spec: ClusterSpec) -> dict[str, Any]:
    """Bootstrap with one node (Patroni adopts the restored data directory), then grow to the spec's size."""
    from flows.bootstrap import _bootstrap

    one = parse_spec({**json.loads(spec.model_dump_json()), "nodes": 1}, "(restore, first node)")
    result = _bootstrap(one)
    return _bootstrap(spec) if spec.nodes > 1 else result


@flow(name="restore", description="Point-in-time restore of a cluster's backups into a new cluster or in place.")
def restore(spec: ClusterSpec = ClusterSpec(), target: str = "", into: ClusterSpec | None = None,  # noqa: B008
            in_place: bool = False) -> dict[str, Any]:
    if in_place:
        if into is not None:
            raise UsageError("--in-place and --into/--into-spec exclude each other")
        return _in_place(spec, target)
    if into is None:
        raise UsageError("say where to restore: --into SCOPE (a new cluster) or --in-place --yes")
    log = get_run_logger()
    started = time.monotonic()
    with mutating(into.scope, holder_name("restore")):
        when, base = preflight(spec, target, into, in_place)
        # The restored catalog holds the source's roles and passwords.
        secrets_file(into.scope).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(secrets_file(spec.scope), secrets_file(into.scope))
        secrets_file(into.scope).chmod(0o600)
        first = into.node_names()[0]
        de.ensure_volume(into.scope, "patroni", first, into.volume(first))
        restore_s = restore_volume(spec, into.scope, into.volume(first), when, base)
        log.info("restored %s to %s from %s in %.1fs; starting cluster %s", spec.scope, when, base.label, restore_s, into.scope)
        result = adopt_and_grow(into)
    r = {"source": spec.scope, "into": into.scope, "target": when.isoformat(" "), "from_set": base.label,
         "restore_s": round(restore_s, 1), "duration_s": round(time.monotonic() - started, 1),
         "status": result.get("status")}
    _artifact(r)
    return r


def _in_place(spec: ClusterSpec, target: str) -> dict[str, Any]:
    log = get_run_logger()
    started = time.monotonic()
    with mutating(spec.scope, holder_name("restore")):
        when, base = preflight(spec, target, None, True)
        log.warning(discarded_note(spec, when))
        steps = {"preflight_s": round(time.monotonic() - started, 1)}
        try:
            mark = time.monotonic()
            removed = stop_nodes(spec)
            log.info("removed %s; keys of %s cleared from etcd", ", ".join(removed) or "nothing", spec.scope)
            steps["stop_s"] = round(time.monotonic() - mark, 1)
            mark = time.monotonic()
            first = spec.node_names()[0]
            restore_s = restore_volume(spec, spec.scope, spec.volume(first), when, base)
            steps["restore_and_replay_s"] = round(time.monotonic() - mark, 1)
            log.info("restored %s to %s from %s in %.1fs; rebuilding the cluster", spec.scope, when, base.label, restore_s)
            mark = time.monotonic()
            result = adopt_and_grow(spec)
            steps["rebuild_s"] = round(time.monotonic() - mark, 1)
        except Exception as exc:  # noqa: BLE001 - every failure here leaves the cluster down: say so
            raise RestoreFailed(down_message(spec, target, exc)) from exc
        mark = time.monotonic()
        timeline, archived = _after_restore(spec)
        steps["archive_check_s"] = round(time.monotonic() - mark, 1)
    r = {"source": spec.scope, "into": spec.scope, "in_place": True, "target": when.isoformat(" "),
         "from_set": base.label, "restore_s": round(restore_s, 1), "timeline": timeline,
         "history_archived": archived, **steps, "duration_s": round(time.monotonic() - started, 1),
         "discarded": f"everything written after {when.isoformat(' ')}", "status": result.get("status")}
    _artifact(r)
    return r


def stop_nodes(spec: ClusterSpec) -> list[str]:
    """Remove the Patroni and HAProxy containers, clear the scope's Patroni keys, empty the node volumes.

    etcd, the network, the repository volume and the state directory (passwords, certificates)
    stay. Without the old keys (initialize, leader, config, history) the restored node
    bootstraps as a new cluster's leader, and the emptied replica volumes make Patroni
    re-clone them from it.
    """
    removed: list[str] = []
    for name in [spec.container(m) for m in spec.node_names()] + [spec.container(spec.haproxy_member)]:
        if (ct := de.find_container(name)) is not None:
            ct.remove(force=True)
            removed.append(name)
    code, out, err = etcd._exec_etcdctl(spec, ["del", "--prefix", f"{PATRONI_NAMESPACE}/{spec.scope}/"])  # noqa: SLF001
    if code != 0:
        raise StateError(f"cannot clear the Patroni keys of {spec.scope} in etcd: {(err or out).strip()[-200:]}")
    c = de.client()
    for m in spec.node_names():
        for v in c.volumes.list(filters={"name": spec.volume(m)}):
            if v.name == spec.volume(m):
                v.remove(force=True)
                removed.append(str(v.name))
        de.ensure_volume(spec.scope, "patroni", m, spec.volume(m))
    return removed


def _after_restore(spec: ClusterSpec) -> tuple[int | None, str]:
    """The new timeline, and its history file pushed to the archive; then `pgbackrest check` must pass.

    The restored copy promoted with archiving off, so the history file of the timeline it
    opened never reached the repository; a later PITR along the new timeline needs it.
    """
    from tasks import patroni

    view = patroni.cluster_view(spec)
    leader = view.leader()
    if leader is None:
        raise StateError(f"cluster {spec.scope} has no leader after the in-place restore")
    tl = leader.timeline
    archived = "none (timeline 1)"
    if tl and tl > 1:
        hist = f"{tl:08X}.history"
        code, out, err = de.exec_in(spec.container(leader.name), [
            "pgbackrest", f"--config={layout.NODE_CONF}", f"--stanza={spec.scope}", "archive-push",
            f"{layout.PGDATA}/pg_wal/{hist}"], user="postgres", timeout=60)
        if code != 0:
            raise StateError(f"cannot archive {hist} after the restore: {(err or out).strip()[-200:]}")
        archived = hist
    pbr.check(spec, leader.name)
    return tl, archived


def _artifact(r: dict[str, Any]) -> None:
    rows = [{"field": k, "value": str(v)} for k, v in r.items() if k != "status"]
    create_table_artifact(key=f"{r['into']}-restore", table=rows,
                          description=f"restore of {r['source']} to {r['target']} into {r['into']}")


def _image(spec: ClusterSpec) -> str:
    from flows.verify import node_image

    return node_image(spec)
