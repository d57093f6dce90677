"""The local Prefect server (start, stop, status) and its alert automations (alerts apply)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cli import render
from cli.core import SERVER, Done, app, command

server_app = typer.Typer(no_args_is_help=True, help="The local Prefect server, work pool, deployments and worker.")
alerts_app = typer.Typer(no_args_is_help=True, help="Alert automations defined in deployments/alerts.yaml.")
app.add_typer(server_app, name="server", rich_help_panel=SERVER)
app.add_typer(alerts_app, name="alerts", rich_help_panel=SERVER)


def progress(lines: list[str]) -> None:
    for line in lines:
        render.line(f"pgha: {line}")


@server_app.command("start")
@command()
def server_start(alerts: bool = typer.Option(True, "--alerts/--no-alerts", help="apply deployments/alerts.yaml")) -> None:
    """Start (or keep) the server and worker containers, work pool, deployments and alerts; idempotent.

    The server and the worker run as containers on the local Docker engine (restart unless-stopped,
    health-checked), so a crash, an OOM kill or a reboot brings them back by itself.

    Example: pgha server start --no-alerts
    """
    from tasks import prefect_server as ps
    from tasks.prefect_auth import auth_file

    progress(ps.start_all(with_alerts=alerts))
    render.line(f"UI: {ps.ui_url()} (login: the contents of {auth_file()})")
    render.line(f"from a shell: export PREFECT_API_URL={ps.api_url()} PREFECT_API_AUTH_STRING=\"$(cat {auth_file()})\"")


@server_app.command("stop")
@command()
def server_stop(volumes: bool = typer.Option(False, "--volumes", help="also delete the server's database "
                                             "volume (every run's history, deployments and alerts)")) -> None:
    """Stop and remove the worker's and the server's containers (nothing else); the database is kept.

    Example: pgha server stop
    """
    from tasks import prefect_server as ps

    progress(ps.stop_all(volume=volumes))


@server_app.command("status")
@command(render.server_status, failed=lambda st: not st["server_healthy"])
def server_status(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> Done[dict[str, Any]]:
    """How the server and worker are supervised (containers, restart policy and count, health, started
    at), URLs, database and history; exit 1 when the server does not answer.

    Example: pgha server status --json
    """
    from tasks import prefect_server as ps

    return Done(ps.status())


@alerts_app.command("apply")
@command()
def alerts_apply(file: Path | None = typer.Option(None, "--file", help="alerts file (default deployments/alerts.yaml)"),
                 scope: list[str] = typer.Option([], "--scope", help="clusters watched by the proactive alerts "  # noqa: B008
                                                 "(repeatable; default: every cluster brought up from here)")) -> None:
    """Create or update the alert automations and their webhook block; re-applying never duplicates.

    Example: pgha alerts apply --scope hy-home-db
    """
    from stack.alerts import ALERTS_FILE
    from stack.spec import parse_spec
    from tasks.prefect_alerts import apply_alerts

    for s in scope:  # the spec's own rule for a scope, before anything is applied
        parse_spec({"scope": s}, "--scope")
    progress(apply_alerts(file or ALERTS_FILE, scopes=list(scope) or None))


worker_app = typer.Typer(no_args_is_help=True, help="More workers in the `pgha` work pool (on this or other machines).")
app.add_typer(worker_app, name="worker", rich_help_panel=SERVER)


@worker_app.command("start")
@command()
def worker_start(
    name: str = typer.Option(..., "--name", help="this worker's name (its pid and log under <state>/server/)"),
    api_url: str | None = typer.Option(None, "--api-url", help="a remote server's API (http://HOST:PORT/api); "
                                       "default: this state directory's server"),
    auth_file: Path | None = typer.Option(None, "--auth-file", help="a 0600 copy of the server's api-auth file "
                                          "(never the secret itself on the command line)"),
) -> None:
    """Start a worker process in the `pgha` pool; idempotent. Runs go to whichever worker polls first.

    Unlike `pgha server start`'s worker (a container), this is a plain process: run it under the
    machine's own supervisor if it must survive a reboot.

    Example: pgha worker start --name ci-1 --api-url http://db-admin:4200/api --auth-file ~/.pgha-api-auth
    """
    from tasks import prefect_workers as pw

    progress([pw.start_extra_worker(name, api_url, auth_file)])


@worker_app.command("stop")
@command()
def worker_stop(name: str = typer.Option(..., "--name", help="the name the worker was started with")) -> None:
    """Stop the worker `pgha worker start --name` started (nothing else).

    Example: pgha worker stop --name ci-1
    """
    from tasks import prefect_workers as pw

    progress([pw.stop_extra_worker(name)])
