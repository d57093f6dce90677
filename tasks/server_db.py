"""The Prefect server's database, as a file on this host: where it is and how big (for the audit).

pgha's server (a container, tasks/control_plane.py) keeps its SQLite file on its volume: the
worker's container mounts that volume read-only and names the file in $PGHA_SERVER_DB; on the
host, the file is found under the volume's mountpoint. A server pgha did not start: Prefect's
settings (`$PREFECT_HOME/prefect.db` unless `PREFECT_SERVER_DATABASE_CONNECTION_URL` points
elsewhere). Nothing here opens the database: a stat of the
file, its `-wal` and `-shm` companions, and of its filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path

from stack.audit_sizes import ServerDbObs

SQLITE_PREFIXES = ("sqlite+aiosqlite:///", "sqlite:///")


DB_ENV = "PGHA_SERVER_DB"


def database_path() -> Path | None:
    """The SQLite file of pgha's server, else of Prefect's connection URL (None: not SQLite, e.g. PostgreSQL)."""
    if os.environ.get(DB_ENV):
        return Path(os.environ[DB_ENV])
    try:
        from tasks import control_plane as cp
        from tasks import prefect_server as ps

        if (mount := cp.volume_path(ps.plane())) is not None:
            return Path(mount) / "prefect.db"
    except Exception:  # noqa: BLE001, S110 - no engine or no control plane: Prefect's own settings below
        pass
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    raw = url.get_secret_value() if url is not None else ""
    for prefix in SQLITE_PREFIXES:
        if raw.startswith(prefix):
            path = raw.removeprefix(prefix).split("?", 1)[0]
            return Path(path) if path and path != ":memory:" else None
    return None


def observe() -> ServerDbObs:
    from tasks import control_plane as cp
    from tasks import prefect_server as ps

    try:
        running = cp.running(ps.plane(), cp.SERVER_ROLE)
    except Exception:  # noqa: BLE001 - no engine answering: not a server pgha runs
        running = False
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
