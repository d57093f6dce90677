"""verify-restore: prove a backup restores, in a scratch container that never touches the live cluster.

The scratch container (`tasks.pgbackrest_restore.scratch`) has its own internal network and
data volume and the repository read-only; everything it creates is labelled
`pgha.cluster=<scope>`, `pgha.role=verify` and removed at the end, whatever happens.
Read-only for the cluster, so it takes no cluster lock when run on its own.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.steps import preflight_once
from flows.steps.deployment import pinned_spec
from flows.steps.ops import operation
from stack import backup as bk
from stack import backup_decisions as bkd
from stack import layout
from stack.errors import UsageError
from stack.results import VerifyResult
from stack.spec import ClusterSpec
from tasks import pgbackrest as pbr
from tasks import pgbackrest_restore as pr
from tasks.docker_hosts import engines
from tasks.host.generations import serving


def preflight(spec: ClusterSpec, label: str | None) -> None:
    """Refuse a missing set before any container is made (read through a running node, if any)."""
    pbr.require_repo(spec)
    # With a repository host, its container reads the repository; else a node's own config does.
    readers = [spec.repo_member] if bk.uses_repo_host(spec) else pbr.running_nodes(spec)
    conf = layout.BACKUP_CONF if bk.uses_repo_host(spec) else layout.NODE_CONF
    for m in readers:
        r = pbr.pgbackrest(spec, m, ["info", "--output=json"], conf=conf, timeout=60)
        if not r.ok:
            continue  # files not installed yet in this node: the flow checks in its scratch container
        chosen = bkd.pick_set(pbr.parse_info_json(r.out, spec.scope)[0], label)
        if isinstance(chosen, str):
            raise UsageError(chosen)
        return


@flow(name="verify-restore", description="Restore a backup set into a scratch container and check it.")
def verify_restore(spec: ClusterSpec = ClusterSpec(), label: str | None = None) -> VerifyResult:  # noqa: B008
    """Restore `label` (default: the newest set) and check consistency, pg_amcheck and the canary."""
    spec = serving(pinned_spec(spec))
    preflight_once(preflight, spec, label)
    # One verification per cluster at a time (the scratch container has a fixed name); a
    # second one waits. Its own lock, not the cluster's: verifying changes nothing live.
    with operation("verify-restore", spec, lock_scope=f"{spec.scope}/verify", wait_seconds=3600) as op:
        op.detail["label"] = label  # the set asked for; the set checked once it is known
        result = verify_in_scratch(spec, label, op.detail)
        return result


def verify_in_scratch(spec: ClusterSpec, label: str | None, detail: dict[str, object] | None = None) -> VerifyResult:
    """The verification itself (the caller holds the verify lock); the result, also as an artifact."""
    log = get_run_logger()
    started = time.monotonic()
    result = VerifyResult(scope=spec.scope, label=label)
    engine = engines(spec).repository()  # the engine holding the repository volume (the repository host's)
    try:
        with pr.scratch(spec, engine, f"{spec.scope}-verify", pr.node_image(spec), pr.ROLE_VERIFY) as s:
            try:
                check_copy(spec, s, label, result)
            finally:
                result.removed = s.removed  # the same list, filled when the block ends
    except Exception as exc:
        result.error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise
    finally:
        result.duration_s = round(time.monotonic() - started, 1)
        if detail is not None:  # the journal line `pgha backups` reads: last verification of each set
            detail.update(label=result.label, verified=result.ok, error=result.error)
        create_table_artifact(
            key=f"{spec.scope}-verify-restore",
            table=[result.model_dump(mode="json", exclude={"removed"})],
            description=f"verified restore of {result.label} ({spec.scope}): "
                        f"{'PASSED' if result.ok else 'FAILED'} in {result.duration_s}s",
        )
        log.info("verify-restore %s: %s in %.1fs", result.label, "passed" if result.ok else "FAILED",
                 result.duration_s)
    return result


def check_copy(spec: ClusterSpec, s: pr.Scratch, label: str | None, result: VerifyResult) -> None:
    """Pick the set, verify its files, restore, recover, check consistency and the canary; fills `result`."""
    pr.put_conf(s, spec, spec.backup.process_max)
    chosen = bkd.pick_set(pr.repository_sets(s, spec.scope), label)
    if isinstance(chosen, str):
        raise UsageError(chosen)
    result.label, result.type = chosen.label, chosen.type
    result.verify_s = round(pr.verify_repository(s, spec.scope, chosen.label), 1)
    result.restore_s = round(pr.restore_into(s, spec, [f"--set={chosen.label}", "--type=immediate",
                                                              "--target-action=promote"], spec.backup.process_max), 1)
    result.recovery_s = round(pr.start_and_recover(s), 1)
    t = time.monotonic()
    result.amcheck = pr.check_consistency(s, jobs=spec.backup.process_max,
                                          heapallindexed=spec.backup.verify_heapallindexed)
    result.amcheck_s = round(time.monotonic() - t, 1)
    canary = bkd.canary_of(chosen)
    if canary is None:
        result.canary = "no canary recorded with this set (not taken by pgha backup)"
    elif isinstance(canary, str):
        raise pbr.BackupError(canary)
    else:
        token, want = canary
        present, total = pr.canary_counts(s, token)
        if problem := bkd.canary_problem(chosen, token, want, present, total):
            raise pbr.BackupError(problem)
        result.canary = f"row {token} present, {total} rows as when backed up"
    result.databases = pr.database_count(s)
    pr.stop_postgres(s)
    result.ok = True
