"""The cluster's operations journal: one JSON line per pgha operation, in the state directory.

`flows.steps.ops.operation` writes a line when an operation ends (name, start, end, outcome,
the Prefect run when there is one); verify-restore adds the set it checked. `pgha history`
reads it to say which operation caused a leader change (a switchover inside a drill, an
upgrade, a restart), and `pgha backups` the last verification of each set. Append-only,
0600, never a secret (operation names, times, labels). Bounded: past `max_bytes` it is cut to
its newest half (`stack.housekeeping.trim_journal` decides what is kept).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from stack.housekeeping import trim_journal
from tasks.host.state import cluster_dir, write_private

FILE = "operations.jsonl"
KEEP_BYTES = 1024 * 1024  # spec state.journal_kib's default


def record(scope: str, entry: dict[str, Any], max_bytes: int = KEEP_BYTES) -> None:
    """Append one entry (best effort: a full disk must not fail the operation it describes).

    Never creates the cluster's state directory: `down --volumes` removes it on purpose, and
    its own journal line must not bring it back.
    """
    path = cluster_dir(scope) / FILE
    if not path.parent.is_dir():
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(json.dumps({"at": round(time.time(), 3), **entry}, default=str) + "\n")
        if path.stat().st_size > max_bytes:
            trim(path, max_bytes)
    except OSError:
        pass


def trim(path: Path, max_bytes: int) -> bool:
    """Cut the journal at `path` to its newest half when it passes `max_bytes` (atomically: a
    reader sees the old or the new file); True when it was cut."""
    kept = trim_journal(path.read_text(errors="replace").splitlines(), max_bytes, time.time())
    if kept is None:
        return False
    write_private(path, "\n".join(kept) + "\n")
    return True


def entries(scope: str) -> list[dict[str, Any]]:
    """Every entry, oldest first (unreadable lines skipped)."""
    path = cluster_dir(scope) / FILE
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for ln in text.splitlines():
        try:
            out.append(dict(json.loads(ln)))
        except ValueError:
            continue
    return out


def run_id() -> str:
    """The current Prefect flow run's id ('' outside a run, or when Prefect is not loaded)."""
    import sys

    if "prefect" not in sys.modules:
        return ""
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id or "")
    except Exception:  # noqa: BLE001 - a journal line without a run id is still useful
        return ""
