"""What pgha keeps in its state directory, and what it prunes: pure decisions, no file is touched here.

Everything pgha writes under `$PGHA_STATE_DIR` has a bound, applied by the code that writes it
(never by a separate job):

- the operations journal (`<scope>/operations.jsonl`) is trimmed to its newest half when it
  passes `state.journal_kib`; the newest verification line of each backup set is kept beyond
  that cut (`pgha backups` shows it), and a first line records where the history now starts
  (`pgha history` says "unknown" for a leader change older than that, not "failover");
- drill charts (`<scope>/drills/*.png`): the newest `state.drill_charts` are kept when a drill
  writes one;
- moved-aside state directories (`<scope>.removed-<UTC time>/`, written by `down --volumes`
  while the backup repository is kept): removed once the repository they belong to is gone,
  when the next teardown of that scope runs; with an S3 repository they are kept (pgha cannot
  tell whether the bucket path still holds that repository);
- the Prefect server's and workers' logs (`server/*.log`): copied to `*.log.1` and emptied
  when they pass `SERVER_LOG_BYTES`, when pgha starts the process and at every health audit.

Everything else there is rewritten in place (specs, configs, certificates, baselines, pending
markers) or removed by the operation that made it, so it does not grow.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

JOURNAL_MARK = "journal-trimmed"  # the `operation` of the first line a trimmed journal starts with
VERIFY_OPERATION = "verify-restore"
KEPT_VERIFICATIONS = 200  # older sets' last verification lines kept across a trim
SERVER_LOG_BYTES = 10 * 2**20  # a server/worker log is rotated past this; one older file is kept
REMOVED_STAMP_RE = re.compile(r"\.removed-(\d{8}T\d{6}Z)$")


def _parse(line: str) -> dict[str, Any] | None:
    try:
        v = json.loads(line)
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def trim_journal(lines: list[str], max_bytes: int, now: float) -> list[str] | None:
    """The journal's lines after a trim, or None when it is within `max_bytes` (nothing to do).

    Keeps the newest lines that fill half of `max_bytes`, so a trim happens once per half of
    the bound, not at every append; before them a mark line (`operation` = `journal-trimmed`,
    `trimmed_before` = the time from which the history is whole) and the newest `verify-restore`
    line of each backup set cut off (at most `KEPT_VERIFICATIONS`). `trimmed_before` is the end
    of the newest line cut off: a leader change after it finds its operation in what is kept.
    """
    if sum(len(ln) + 1 for ln in lines) <= max_bytes:
        return None
    budget, keep_from = max_bytes // 2, len(lines)
    used = 0
    while keep_from > 0 and used + len(lines[keep_from - 1]) + 1 <= budget:
        keep_from -= 1
        used += len(lines[keep_from]) + 1
    kept, dropped = lines[keep_from:], lines[:keep_from]
    dropped_entries = [e for e in map(_parse, dropped) if e]
    # Every operation that ended after the newest dropped line is still there: from then on a
    # leader change finds its cause, before it the journal cannot tell.
    ends = [float(e["at"]) for e in dropped_entries if isinstance(e.get("at"), int | float)]
    boundary = round(max(ends), 3) if ends else round(now, 3)
    verified: dict[str, str] = {}
    labels_kept = {str(e.get("label")) for e in map(_parse, kept) if e and e.get("operation") == VERIFY_OPERATION}
    for ln in dropped:
        e = _parse(ln)
        if e and e.get("operation") == VERIFY_OPERATION and e.get("label") and str(e["label"]) not in labels_kept:
            verified.pop(str(e["label"]), None)
            verified[str(e["label"])] = ln  # newest last: dict order is the journal's order
    carried = list(verified.values())[-KEPT_VERIFICATIONS:]
    mark = {"at": round(now, 3), "operation": JOURNAL_MARK, "trimmed_before": boundary}
    return [json.dumps(mark), *carried, *kept]


def trimmed_before(journal: list[dict[str, Any]]) -> float | None:
    """The time before which the journal was cut (None: it holds every operation since it began)."""
    for e in journal:
        if e.get("operation") == JOURNAL_MARK and isinstance(e.get("trimmed_before"), int | float):
            return float(e["trimmed_before"])
    return None


def charts_to_remove(names: list[str], keep: int) -> list[str]:
    """The drill charts beyond the newest `keep` (names start with the drill's time, so they sort by age)."""
    charts = sorted(n for n in names if n.endswith(".png"))
    return charts[:-keep] if keep > 0 else charts


def removed_stamp(name: str) -> dt.datetime | None:
    """When a `<scope>.removed-<UTC time>` directory was moved aside (None: not such a name)."""
    m = REMOVED_STAMP_RE.search(name)
    if m is None:
        return None
    return dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


def obsolete_removed_dirs(names: list[str], s3: bool, repo_created: dt.datetime | None) -> list[str]:
    """The moved-aside state directories whose backup repository is gone (safe to delete).

    A directory moved aside at time T holds the secrets of the repository kept then (its
    passwords, CA, pgBackRest keys, the cipher passphrase of an encrypted repository). With the
    repository volume gone (`repo_created` None), or a volume of that name created after T (a
    later cluster's, made once the old one was deleted), that repository no longer exists. With
    S3 none is obsolete: the bucket may still hold it.
    """
    if s3:
        return []
    out = []
    for n in names:
        stamp = removed_stamp(n)
        if stamp is None:
            continue
        if repo_created is None or repo_created > stamp:
            out.append(n)
    return out


def log_needs_rotation(size: int, max_bytes: int = SERVER_LOG_BYTES) -> bool:
    return size > max_bytes
