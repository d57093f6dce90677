"""Health-audit decisions for backups: WAL archiving, the age of the newest backups, encryption.

Pure, like `stack.audit` (whose `Finding`/`Level` it returns): `flows/audit.py` gathers
`pg_stat_archiver` of the primary and `pgbackrest info` of the repository and calls these.

- `backup.archiving` (primary): critical when the archiver's last failure is newer than its
  last success (WAL is piling up in pg_wal and point-in-time recovery stops at the last
  archived segment); ok otherwise, with the counts.
- `backup.full_age` / `backup.diff_age`: the newest full (and the newest diff or full, a full
  being a newer diff) against the deployments' schedules (`backup.full_every_h`, weekly;
  `backup.diff_every_h`, daily): warn at 1.5x the interval (one run missed), critical at 2x.
  No backup at all is a warning (a new cluster), never silence.
- `backup.encryption`: the repository's cipher as `pgbackrest info` reports it; a warning when
  it is unencrypted while the spec asks for encryption (a repository made before it existed).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from stack.backup import CIPHER_TYPE
from stack.backup_info import BackupSet
from stack.findings import Finding, Level
from stack.spec import ClusterSpec

WARN_FACTOR = 1.5
CRITICAL_FACTOR = 2.0


@dataclass(frozen=True)
class ArchiverObs:
    """pg_stat_archiver of the primary."""

    archived_count: int
    failed_count: int
    last_archived_wal: str | None = None
    last_archived_time: dt.datetime | None = None
    last_failed_wal: str | None = None
    last_failed_time: dt.datetime | None = None


@dataclass(frozen=True)
class RepoObs:
    """What `pgbackrest info` says of the stanza: its sets (oldest first) and cipher."""

    sets: list[BackupSet]
    cipher: str


def archiving_failing(a: ArchiverObs) -> bool:
    """The last archive attempt failed: a failure newer than the last success (or no success at all)."""
    if a.failed_count == 0 or a.last_failed_time is None:
        return False
    return a.last_archived_time is None or a.last_failed_time > a.last_archived_time


def check_archiving(a: ArchiverObs | None, spec: ClusterSpec, error: str = "") -> list[Finding]:
    if not spec.backup.enabled:
        return []
    if a is None:
        return [Finding("backup.archiving", "primary", Level.CRITICAL, error or "pg_stat_archiver unreadable",
                        "readable", "the primary does not answer through the R/W port")]
    if archiving_failing(a):
        return [Finding("backup.archiving", "primary", Level.CRITICAL,
                        f"failing: {a.failed_count} failures, last {a.last_failed_wal} at {_t(a.last_failed_time)}; "
                        f"last archived {a.last_archived_wal or 'none'} at {_t(a.last_archived_time)}",
                        "last failure older than last success",
                        "WAL piles up in pg_wal and PITR stops at the last archived segment: "
                        "is the repository writable? `pgbackrest check`")]
    return [Finding("backup.archiving", "primary", Level.OK,
                    f"{a.archived_count} archived, last {a.last_archived_wal or 'none'} at {_t(a.last_archived_time)}"
                    + (f"; {a.failed_count} earlier failures, since recovered" if a.failed_count else ""),
                    "last failure older than last success")]


def _t(v: dt.datetime | None) -> str:
    return v.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S+00") if v else "never"


def _age_finding(check: str, newest: BackupSet | None, every_h: float, now: dt.datetime, what: str,
                 how: str) -> Finding:
    warn_h, crit_h = every_h * WARN_FACTOR, every_h * CRITICAL_FACTOR
    threshold = f"warn {warn_h:g} h, critical {crit_h:g} h (scheduled every {every_h:g} h)"
    if newest is None:
        return Finding(check, "repository", Level.WARN, f"no {what} backup yet", threshold, how)
    age_h = (now - newest.stop).total_seconds() / 3600
    lvl = Level.CRITICAL if age_h >= crit_h else Level.WARN if age_h >= warn_h else Level.OK
    return Finding(check, "repository", lvl, f"{newest.label}: {age_h:.1f} h old", threshold,
                   "" if lvl == Level.OK else f"the scheduled {what} backup did not run or failed: {how}")


def check_backup_ages(repo: RepoObs | None, spec: ClusterSpec, now: dt.datetime, error: str = "") -> list[Finding]:
    b = spec.backup
    if not b.enabled:
        return []
    if repo is None:
        return [Finding("backup.repository", "repository", Level.CRITICAL, error or "pgbackrest info failed",
                        "readable", "`pgha backups` / `pgbackrest info` in a node says why")]
    good = [s for s in repo.sets if not s.error]
    full = max((s for s in good if s.type == "full"), key=lambda s: s.stop, default=None)
    diff = max((s for s in good if s.type in ("full", "diff")), key=lambda s: s.stop, default=None)
    return [
        _age_finding("backup.full_age", full, b.full_every_h, now, "full",
                     "check the weekly-full-backup deployment, or run `pgha backup --type full`"),
        _age_finding("backup.diff_age", diff, b.diff_every_h, now, "diff",
                     "check the nightly-diff-backup deployment, or run `pgha backup --type diff`"),
        check_encryption(repo.cipher, spec),
    ]


def check_encryption(cipher: str, spec: ClusterSpec) -> Finding:
    encrypted = cipher not in ("", "none")
    if encrypted or not spec.backup.encrypt:
        return Finding("backup.encryption", "repository", Level.OK, cipher or "none",
                       CIPHER_TYPE if spec.backup.encrypt else "none (backup.encrypt: false)")
    return Finding("backup.encryption", "repository", Level.WARN,
                   "none: the repository was created before encryption and cannot be switched in place",
                   CIPHER_TYPE, "restore --into a new scope (its repository is encrypted) and move clients to it")
