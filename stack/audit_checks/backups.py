"""The audit's checks of backups (`backup.*`): archiving, the repository and its size, the full and diff backups' ages, encryption."""

from __future__ import annotations

from stack.audit_backup import CRITICAL_FACTOR, WARN_FACTOR
from stack.audit_checks.check import Check
from stack.backup import CIPHER_TYPE

CHECKS: tuple[Check, ...] = (
    Check(
        name="backup.archiving",
        component="backup",
        target="the primary",
        checks="`pg_stat_archiver`: the last archive failure against the last success",
        critical="a failure newer than the last success (or failures and no success); or the archiver's "
                 "statistics cannot be read",
        only_when="`backup.enabled`",
        means="WAL piles up in `pg_wal` (see `disk.data_volume`) and point-in-time recovery stops at the "
              "last archived segment. A failure followed by a success is ok (\"since recovered\").",
        steps=("`pgha backup` runs `pgbackrest check` first and fails with the archiver's error.",
               "Is the repository reachable and writable (the repository volume, the S3 bucket and its "
               "credentials, the repository host)? `pgha logs pg-N` of the primary shows "
               "`archive-push` errors.",
               "Once fixed, the next archived segment clears the row."),
        fixes=("pgha backup",),
    ),
    Check(
        name="backup.repository",
        component="backup",
        target="the repository",
        checks="that `pgbackrest info` reads the repository",
        critical="it fails",
        only_when="`backup.enabled`",
        means="Neither the backup ages nor encryption can be checked; backups and restores will fail too.",
        steps=("`pgha backups` shows the same error; the observed column has pgBackRest's message.",
               "Check the repository (volume, S3 bucket and credentials, repository host) as for "
               "`backup.archiving`."),
        fixes=(),
    ),
    Check(
        name="backup.repository_size",
        component="backup",
        target="the repository",
        checks="the repository's size (`du` of the repository volume where it is mounted) and the use of "
               "its filesystem, against the newest full backup's stored size; with S3, the sum of the "
               "backup sets' stored sizes (report only)",
        warn="filesystem ≥ `audit.repo_warn_pct` used, or less free space than two full backups",
        critical="filesystem ≥ `audit.repo_critical_pct` used, or less free space than one full backup",
        thresholds=("audit.repo_warn_pct", "audit.repo_critical_pct", "backup.retention_full"),
        only_when="`backup.enabled`",
        means="The repository's filesystem (the Docker host's volume storage, or the repository host's) "
              "fills up: the next full backup, then WAL archiving, fail, and archiving failures make "
              "`pg_wal` grow on the primary.",
        steps=("How much each set holds: `pgha backups` (the repo column).",
               "Keep fewer full backups: lower `backup.retention_full` and run `pgha backup` (pgBackRest "
               "expires the older sets after a backup).",
               "Free space on the filesystem that holds the repository volume, or move the repository to "
               "a larger disk or to S3 (`backup.s3`)."),
        fixes=("pgha backup",),
    ),
    Check(
        name="backup.full_age",
        component="backup",
        target="the repository",
        checks="age of the newest good full backup against the schedule (`backup.full_every_h`)",
        warn=f"≥ {WARN_FACTOR:g} × `backup.full_every_h` (one scheduled run missed), or no full backup yet",
        critical=f"≥ {CRITICAL_FACTOR:g} × `backup.full_every_h`",
        thresholds=("backup.full_every_h",),
        only_when="`backup.enabled`",
        means="The scheduled full backup (deployment `weekly-full-backup`) did not run or failed: a "
              "restore replays more WAL, and the point-in-time window rests on older sets.",
        steps=("In the Prefect UI, the `backup` flow runs of the `weekly-full-backup` deployment and "
               "their logs; is the worker running (`pgha server status`)?",
               "Take one now: `pgha backup --type full`.",
               "Change `backup.full_every_h` together with the deployment's schedule."),
        fixes=("pgha backup", "pgha server start"),
    ),
    Check(
        name="backup.diff_age",
        component="backup",
        target="the repository",
        checks="age of the newest good diff or full backup (a full counts as a newer diff) against the "
               "schedule (`backup.diff_every_h`)",
        warn=f"≥ {WARN_FACTOR:g} × `backup.diff_every_h`, or no backup yet",
        critical=f"≥ {CRITICAL_FACTOR:g} × `backup.diff_every_h`",
        thresholds=("backup.diff_every_h",),
        only_when="`backup.enabled`",
        means="The scheduled diff backup (deployment `nightly-diff-backup`) did not run or failed.",
        steps=("The `nightly-diff-backup` runs in the Prefect UI; `pgha server status` for the worker.",
               "Take one now: `pgha backup --type diff`."),
        fixes=("pgha backup", "pgha server start"),
    ),
    Check(
        name="backup.encryption",
        component="backup",
        target="the repository",
        checks=f"the repository's cipher as `pgbackrest info` reports it (`{CIPHER_TYPE}` when encrypted)",
        warn="unencrypted while `backup.encrypt` is on",
        thresholds=("backup.encrypt",),
        only_when="`backup.enabled`",
        means="The repository was created before encryption; it cannot be switched in place, so its "
              "backups stay readable to whoever reads the repository.",
        steps=("Restore into a new scope, whose repository is created encrypted: "
               "`pgha restore --to TIME --into NEWSCOPE`; move the clients to it.",),
        fixes=("pgha restore",),
    ),
)
