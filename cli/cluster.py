"""Cluster verbs: up, down, status, dsn, images build."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path

import typer

from cli import render
from cli.core import (
    CLUSTER,
    Done,
    ScopeOpt,
    SpecOpt,
    Verb,
    WaitOpt,
    app,
    checks,
    command,
    require_engines,
    resolve_spec,
    run_flow,
    stderr_line,
    warm,
)
from stack.errors import UsageError
from stack.results import BootstrapResult, ClusterStatus, TeardownResult
from stack.spec import ClusterSpec, load_spec

images_app = typer.Typer(no_args_is_help=True, help="Build or show the node image.")
app.add_typer(images_app, name="images", rich_help_panel=CLUSTER)


class Updates(StrEnum):
    """Which extra apt suites an image build takes its packages from (`tasks.images.UPDATES`)."""

    NONE = "none"
    SECURITY = "security"


def spec_or_env(spec_file: Path | None) -> Path | None:
    if spec_file is None and os.environ.get("PGHA_SPEC"):
        return Path(os.environ["PGHA_SPEC"])
    return spec_file


@app.command(rich_help_panel=CLUSTER)
@command(render.up, flows=True)
def up(spec_file: Path | None = SpecOpt, wait: float = WaitOpt) -> Done[BootstrapResult]:
    """Create or converge the cluster: images, etcd, Patroni, HAProxy; then print members and DSNs.

    Example: pgha up --spec cluster.yaml
    """
    from tasks.host.generations import serving

    spec = serving(load_spec(spec_or_env(spec_file)))  # after a major upgrade: the serving generation
    warm()
    from flows.bootstrap import bootstrap
    from flows.steps.converge import bootstrap_preflight, refuse_image_swap
    from tasks.images import ensure_image

    with checks() as check:
        check(bootstrap_preflight, spec)
        tag, log = ensure_image(spec)
        for line in log:
            stderr_line(f"pgha: {line}")
        # Before the flow starts: a refusal is one line, not a failed flow run.
        check(refuse_image_swap, spec, spec.upgrade.node_image or tag)
        result = run_flow(bootstrap, spec, wait_seconds=wait)
    return Done(result, spec)


@app.command(rich_help_panel=CLUSTER)
@command(render.down, flows=True)
def down(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
         volumes: bool = typer.Option(False, "--volumes", help="also delete the data volumes (data is lost; "
                                                                  "needs --yes)"),
         purge_backups: bool = typer.Option(False, "--purge-backups",
                                            help="with --volumes: also delete the backup repository and the "
                                                 "secrets it needs (kept aside otherwise)"),
         yes: bool = typer.Option(False, "--yes", help="confirm that data is to be destroyed"),
         wait: float = WaitOpt) -> Done[TeardownResult]:
    """Remove the cluster's containers and network; data volumes stay unless --volumes --yes.

    Example: pgha down --volumes --yes
    """
    from stack.teardown import confirm_refusal

    verb = Verb.open("down", spec_file, scope, wait)
    spec = verb.spec
    confirm = spec.scope if yes else ""
    if (why := confirm_refusal(spec.scope, volumes, purge_backups, confirm)) is not None:
        raise UsageError(why)  # before any flow or engine call: nothing changes
    verb.warm()
    from flows.teardown import teardown

    return verb.engines().run(teardown, volumes=volumes, wait_seconds=wait, purge_backups=purge_backups,
                              confirm=confirm)


def _green_in_progress(spec: ClusterSpec) -> ClusterSpec | None:
    """Green's spec while a major upgrade of `spec` is recorded (its state file; no flow import: status stays quick)."""
    from stack.major import green_spec
    from tasks.host.generations import load_major_state

    st = load_major_state(spec.scope)
    return green_spec(spec, st.target) if st is not None else None


@app.command(rich_help_panel=CLUSTER)
@command(render.status, failed=lambda st: not st.healthy)
def status(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
           as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> Done[ClusterStatus]:
    """Members with role, state, timeline and lag; endpoints; container health. Exit 1 if unhealthy.

    Example: pgha status --json
    """
    spec = resolve_spec(spec_file, scope)
    from stack.generations import base_of, describe
    from tasks.cluster_health import cluster_status  # not a flow: it answers in about a second

    st = cluster_status(spec)
    if spec.scope != base_of(spec.scope):
        st.cluster = describe(base_of(spec.scope), spec)
    if (green := _green_in_progress(spec)) is not None:
        st.companions.append(cluster_status(green))  # its health is shown, blue's decides the exit code
    return Done(st, spec)


@app.command(rich_help_panel=CLUSTER)
@command()
def dsn(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
        ro: bool = typer.Option(False, "--ro", help="the read-only (replicas) endpoint"),
        pool: bool = typer.Option(False, "--pool", help="the pooler's (PgBouncer) read/write endpoint"),
        show_password: bool = typer.Option(False, "--show-password", help="include the password in the URI"),
        pgpass: bool = typer.Option(False, "--pgpass", help="write the password to a 0600 pgpass file in the state "
                                                            "directory; the URI names it (passfile=), no password"),
        user: str | None = typer.Option(None, "--user", help="a role declared in the spec's roles: (default: the "
                                                             "superuser)"),
        db: str = typer.Option("postgres", "--db", help="the database the URI names")
        ) -> None:
    """Print the connection URI of the R/W (or --ro, or --pool) endpoint (TLS verified against the cluster CA).

    Example: pgha dsn --ro --pgpass; pgha dsn --user app --db app --pool --pgpass
    """
    spec = resolve_spec(spec_file, scope)
    from stack.errors import StateError

    if pool and ro:
        raise UsageError("--pool and --ro exclude each other (the pooler serves the read/write path)")
    if pool and not spec.runs_pooler:
        raise StateError(f"cluster {spec.scope} runs no pooler (its spec says pooler.enabled: false)")
    from tasks.host.secrets import load_or_create
    from tasks.host.state import secrets_file
    from tasks.postgres import dsn as make_dsn

    if show_password and pgpass:
        raise UsageError("--show-password and --pgpass exclude each other (--pgpass keeps the password in a file)")
    from stack.layout import SUPERUSER

    role = user or SUPERUSER
    if role != SUPERUSER and role not in {r.name for r in spec.roles}:
        raise StateError(f"role '{role}' is not declared in the roles: of cluster {spec.scope}'s spec")
    if db != "postgres" and db not in {d.name for d in spec.databases}:
        raise StateError(f"database '{db}' is not declared in the databases: of cluster {spec.scope}'s spec")
    password = None
    passfile = None
    if show_password or pgpass:
        if not secrets_file(spec.scope).exists():
            raise StateError(f"no passwords stored for '{spec.scope}'; run `pgha up` first")
        if role == SUPERUSER:
            password = load_or_create(secrets_file(spec.scope)).superuser
        else:
            from tasks.host.app_passwords import password_of

            password = password_of(spec, role)
    if pgpass and password is not None:
        from tasks.host.state import cluster_dir, write_private
        from tasks.postgres import pgpass_line

        path = cluster_dir(spec.scope) / ("pgpass" if role == SUPERUSER else f"pgpass-{role}")
        write_private(path, "".join(pgpass_line(spec, password, read_only=r, pooled=p, user=role)
                                    for r, p in ((False, False), (True, False), (False, True))))
        passfile, password = str(path), None
    sys.stdout.write(make_dsn(spec, read_only=ro, password=password, pooled=pool, passfile=passfile, user=role,
                              dbname=db) + "\n")


@images_app.command("build")
@command()
def images_build(spec_file: Path | None = SpecOpt,
                 updates: Updates = typer.Option(Updates.NONE, "--updates",
                                                 help="none | security: also take packages from <suite>-security")) -> None:
    """Build the node image for the spec if it is missing (debootstrap base when no registry).

    Example: pgha images build --updates security
    """
    spec = resolve_spec(spec_file, None)  # --spec, else $PGHA_SPEC, else the stored default, else defaults
    from tasks.images import ensure_image

    require_engines(spec)
    tag, log = ensure_image(spec, updates.value)
    for line in log:
        stderr_line(f"pgha: {line}")
    sys.stdout.write(tag + "\n")

