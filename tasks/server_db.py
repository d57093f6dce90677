"""The Prefect server's database, as a file on this host: where it is and how big (for the audit).

Prefect keeps its server's state in SQLite at `$PREFECT_HOME/prefect.db` unless
`PREFECT_SERVER_DATABASE_CONNECTION_URL` points elsewhere. The server, the worker and the CLI
of one state directory share one environment (`tasks.prefect_server.env`), so a flow run
resolves the same file the server writes. Nothing here opens the database: a stat of the
file, its `-wal` and `-shm` companions, and of its filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path

from stack.audit_sizes import ServerDbObs

SQLITE_PREFIXES = ("sqlite+aiosqlite:///", "sqlite:///")


def database_path() -> Path | None:
    """The SQLite file of the server's connection URL (None: not SQLite, e.g. PostgreSQL)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    raw = url.get_secret_value() if url is not None else ""
    for prefix in SQLITE_PREFIXES:
        if raw.startswith(prefix):
            path = raw.removeprefix(prefix).split("?", 1)[0]
            return Path(path) if path and path != ":memory:" else None
    return None


def observe() -> ServerDbObs:
    from tasks.prefect_server import SERVER

    running = SERVER.pid() is not None
    path = database_path()
    if path is None:
        return ServerDbObs("", server_running=running, note="the server's database is not a SQLite file on this host")
    if not path.is_file():
        return ServerDbObs(str(path), server_running=running, note=f"no database file at {path} on this host")
    size = 0
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            size += p.stat().st_blocks * 512  # on disk: a sparse or preallocated file counts what it holds
        except OSError:
            continue
    st = os.statvfs(path.parent)
    return ServerDbObs(str(path), db_bytes=size, avail_bytes=st.f_bavail * st.f_frsize, server_running=running)
