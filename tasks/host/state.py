"""Where pgha keeps per-cluster state on the host: passwords and rendered config files."""

from __future__ import annotations

import os
from pathlib import Path


def state_root() -> Path:
    """`$PGHA_STATE_DIR`, else `$XDG_STATE_HOME/pgha`, else `~/.local/state/pgha`."""
    if env := os.environ.get("PGHA_STATE_DIR"):
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return (Path(xdg) / "pgha").resolve()


def cluster_dir(scope: str) -> Path:
    return state_root() / scope


def removed_dir(scope: str, stamp: str) -> Path:
    """Where `down --volumes` moves a cluster's state while its backup repository is kept."""
    return state_root() / f"{scope}.removed-{stamp}"


def removed_dirs(scope: str) -> list[Path]:
    """The moved-aside state directories of `scope`, oldest first."""
    root = state_root()
    return sorted(root.glob(f"{scope}.removed-*")) if root.is_dir() else []


def secrets_file(scope: str) -> Path:
    return cluster_dir(scope) / "secrets.json"


def config_dir(scope: str, member: str) -> Path:
    """The member's rendered files, mounted read-only at /etc/pgha in its container (bind-mounted on
    the local engine; on an engine of `hosts:` pushed into a volume, tasks/config_volume.py)."""
    return cluster_dir(scope) / "config" / member


def write_private(path: Path, text: str) -> bool:
    """Write `text` to a 0600 file if it differs; return True when the file changed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return True
