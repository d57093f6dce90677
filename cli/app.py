"""`pgha`: the command line. The verbs live in one module per area and register on `cli.core.app`.

A run imports only the area of the verb it names (`VERB_AREAS`): `pgha audit` does not pay for
the upgrade, backup and lab verbs' imports. Anything else (`pgha`, `--help`, a verb not in the
table) imports every area, so the table can only make a run faster, never change what it does;
`from cli.app import app` (the tests, the docs' CLI reference) is the app with every verb.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

AREAS = ("backup", "cluster", "drill", "lab", "operator", "rolling", "server", "site", "switchover")
# Top-level verb or group -> the area module that registers it (tests/unit/test_cli_app.py checks it).
VERB_AREAS: dict[str, str] = {
    "backup": "backup", "dump": "backup", "verify-restore": "backup", "restore": "backup",
    "up": "cluster", "down": "cluster", "status": "cluster", "dsn": "cluster", "images": "cluster",
    "drill": "drill", "audit": "drill",
    "lab": "lab",
    "restart": "operator", "reinit": "operator", "recover-from-delayed": "operator", "pause": "operator",
    "resume": "operator", "logs": "operator", "psql": "operator", "backups": "operator", "history": "operator",
    "report": "operator", "certs": "operator",
    "upgrade": "rolling", "scale": "rolling", "config": "rolling", "etcd": "rolling",
    "server": "server", "alerts": "server", "worker": "server",
    "site": "site",
    "switchover": "switchover",
}


def load(verb: str | None = None) -> Any:
    """`cli.core.app` with the area of `verb` registered (every area when `verb` is None or unknown)."""
    from cli.core import app

    area = VERB_AREAS.get(verb or "")
    for name in (area,) if area else AREAS:
        importlib.import_module(f"cli.{name}")
    if len(app.registered_commands) + len(app.registered_groups) < 2:
        # Typer turns an app of one command into that command (`pgha switchover` would lose its verb).
        for name in AREAS:
            importlib.import_module(f"cli.{name}")
    return app


def __getattr__(name: str) -> Any:
    if name == "app":  # `from cli.app import app`: every verb registered
        return load()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    # Before any Prefect import (the flows import it lazily): no analytics from the servers the CLI
    # starts; set here, not on import, so importing a CLI module changes no environment.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    verb = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    try:
        load(verb)(prog_name="pgha")
    except SystemExit as exc:
        from cli.core import EXIT, exit_now

        if EXIT.fast:  # the verb asked for it (`pgha audit`): what it ran is done and flushed
            exit_now(exc.code)
        raise


if __name__ == "__main__":
    main()
