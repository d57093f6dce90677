"""The cluster's operations journal: one JSON line per pgha operation, in the state directory.

`flows.steps.ops.operation` writes a line when an operation ends (name, start, end, outcome,
the Prefect run when there is one); verify-restore adds the set it checked. `pgha history`
reads it to say which operation caused a leader change (a switchover inside a drill, an
upgrade, a restart), and `pgha backups` the last verification of each set. Append-only,
0600, never a secret (operation names, times, labels).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tasks.host.state import cluster_dir

FILE = "operations.jsonl"
KEEP_BYTES = 1_000_000  # the file is cut to its newest half beyond this


def record(scope: str, entry: dict[str, Any]) -> None:
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
        if path.stat().st_size > KEEP_BYTES:
            lines = path.read_text().splitlines()[-KEEP_BYTES // 400:]
            path.write_text("\n".join(lines) + "\n")
    except OSError:
        pass


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
