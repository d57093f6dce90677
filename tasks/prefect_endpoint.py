"""Where pgha's Prefect server answers: 127.0.0.1:$PGHA_SERVER_PORT (default 4200), and whether it does."""

from __future__ import annotations

import os

import httpx

from stack.errors import PghaError, UsageError

PORT_ENV = "PGHA_SERVER_PORT"
DEFAULT_PORT = 4200


class ServerError(PghaError):
    """The Prefect server or worker could not be started, reached or configured."""


def port() -> int:
    raw = os.environ.get(PORT_ENV, str(DEFAULT_PORT))
    if not raw.isdigit() or not 1024 <= int(raw) <= 65535:
        raise UsageError(f"{PORT_ENV} must be a port number 1024-65535, not {raw!r}")
    return int(raw)


def ui_url() -> str:
    return f"http://127.0.0.1:{port()}"


def api_url() -> str:
    return f"{ui_url()}/api"


def healthy(timeout: float = 2.0) -> bool:
    try:
        # trust_env=False: the server is on loopback; an environment proxy must not intercept it.
        return httpx.get(f"{api_url()}/health", timeout=timeout, trust_env=False).status_code == 200
    except (httpx.HTTPError, httpx.InvalidURL):
        return False
