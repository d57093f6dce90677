"""Health-audit decisions for the sizes pgha bounds: WAL on each data volume, the backup
repository, the Prefect server's database.

Pure, like `stack.audit`: `flows/audit.py` gathers one `df` + `du` per node (with the data
volume's use for `disk.data_volume`), one `du` + `df` of the repository where it is mounted,
and a stat of the server's database file on this host, and calls these.

- `disk.wal` (each running node): `pg_wal` against what checkpoints keep (`max_wal_size` +
  `wal_keep_size`, from the spec's PostgreSQL parameters): warn at `audit.wal_warn_ratio`
  times that, critical at `audit.wal_critical_ratio` times; a warning too when the volume's
  free space is below that normal size (a busy hour between two checkpoints can fill it).
- `backup.repository_size` (the repository): the repository's bytes and its filesystem's use,
  graded by `audit.repo_warn_pct` / `audit.repo_critical_pct`; a warning when less than two
  of the newest full backup fit in the free space, critical when not even one does (the next
  full backup would fail). With S3 there is no filesystem: the sets' sizes are reported.
- `server.database` (this host): the Prefect server's SQLite file with its `-wal` file against
  `audit.server_db_warn_mb` / `audit.server_db_critical_mb`; a warning too when its filesystem
  has less free space than the file's size. A database that cannot be read here (another
  machine's server, a PostgreSQL-backed server) is an ok row saying so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stack.backup_info import BackupSet
from stack.findings import Finding, Level, grade
from stack.spec import AuditThresholds, ClusterSpec

PG_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
PG_DEFAULT_MAX_WAL_SIZE = "1GB"  # PostgreSQL's default when neither pgha nor the spec sets it
_PG_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?b)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class DiskObs:
    """One node's data volume: its filesystem's used and available bytes, and `pg_wal`'s size."""

    used_bytes: int
    avail_bytes: int
    wal_bytes: int | None  # None: pg_wal unreadable (no PGDATA yet, a node being rebuilt)

    @property
    def used_pct(self) -> float:
        # df's own percentage rounds up and counts reserved blocks; used/(used+avail) is what fills up.
        return 100.0 * self.used_bytes / max(self.used_bytes + self.avail_bytes, 1)


@dataclass(frozen=True)
class RepoSizeObs:
    """The repository volume as mounted in the container that reads it."""

    repo_bytes: int
    used_bytes: int
    avail_bytes: int


@dataclass(frozen=True)
class ServerDbObs:
    """The Prefect server's database as seen from this host."""

    path: str  # the SQLite file, or "" when the server does not use one
    db_bytes: int | None = None  # the file and its -wal/-shm files (None: not readable here)
    avail_bytes: int | None = None  # free space of its filesystem
    server_running: bool = False  # a server pgha started from this state directory runs
    note: str = ""  # why it cannot be read


DU_MARK = "pgha-du"  # separates `df -Pk` from each `du -sk` in one exec's output


def parse_df_du(out: str, n: int) -> tuple[int, int, list[int | None]] | None:
    """(used, available) bytes from `df -Pk`, then the bytes of each of `n` `du -sk` after a `DU_MARK`
    line (None: that du printed nothing); None when df's line is missing or unreadable."""
    parts = out.split(DU_MARK)
    lines = parts[0].strip().splitlines()
    if len(lines) < 2:
        return None
    fields = lines[-1].split()
    try:
        used, avail = int(fields[2]) * 1024, int(fields[3]) * 1024
    except (IndexError, ValueError):
        return None
    sizes: list[int | None] = []
    for part in parts[1:1 + n]:
        words = part.split()
        sizes.append(int(words[0]) * 1024 if words and words[0].isdigit() else None)
    return used, avail, sizes + [None] * (n - len(sizes))


def pg_size_bytes(value: str | int, default_unit: str = "mb") -> int | None:
    """A PostgreSQL size setting in bytes ('1GB', '128MB', '2048' in `default_unit`); None if unparsable."""
    m = _PG_SIZE_RE.match(str(value))
    if m is None:
        return None
    return int(m.group(1)) * PG_UNITS[(m.group(2) or default_unit).lower()]


def wal_normal_bytes(parameters: dict[str, str | int]) -> int:
    """What pg_wal holds in steady state: `max_wal_size` + `wal_keep_size` (PostgreSQL's units)."""
    max_wal = pg_size_bytes(parameters.get("max_wal_size", PG_DEFAULT_MAX_WAL_SIZE)) or 2**30
    keep = pg_size_bytes(parameters.get("wal_keep_size", 0)) or 0
    return max_wal + keep


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # unreachable


def _worse(a: Level, b: Level) -> Level:
    order = (Level.OK, Level.WARN, Level.CRITICAL)
    return max(a, b, key=order.index)


def check_wal(disks: dict[str, DiskObs | None], spec: ClusterSpec, th: AuditThresholds,
              parameters: dict[str, str | int]) -> list[Finding]:
    normal = wal_normal_bytes(parameters)
    threshold = (f"normal up to {human(normal)} (max_wal_size + wal_keep_size); warn {th.wal_warn_ratio:g}x, "
                 f"critical {th.wal_critical_ratio:g}x")
    out: list[Finding] = []
    for member in spec.node_names():
        d = disks.get(member)
        if d is None or d.wal_bytes is None:
            continue  # a stopped node is reported by the container and Patroni checks
        ratio = d.wal_bytes / normal
        lvl = grade(ratio, th.wal_warn_ratio, th.wal_critical_ratio)
        hint = "" if lvl == Level.OK else ("WAL is kept beyond what checkpoints allow: an inactive slot "
                                           "(postgres.inactive_slot), failing archiving (backup.archiving), or "
                                           "checkpoints that cannot finish")
        if d.avail_bytes < normal:
            lvl = _worse(lvl, Level.WARN)
            hint = hint or (f"volume {spec.volume(member)} has less free space than pg_wal may normally use: "
                            "a busy hour can fill it")
        out.append(Finding("disk.wal", member, lvl,
                           f"{human(d.wal_bytes)} in pg_wal ({ratio:.2f}x normal); {human(d.avail_bytes)} free "
                           "on the volume", threshold, hint))
    return out


def newest_full(sets: list[BackupSet]) -> BackupSet | None:
    return max((s for s in sets if s.type == "full" and not s.error), key=lambda s: s.stop, default=None)


def check_repository_size(obs: RepoSizeObs | None, sets: list[BackupSet] | None, spec: ClusterSpec,
                          th: AuditThresholds, error: str = "") -> list[Finding]:
    if not spec.backup.enabled:
        return []
    full = newest_full(sets or [])
    if spec.backup.s3 is not None:
        if sets is None:
            return []  # backup.repository reports the unreadable repository
        stored = sum(s.repo_size for s in sets)
        return [Finding("backup.repository_size", "repository", Level.OK,
                        f"{human(stored)} in {len(sets)} backup sets (S3; archived WAL not counted)",
                        "report only: the bucket's capacity is not known to pgha")]
    threshold = (f"filesystem warn {th.repo_warn_pct:g}%, critical {th.repo_critical_pct:g}%; "
                 "room for two full backups")
    if obs is None:
        return [Finding("backup.repository_size", "repository", Level.WARN, error or "not measured", threshold,
                        "no container that mounts the repository answered `du`")]
    pct = 100.0 * obs.used_bytes / max(obs.used_bytes + obs.avail_bytes, 1)
    lvl = grade(pct, th.repo_warn_pct, th.repo_critical_pct)
    hint = "" if lvl == Level.OK else "the repository's filesystem fills up: expire older backups or add space"
    if full is not None and full.repo_size > 0:
        if obs.avail_bytes < full.repo_size:
            lvl, hint = Level.CRITICAL, (f"the next full backup ({human(full.repo_size)} last time) does not fit "
                                         "in the free space")
        elif obs.avail_bytes < 2 * full.repo_size:
            lvl = _worse(lvl, Level.WARN)
            hint = hint or f"less free space than two full backups ({human(full.repo_size)} each last time)"
    fits = f", the newest full {human(full.repo_size)}" if full is not None else ""
    return [Finding("backup.repository_size", "repository", lvl,
                    f"{human(obs.repo_bytes)} in the repository; filesystem {pct:.0f}% used, "
                    f"{human(obs.avail_bytes)} free{fits}", threshold, hint)]


def check_server_db(obs: ServerDbObs | None, th: AuditThresholds, error: str = "") -> list[Finding]:
    threshold = f"warn {th.server_db_warn_mb:g} MiB, critical {th.server_db_critical_mb:g} MiB"
    if obs is None or obs.db_bytes is None:
        why = error or (obs.note if obs else "") or "not readable here"
        return [Finding("server.database", "Prefect server", Level.OK, f"size unknown: {why}", threshold)]
    mib = obs.db_bytes / 2**20
    lvl = grade(mib, th.server_db_warn_mb, th.server_db_critical_mb)
    hint = "" if lvl == Level.OK else ("run history grows past its retention: check PGHA_HISTORY_RETENTION_DAYS "
                                       "(`pgha server status` shows what the server keeps)")
    if obs.avail_bytes is not None and obs.avail_bytes < obs.db_bytes:
        lvl = _worse(lvl, Level.WARN)
        hint = hint or "its filesystem has less free space than the database: the server fails when it is full"
    free = f"; {human(obs.avail_bytes)} free on its filesystem" if obs.avail_bytes is not None else ""
    running = "" if obs.server_running else " (no server of this state directory runs)"
    return [Finding("server.database", "Prefect server", lvl, f"{human(obs.db_bytes)} in {obs.path}{free}{running}",
                    threshold, hint)]
