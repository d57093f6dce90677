"""backup and dump: pgBackRest backups from a replica, and logical dumps into the repository volume.

The backup flow holds the cluster's mutating lock although it changes no data: the
repository is shared by every node while pgBackRest's own lock files are per container, so
two backups (or a backup and an expire) started from different nodes would not see each
other; and a drill or switchover in the middle would abort the backup. WAL archiving itself
is converged by `flows.steps.ensure_archiving` (bootstrap runs it on every `pgha up`).
"""

from __future__ import annotations

import datetime as dt

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.steps import forget_preflight, preflight_once
from flows.steps.deployment import pinned_spec
from flows.steps.ops import operation, result_artifact
from flows.verify import verify_restore
from stack import backup as bk
from stack import backup_decisions as bkd
from stack.errors import StateError, UsageError
from stack.results import BackupResult, DumpResult
from stack.retry import with_retries
from stack.spec import ClusterSpec
from tasks import patroni, pgdump
from tasks import pgbackrest as pbr
from tasks.host.generations import serving
from tasks.repo_host import ensure_repo_host

RETRY_DELAYS_S = (10.0, 30.0)  # a backup that failed transiently runs again after these (three tries in all)


def preflight(spec: ClusterSpec) -> bkd.Source:
    """Refuse a backup that cannot run (disabled, no repository, no healthy replica) before anything happens."""
    if not spec.backup.enabled:
        raise UsageError(f"backups are disabled in the spec of {spec.scope} (backup.enabled: false)")
    pbr.require_repo(spec)
    source = bkd.choose_source(patroni.cluster_view(spec).members, spec.backup.allow_primary)
    if source.runner is None:
        raise StateError(f"no backup of {spec.scope}: {source.reason}")
    return source


@flow(name="backup", description="pgBackRest backup from a replica, then a verified restore of it.")
def backup(spec: ClusterSpec = ClusterSpec(), type: bkd.BackupType = bkd.BackupType.FULL,  # noqa: A002, B008
           verify: bool | None = None) -> BackupResult:
    """Back up (full, diff or incr) and, unless disabled, verify the new set by restoring it."""
    spec = serving(pinned_spec(spec))  # a deployment's spec names the cluster; its serving generation is backed up
    log = get_run_logger()

    def again(attempt: int, exc: BaseException, delay: float) -> None:
        log.warning("backup attempt %d of %s failed on a transient engine error (%s); trying again in %.0fs",
                    attempt, spec.scope, str(exc).splitlines()[0][:300], delay)
        forget_preflight(preflight, spec)  # the next try chooses its source again

    with operation("backup", spec):
        # A scheduled run has no second run: a transient failure (cut exec output, a reset
        # connection) runs the steps again; every step is idempotent, a new canary row is harmless.
        result = with_retries(lambda: take_backup(spec, bkd.BackupType(type)), RETRY_DELAYS_S, again)
    if verify if verify is not None else spec.backup.verify_after_backup:
        result.verification = verify_restore(spec, label=result.label)
    result_artifact(spec.scope, "backup", result)
    return result


def take_backup(spec: ClusterSpec, btype: bkd.BackupType) -> BackupResult:
    """The backup itself (the caller holds the lock): canary, pgBackRest, the new set found in `info`."""
    log = get_run_logger()
    source = preflight_once(preflight, spec)
    assert source.runner is not None  # preflight refuses otherwise
    runner = pbr.runner_for(spec, source.runner)  # the replica, or the repository host
    log.info("backing up %s %s%s", spec.scope, source.reason,
             f", run in the repository host {spec.container(runner)}" if runner != source.runner else "")
    if bk.uses_repo_host(spec):
        ensure_repo_host(spec)
    pbr.prepare_nodes(spec, source.from_standby)
    # No `pgbackrest check` first: the backup checks archiving itself before it copies anything
    # (pg_backup_start switches WAL, and pgBackRest waits, up to archive-timeout, for the segment
    # before the start to reach the repository). A check cost one more WAL switch archived.
    before, _, _ = pbr.info(spec, runner)
    token = pbr.new_token()
    count = pbr.write_canary(spec, token)
    run = pbr.run_backup(spec, runner, btype, token, count, from_standby=source.from_standby)
    after, wal_min, wal_max = pbr.info(spec, runner)
    known = {s.label for s in before}
    new = [s for s in after if s.label not in known and s.annotation.get(bkd.ANN_TOKEN) == token]
    if not new:
        raise pbr.BackupError("pgbackrest reported success but the new set is not in `pgbackrest info`")
    s = new[-1]
    expired = sorted(known - {x.label for x in after})
    elapsed = run.elapsed_s
    result = BackupResult(
        label=s.label, type=s.type, source=source.runner, from_standby=source.from_standby,
        size_mb=round(s.size / 1e6, 1), stored_mb=round(s.repo_size / 1e6, 1), duration_s=round(elapsed, 1),
        mb_per_s=round(s.size / 1e6 / elapsed, 1) if elapsed else 0, wal_start=s.wal_start, wal_stop=s.wal_stop,
        expired=", ".join(expired), canary=token, canary_count=count, sets=[x.label for x in after])
    create_table_artifact(key=f"{spec.scope}-backup",
                          table=[result.model_dump(mode="json", exclude={"canary", "canary_count", "sets",
                                                                         "verification"})],
                          description=f"pgBackRest {s.type} backup {s.label} of {spec.scope}; archive {wal_min}..{wal_max}")
    if s.type != btype.value:
        log.warning("pgBackRest took a %s backup instead of %s (no prior full backup)", s.type, btype.value)
    log.info("backup %s (%s) done in %.1fs; expired: %s", s.label, s.type, elapsed, ", ".join(expired) or "none")
    return result


def dump_preflight(spec: ClusterSpec) -> bkd.Source:
    """Refuse a dump that cannot run (no repository volume, no healthy replica) before anything happens."""
    if not spec.backup.enabled or spec.backup.s3 is not None:
        raise UsageError("pgha dump writes into the repository volume: it needs backup.enabled and no backup.s3")
    if bk.uses_repo_host(spec):
        raise UsageError("pgha dump writes into the repository volume the nodes mount; with backup.repo_host they "
                         "mount none (not built yet)")
    pbr.require_repo(spec)
    source = bkd.choose_source(patroni.cluster_view(spec).members, spec.backup.allow_primary)
    if source.runner is None:
        raise StateError(f"no dump of {spec.scope}: {source.reason}")
    return source


@flow(name="dump", description="pg_dump -Fc of every database from a replica into the repository volume.")
def dump(spec: ClusterSpec = ClusterSpec()) -> DumpResult:  # noqa: B008 - pydantic default is immutable
    """Logical dumps, read-only for the cluster (no lock); old dump sets beyond the retention are removed."""
    spec = serving(pinned_spec(spec))
    log = get_run_logger()
    source = preflight_once(dump_preflight, spec)
    runner = source.runner
    assert runner is not None  # the preflight refuses otherwise
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = f"{bk.dump_dir(spec)}/{stamp}"
    files = pgdump.dump_set(spec, runner, target)
    removed = pgdump.prune(spec, runner, spec.backup.dump_retention)
    create_table_artifact(key=f"{spec.scope}-dump", table=[f.model_dump(mode="json") for f in files],
                          description=f"pg_dump -Fc of {spec.scope} from {runner}; removed old sets: {removed or 'none'}")
    log.info("dumped %d database(s) into %s; removed %s", len(files), target, removed or "none")
    return DumpResult(set=stamp, dir=target, source=runner, files=files, removed=removed)
