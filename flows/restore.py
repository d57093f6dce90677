"""restore: point-in-time restore of a cluster's backups into a NEW cluster (another scope and ports).

Steps: refuse bad input first (target outside the recoverable range, a target scope that
exists, ports in use); then restore into the new scope's pg-1 volume inside a one-shot
container (own network, source repository read-only), let PostgreSQL replay to the target and
promote, and hand the data directory to Patroni: the new cluster is bootstrapped with one
node (Patroni adopts the existing data directory), then grown to the spec's size so the
other nodes clone from it. The restored databases contain the source's roles, so the new
scope gets a copy of the source's password file.

In-place restore is refused for now (see README): restore into a new scope, check it, and
point clients at it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from typing import Any

from prefect import flow, get_run_logger

from stack import backup as bk
from stack.errors import StateError, UsageError
from stack.lock import holder_name, mutating
from stack.spec import ClusterSpec, parse_spec
from stack.state import secrets_file
from tasks import docker_engine as de
from tasks import pgbackrest as pbr

PORT_OFFSET = 10  # --into SCOPE without a spec file: the source's ports + 10


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
    pbr.require_repo(spec)
    sets = repo_sets(spec)
    if problem := bk.check_target(when, sets, dt.datetime.now(dt.UTC)):
        raise UsageError(problem)
    if in_place or into is None:
        raise UsageError("in-place restore is not available yet; restore --into a new scope, check it, "
                         "then point clients at it")
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


@flow(name="restore", description="Point-in-time restore of a cluster's backups into a new cluster.")
def restore(spec: ClusterSpec = ClusterSpec(), target: str = "", into: ClusterSpec | None = None,  # noqa: B008
            in_place: bool = False) -> dict[str, Any]:
    log = get_run_logger()
    started = time.monotonic()
    from flows.bootstrap import _bootstrap

    if into is None:
        raise UsageError("in-place restore is not available yet; restore --into a new scope")
    with mutating(into.scope, holder_name("restore")):
        when, base = preflight(spec, target, into, in_place)
        image = _image(spec)
        # The restored catalog holds the source's roles and passwords.
        secrets_file(into.scope).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(secrets_file(spec.scope), secrets_file(into.scope))
        secrets_file(into.scope).chmod(0o600)
        first = into.node_names()[0]
        de.ensure_volume(into.scope, "patroni", first, into.volume(first))
        scratch = pbr.create_scratch(into.scope, f"{into.scope}-restore", image, bk.repo_volume(spec), "restore",
                                     data_volume=into.volume(first))
        try:
            restore_s = pbr.scratch_restore(scratch, spec.scope, ["--type=time", f"--target={when.isoformat(' ')}",
                                                                  "--target-action=promote", f"--set={base.label}"],
                                            spec.backup.process_max)
            pbr.scratch_start(scratch)
            pbr.wait_promoted(scratch)
            # Drop the recovery settings pgBackRest wrote; Patroni owns the configuration now.
            pbr.scratch_sql(scratch, "alter system reset all")
            pbr.scratch_sql(scratch, "checkpoint")
            pbr.scratch_stop(scratch)
        finally:
            pbr.remove_scratch(scratch, keep_volume=True)
        log.info("restored %s to %s from %s in %.1fs; starting cluster %s", spec.scope, when, base.label, restore_s, into.scope)
        # One node first: Patroni adopts the restored data directory; then the others clone it.
        one = parse_spec({**json.loads(into.model_dump_json()), "nodes": 1}, "(restore, first node)")
        _bootstrap(one)
        result = _bootstrap(into) if into.nodes > 1 else {}
    return {"source": spec.scope, "into": into.scope, "target": when.isoformat(" "), "from_set": base.label,
            "restore_s": round(restore_s, 1), "duration_s": round(time.monotonic() - started, 1),
            "status": result.get("status")}


def _image(spec: ClusterSpec) -> str:
    from flows.verify import node_image

    return node_image(spec)
