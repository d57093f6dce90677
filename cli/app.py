"""`pgha`: the command line. The verbs live in one module per area and register on `cli.core.app`."""

from __future__ import annotations

from cli import backup, cluster, drill, lab, operator, rolling, server, site, switchover  # noqa: F401 - importing registers the verbs
from cli.core import app


def main() -> None:
    app(prog_name="pgha")


if __name__ == "__main__":
    main()
