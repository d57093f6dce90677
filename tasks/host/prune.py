"""Pruning of the state directory, applied by the code that writes there (`stack.housekeeping` decides).

Every function here is best effort: a file that cannot be removed is left for the next time,
never an error for the operation that called it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
from pathlib import Path

from stack.housekeeping import SERVER_LOG_BYTES, charts_to_remove, log_needs_rotation, obsolete_removed_dirs
from tasks.host.state import cluster_dir, removed_dirs, state_root

DRILLS_SUBDIR = "drills"


def drills_dir(scope: str) -> Path:
    return cluster_dir(scope) / DRILLS_SUBDIR


def prune_drill_charts(scope: str, keep: int) -> list[str]:
    """Delete the drill charts beyond the newest `keep`; the names deleted."""
    d = drills_dir(scope)
    if not d.is_dir():
        return []
    gone = []
    for name in charts_to_remove([p.name for p in d.iterdir() if p.is_file()], keep):
        with contextlib.suppress(OSError):
            (d / name).unlink()
            gone.append(name)
    return gone


def prune_removed_dirs(scope: str, s3: bool, repo_created: dt.datetime | None) -> list[str]:
    """Delete `scope`'s moved-aside state directories whose backup repository is gone; their paths."""
    by_name = {p.name: p for p in removed_dirs(scope)}
    gone = []
    for name in obsolete_removed_dirs(sorted(by_name), s3, repo_created):
        shutil.rmtree(by_name[name], ignore_errors=True)
        if not by_name[name].exists():
            gone.append(str(by_name[name]))
    return gone


def rotate_log(path: Path, max_bytes: int = SERVER_LOG_BYTES) -> bool:
    """Copy a log past `max_bytes` to `<name>.1` (replacing the older copy) and empty it; True when done.

    Copy-and-truncate, not rename: the process writing it keeps its file open in append mode
    (O_APPEND), so after the truncation its next line lands at the start of the same file. A
    line written between the copy and the truncation is lost, the price of not restarting it.
    """
    try:
        if not log_needs_rotation(path.stat().st_size, max_bytes):
            return False
        older = path.with_name(path.name + ".1")
        shutil.copyfile(path, older)
        older.chmod(0o600)
        with open(path, "r+b") as fh:
            fh.truncate(0)
        return True
    except OSError:
        return False


def rotate_server_logs(max_bytes: int = SERVER_LOG_BYTES) -> list[str]:
    """Rotate the logs of the Prefect server and workers pgha started from this state directory."""
    d = state_root() / "server"
    if not d.is_dir():
        return []
    return [p.name for p in sorted(d.glob("*.log")) if rotate_log(p, max_bytes)]

