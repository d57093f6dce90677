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
from typing import Annotated

from pydantic import Field

from stack.errors import StateError
from tasks.host.state import cluster_dir

# A flow parameter: how long a mutating flow waits for the lock (0: refuse at once).
WaitSeconds = Annotated[float, Field(ge=0, le=86400, description="seconds to wait for another mutating flow on this cluster (0: refuse at once)")]
MAX_WAIT_SECONDS = 86400


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
                    current = os.pread(fd, 600, 0).decode(errors="replace").strip() or "another flow"
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
    """"<operation> flow run '<name>' (id <uuid>, <UI link>)" inside a flow, else '<operation>'.

    The id and link let whoever is refused find the holding run in the UI or with
    `prefect flow-run inspect <id>`; the link needs PREFECT_UI_URL (set by `make server`).
    """
    try:
        from prefect.runtime import flow_run

        name = flow_run.name
        if not name:
            return operation
        run_id = flow_run.id
        url = None
        try:
            # Built here: prefect.runtime's flow_run.ui_url points at an old UI route (/flow-runs/...).
            from prefect.settings import PREFECT_UI_URL

            base = PREFECT_UI_URL.value()
            url = f"{base.rstrip('/')}/runs/flow-run/{run_id}" if base and run_id else None
        except Exception:  # noqa: BLE001 - no UI (ephemeral API): the id is enough
            url = None
        extra = ", ".join(x for x in (f"id {run_id}" if run_id else "", url or "") if x)
        return f"{operation} flow run '{name}'" + (f" ({extra})" if extra else "")
    except Exception:  # noqa: BLE001 - outside Prefect there is simply no run name
        return operation
