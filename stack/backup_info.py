"""What pgBackRest says, parsed once: `pgbackrest info --output=json` and `verify`'s text.

Pure functions over the text or JSON the adapter (tasks/pgbackrest.py) reads; the decisions taken on
the result are `stack.backup_decisions`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BackupSet:
    """One backup set from `pgbackrest info --output=json`."""

    label: str
    type: str
    start: dt.datetime
    stop: dt.datetime
    size: int  # database size, bytes
    repo_size: int  # what this set added to the repository (compressed; pgBackRest's "delta"), bytes
    wal_start: str
    wal_stop: str
    error: bool
    annotation: dict[str, str] = field(default_factory=dict)
    prior: str | None = None


def _ts(v: Any) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(v), dt.UTC)


def parse_info(payload: Any, stanza: str) -> tuple[list[BackupSet], str | None, str | None]:
    """Backup sets (oldest first) and the archived WAL range (min, max) of one stanza."""
    if not isinstance(payload, list):
        return [], None, None
    for st in payload:
        if st.get("name") != stanza:
            continue
        sets = []
        for b in st.get("backup", []) or []:
            info = b.get("info", {}) or {}
            repo = info.get("repository", {}) or {}
            arch = b.get("archive", {}) or {}
            sets.append(BackupSet(
                label=str(b.get("label")), type=str(b.get("type")),
                start=_ts(b["timestamp"]["start"]), stop=_ts(b["timestamp"]["stop"]),
                size=int(info.get("size") or 0), repo_size=int(repo.get("delta") or repo.get("size") or 0),
                wal_start=str(arch.get("start") or ""), wal_stop=str(arch.get("stop") or ""),
                error=bool(b.get("error", False)),
                annotation={str(k): str(v) for k, v in (b.get("annotation") or {}).items()},
                prior=b.get("prior"),
            ))
        mins = [a.get("min") for a in st.get("archive", []) or [] if a.get("min")]
        maxs = [a.get("max") for a in st.get("archive", []) or [] if a.get("max")]
        return sorted(sets, key=lambda s: s.start), (min(mins) if mins else None), (max(maxs) if maxs else None)
    return [], None, None


def parse_cipher(payload: Any, stanza: str) -> str:
    """The cipher of one stanza's repository in `pgbackrest info --output=json` ("none" if absent)."""
    for st in payload if isinstance(payload, list) else []:
        if st.get("name") == stanza:
            repos = [r for r in st.get("repo", []) or [] if isinstance(r, dict)]
            return str((repos[0].get("cipher") if repos else None) or st.get("cipher") or "none")
    return "none"


def verify_problems(text: str) -> list[str]:
    """Lines of `pgbackrest verify --output=text --verbose` that report a damaged or missing file.

    A clean repository says `status: ok` per stanza, `status: valid` per backup, and zero
    for every counter (`missing: 0, checksum invalid: 0, size invalid: 0, other: 0`).
    """
    bad = []
    for ln in text.splitlines():
        status = re.search(r"status: (\w+)", ln)
        counts = re.findall(r"(missing|checksum invalid|size invalid|other): ([1-9]\d*)", ln)
        if (status and status.group(1) not in ("ok", "valid")) or counts:
            bad.append(ln.strip())
    return bad
