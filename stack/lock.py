"""One mutating flow per cluster: an exclusive lock file per scope in the state directory.

`flock` is released by the kernel when the holder dies, so a killed flow never leaves the
cluster locked. Read-only commands (status, audits) never take it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from stack.errors import StateError
from stack.state import cluster_dir


@contextmanager
def mutating(scope: str, holder: str, wait_seconds: float = 0) -> Iterator[None]:
    """Hold the cluster's mutating lock; refuse (naming the holder) or wait up to `wait_seconds`."""
    path = cluster_dir(scope) / "mutating.lock"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    current = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another flow"
                    raise StateError(f"cluster {scope} is busy: {current} holds its lock; "
                                     "retry when it ends") from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder} (pid {os.getpid()}, since {time.strftime('%H:%M:%S')})".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holder_name(operation: str) -> str:
    """'<operation> flow run <name>' inside a flow, else '<operation>'."""
    try:
        from prefect.runtime import flow_run

        name = flow_run.name
        return f"{operation} flow run '{name}'" if name else operation
    except Exception:  # noqa: BLE001 - outside Prefect there is simply no run name
        return operation
