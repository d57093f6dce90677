"""verify-restore: prove a backup restores, in a scratch container that never touches the live cluster.

The scratch container has its own (internal) network and data volume, and the repository
volume mounted read-only. It needs no password: PostgreSQL listens on its socket only and
admits the postgres OS user by peer authentication. Everything it creates is labelled
`pgha.cluster=<scope>`, `pgha.role=verify` and removed at the end, whatever happens.
Read-only for the cluster, so it takes no lock when run on its own.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from stack import backup as bk
from stack import layout
from stack.errors import UsageError
from stack.spec import ClusterSpec
from tasks import docker_engine as de
from tasks import images
from tasks import pgbackrest as pbr
from tasks.host.lock import holder_name, mutating


def node_image(spec: ClusterSpec) -> str:
    """The live nodes' image (same pgBackRest and PostgreSQL), else the spec's own build."""
    for m in spec.node_names():
        ct = de.find_container(spec.container(m))
        if ct is not None and ct.image.tags:
            return str(ct.image.tags[0])
    return images.ensure_image(spec)[0]


def preflight(spec: ClusterSpec, label: str | None) -> None:
    """Refuse a missing set before any container is made (read through a running node, if any)."""
    if spec.backup.s3 is not None:
        raise UsageError("verify-restore reads the repository volume; an S3 repository is not supported by it yet")
    pbr.require_repo(spec)
    for m in spec.node_names():
        if not de.running(spec.container(m)):
            continue
        code, out, _ = pbr.pgbackrest(spec, m, ["info", "--output=json"], conf=layout.NODE_CONF, timeout=60)
        if code != 0:
            continue  # files not installed yet in this node: the flow checks in its scratch container
        chosen = bk.pick_set(bk.parse_info(json.loads(out), spec.scope)[0], label)
        if isinstance(chosen, str):
            raise UsageError(chosen)
        return


@flow(name="verify-restore", description="Restore a backup set into a scratch container and check it.")
def verify_restore(spec: ClusterSpec = ClusterSpec(), label: str | None = None) -> dict[str, Any]:  # noqa: B008
    """Restore `label` (default: the newest set) and check consistency, pg_amcheck and the canary."""
    log = get_run_logger()
    preflight(spec, label)
    # One verification per cluster at a time (the scratch container has a fixed name); a
    # second one waits. Its own lock, not the cluster's: verifying changes nothing live.
    with mutating(f"{spec.scope}/verify", holder_name("verify-restore"), wait_seconds=3600):
        return _verify(spec, label, log)


def _verify(spec: ClusterSpec, label: str | None, log: Any) -> dict[str, Any]:
    pbr.remove_leftover_scratch(spec.scope, pbr.LABEL_ROLE_VERIFY)  # of a killed earlier run
    name = f"{spec.scope}-verify"
    started = time.monotonic()
    steps: dict[str, float] = {}
    result: dict[str, Any] = {"scope": spec.scope, "label": label, "ok": False}
    scratch = pbr.create_scratch(spec.scope, name, node_image(spec), bk.repo_volume(spec), pbr.LABEL_ROLE_VERIFY)
    try:
        pbr._put_file(scratch.container, pbr.SCRATCH_CONF,  # noqa: SLF001
                      bk.render_scratch_conf(spec.scope, process_max=spec.backup.process_max), 0o644)
        code, out, err = pbr.scratch_exec(scratch, ["pgbackrest", f"--stanza={spec.scope}", "info", "--output=json"])
        if code != 0:
            raise pbr.BackupError(f"cannot read the repository: {pbr._last_lines(err or out)}")  # noqa: SLF001


        sets, _, _ = bk.parse_info(json.loads(out), spec.scope)
        chosen = bk.pick_set(sets, label)
        if isinstance(chosen, str):
            raise UsageError(chosen)
        result["label"] = chosen.label
        result["type"] = chosen.type
        t = time.monotonic()
        pbr.verify_repo_in(scratch, spec.scope, chosen.label)
        steps["verify_s"] = time.monotonic() - t
        steps["restore_s"] = pbr.scratch_restore(scratch, spec.scope, [f"--set={chosen.label}", "--type=immediate",
                                                                      "--target-action=promote"],
                                                 spec.backup.process_max)
        t = time.monotonic()
        pbr.scratch_start(scratch)
        pbr.wait_promoted(scratch)
        steps["recovery_s"] = time.monotonic() - t
        state = pbr.scratch_exec(scratch, ["sh", "-c", "pg_controldata \"$0\" | sed -n 's/^Database cluster state: *//p'",
                                           "/var/lib/postgresql/data/pgdata"])[1].strip()
        if state != "in production":
            raise pbr.BackupError(f"restored copy is not consistent: cluster state '{state}'")
        t = time.monotonic()
        result["amcheck"] = pbr.amcheck(scratch, jobs=spec.backup.process_max,
                                            heapallindexed=spec.backup.verify_heapallindexed)
        steps["amcheck_s"] = time.monotonic() - t
        token, want = chosen.annotation.get(bk.ANN_TOKEN), chosen.annotation.get(bk.ANN_COUNT)
        if token is None or want is None:
            result["canary"] = "no canary recorded with this set (not taken by pgha backup)"
        else:
            if not re.fullmatch(r"[0-9a-f]{16}", token) or not want.isdigit():
                raise pbr.BackupError(f"backup set {chosen.label} carries a malformed canary annotation")
            # Both values were just checked to be hex/digits, so formatting them in is safe.
            has = pbr.scratch_sql(scratch, f"select count(*) from {bk.CANARY_TABLE} where token = '{token}'")  # noqa: S608
            total = pbr.scratch_sql(scratch, f"select count(*) from {bk.CANARY_TABLE}")  # noqa: S608
            if has != "1":
                raise pbr.BackupError(f"canary row {token} written just before backup {chosen.label} is missing "
                                      "from the restored copy")
            if total != want:
                raise pbr.BackupError(f"canary table has {total} rows in the restored copy, {want} when backed up")
            result["canary"] = f"row {token} present, {total} rows as when backed up"
        result["databases"] = pbr.scratch_sql(
            scratch, "select count(*) from pg_database where not datistemplate")
        pbr.scratch_stop(scratch)
        result["ok"] = True
    except Exception as exc:
        result["error"] = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise
    finally:
        result["removed"] = pbr.remove_scratch(scratch)
        result["duration_s"] = round(time.monotonic() - started, 1)
        result.update({k: round(v, 1) for k, v in steps.items()})
        create_table_artifact(
            key=f"{spec.scope}-verify-restore",
            table=[{k: v for k, v in result.items() if k != "removed"}],
            description=f"verified restore of {result['label']} ({spec.scope}): "
                        f"{'PASSED' if result['ok'] else 'FAILED'} in {result['duration_s']}s",
        )
        log.info("verify-restore %s: %s in %.1fs", result["label"], "passed" if result["ok"] else "FAILED",
                 result["duration_s"])
    return result
