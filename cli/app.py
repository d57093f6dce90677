"""`pgha`: the command line. The verbs live in one module per area and register on `cli.core.app`."""

from __future__ import annotations

import os

from cli import backup, cluster, drill, lab, operator, rolling, server, site, switchover  # noqa: F401 - importing registers the verbs
from cli.core import app


def main() -> None:
    # Before any Prefect import (the flows import it lazily): no analytics from the servers the CLI
    # starts; set here, not on import, so importing a CLI module changes no environment.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    app(prog_name="pgha")


if __name__ == "__main__":
    main()
