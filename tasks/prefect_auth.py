"""The Prefect API's auth secret: Prefect 3's self-hosted basic auth, kept in one 0600 file.

`<state>/server/api-auth` holds "pgha:<token>"; it is the only place the secret is stored. It
reaches the server and the worker as a read-only mount their entrypoint exports into the
process's environment (tasks/control_plane.py), and the CLI's own API calls as
PREFECT_API_AUTH_STRING in its environment, never in argv nor in a container's configuration.
"""

from __future__ import annotations

from pathlib import Path

from stack.errors import UsageError
from tasks.host.state import state_root


def server_dir() -> Path:
    """`<state>/server/`: the auth file, the server's URL, the deploy fingerprint, remote workers' logs."""
    d = state_root() / "server"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


AUTH_FILE = "api-auth"  # "pgha:<token>", 0600 in the state directory's server/ dir
AUTH_USER = "pgha"


def auth_file() -> Path:
    return server_dir() / AUTH_FILE


def auth_string(create: bool = False) -> str | None:
    """The server's basic-auth string ("pgha:<token>") from its 0600 file; made once when `create`.

    The file is the only place it is stored. The CLI's `prefect` calls get it as
    PREFECT_API_AUTH_STRING in their environment, never in argv; the server and the worker read it
    from a read-only mount (their /proc/<pid>/environ is readable by root only, who can read the
    file anyway).
    """
    path = auth_file()
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    if text.startswith(f"{AUTH_USER}:") and len(text) > len(AUTH_USER) + 20:
        path.chmod(0o600)
        return text
    if not create:
        return None
    import secrets

    from tasks.host.state import write_private

    text = f"{AUTH_USER}:{secrets.token_urlsafe(32)}"
    write_private(path, text + "\n")
    return text


def read_auth_file(path: Path) -> str:
    """A copy of the server's `api-auth` file: must be private (0600) and hold `user:password`."""
    try:
        st = path.stat()
        text = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the auth file {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise UsageError(f"the auth file {path} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it")
    if ":" not in text or len(text) < 8:
        raise UsageError(f"the auth file {path} does not hold user:password (copy {AUTH_FILE} from the server's "
                         "state directory)")
    return text


def basic_auth_header(auth: str | None) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
