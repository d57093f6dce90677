"""`pgha`: the command line. Each verb validates its input, then runs its flow in-process.

Flows use Prefect's ephemeral API when PREFECT_API_URL is unset and that server when set.
Every PghaError becomes one line on stderr and a non-zero exit; no traceback for a user
mistake (set PGHA_DEBUG=1 to see one for an internal error).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from stack.errors import PghaError, UsageError, WaitTimeout  # noqa: E402
from stack.spec import ClusterSpec, load_spec  # noqa: E402
from tasks.host.state import cluster_dir  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run a PostgreSQL HA cluster (etcd + Patroni + HAProxy) on Docker with Prefect flows.")
images_app = typer.Typer(no_args_is_help=True, help="Build or show the node image.")
app.add_typer(images_app, name="images")

# Wide enough for the members table when output goes to a pipe or a CI log.
out = Console(width=None if sys.stdout.isatty() else 140, soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # never wrap an error line
T = TypeVar("T")

SpecOpt = typer.Option(None, "--spec", "-s", help="cluster spec YAML (default: $PGHA_SPEC, else the stored spec of --scope, else defaults)")
ScopeOpt = typer.Option(None, "--scope", help="cluster scope (default: hy-home-db)")
WaitOpt = typer.Option(0.0, "--wait", metavar="SECONDS",
                       help="wait up to SECONDS for another mutating flow on the cluster to end (default: refuse at once)")


def check_wait(wait: float) -> float:
    from tasks.host.lock import MAX_WAIT_SECONDS

    if not 0 <= wait <= MAX_WAIT_SECONDS:
        raise UsageError(f"--wait must be between 0 and {MAX_WAIT_SECONDS} seconds, not {wait:g}")
    return wait


def run(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except PghaError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        err.print(f"pgha: error: {first}", markup=False, highlight=False)
        if isinstance(exc, WaitTimeout) and exc.logs:
            err.print(exc.logs.rstrip(), markup=False, highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except typer.Exit:
        raise  # a deliberate exit code (unhealthy status, critical audit), not an internal error
    except KeyboardInterrupt:
        err.print("pgha: interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback only on request
        if os.environ.get("PGHA_DEBUG"):
            raise
        line = str(exc).splitlines()[0] if str(exc) else ""
        err.print(f"pgha: internal error: {type(exc).__name__}: {line} (PGHA_DEBUG=1 shows the traceback)",
                  markup=False, highlight=False)
        raise typer.Exit(1) from None


def resolve_spec(spec_file: Path | None, scope: str | None) -> ClusterSpec:
    """--spec, else $PGHA_SPEC, else the spec stored by the last `up` of --scope, else defaults."""
    if spec_file is None and os.environ.get("PGHA_SPEC"):
        spec_file = Path(os.environ["PGHA_SPEC"])
    if spec_file is not None:
        spec = load_spec(spec_file)
        if scope and scope != spec.scope:
            raise UsageError(f"--scope {scope} contradicts the spec's scope {spec.scope}")
        return spec
    name = scope or ClusterSpec().scope
    stored = cluster_dir(name) / "spec.yaml"
    if stored.exists():
        return load_spec(stored)
    if scope is not None and scope != ClusterSpec().scope:
        raise UsageError(f"no cluster '{scope}' was brought up from this machine; pass --spec FILE")
    return ClusterSpec()


def members_table(status: dict[str, Any]) -> Table:
    t = Table(title=f"pgha cluster {status['scope']}", title_justify="left")
    for col in ("member", "component", "container", "state", "health", "role", "pg state", "TL", "lag (bytes)"):
        t.add_column(col)
    for m in status["members"]:
        t.add_row(m["member"], m["role"], m["container"], m["container_state"], m["health"], m["pg_role"],
                  m["pg_state"], "" if m["timeline"] is None else str(m["timeline"]),
                  "" if m["lag_bytes"] is None else str(m["lag_bytes"]))
    return t


def warm_prefect_api() -> threading.Thread | None:
    """Start Prefect's ephemeral API in the background while preflight checks run.

    It takes ~3.5 s here; the flow would otherwise start it only when it begins.
    """
    if os.environ.get("PREFECT_API_URL"):
        return None

    def start() -> None:
        try:
            from prefect.server.api.server import SubprocessASGIServer

            SubprocessASGIServer().start()
        except Exception:  # noqa: BLE001, S110 - the flow starts it again and reports a failure itself
            pass

    thread = threading.Thread(target=start, name="prefect-api-warmup", daemon=True)
    thread.start()
    return thread


def print_endpoints(spec: ClusterSpec) -> None:
    from tasks.postgres import dsn

    out.print(f"read/write: {dsn(spec)}", highlight=False)
    out.print(f"read-only : {dsn(spec, read_only=True)}", highlight=False)
    out.print(f"password  : pgha dsn --show-password{'' if spec.scope == ClusterSpec().scope else ' --scope ' + spec.scope}"
              f"  (kept in {cluster_dir(spec.scope) / 'secrets.json'}, mode 0600)", highlight=False)


@app.command()
def up(spec_file: Path | None = SpecOpt, wait: float = WaitOpt) -> None:
    """Create or converge the cluster: images, etcd, Patroni, HAProxy; then print members and DSNs."""

    def go() -> None:
        check_wait(wait)
        spec = load_spec(spec_file or (Path(os.environ["PGHA_SPEC"]) if os.environ.get("PGHA_SPEC") else None))
        warmup = warm_prefect_api()
        try:
            from flows.bootstrap import bootstrap, preflight, refuse_image_swap
            from tasks.images import ensure_image

            preflight(spec)
            tag, log = ensure_image(spec)
            for line in log:
                err.print(f"pgha: {line}", highlight=False)
            refuse_image_swap(spec, spec.upgrade.node_image or tag)  # the flow checks again (deployments)
        finally:
            # Never exit while the API process is half-started (it would be orphaned).
            if warmup is not None:
                warmup.join()
        result = bootstrap(spec, wait_seconds=wait)
        out.print(members_table(result["status"]))
        changed = [k for k, v in result["outcomes"].items() if v != "unchanged"]
        out.print(f"{spec.scope} is ready in {result['elapsed_s']}s on {tag}; "
                  + (f"changed: {', '.join(changed)}" if changed else "nothing changed"), highlight=False)
        print_endpoints(spec)

    run(go)


@app.command()
def down(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
         volumes: bool = typer.Option(False, "--volumes", help="also delete the data volumes and passwords (data is lost)"),
         wait: float = WaitOpt) -> None:
    """Remove the cluster's containers and network; data volumes stay unless --volumes."""

    def go() -> None:
        check_wait(wait)
        spec = resolve_spec(spec_file, scope)
        from flows.teardown import teardown
        from tasks import docker_engine as de

        de.client()
        removed = teardown(spec, volumes=volumes, wait_seconds=wait)
        out.print(f"{spec.scope}: removed {len(removed['containers'])} containers, {len(removed['networks'])} networks, "
                  f"{len(removed['volumes'])} volumes" + ("" if volumes else " (data volumes kept; `pgha up` brings it back)"),
                  highlight=False)

    run(go)


@app.command()
def status(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
           as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Members with role, state, timeline and lag; endpoints; container health. Exit 1 if unhealthy."""

    def go() -> None:
        spec = resolve_spec(spec_file, scope)
        from flows.status import collect

        st = collect(spec)
        if as_json:
            sys.stdout.write(json.dumps(st.to_dict(), indent=2) + "\n")
        else:
            out.print(members_table(st.to_dict()))
            for k, v in st.endpoints.items():
                out.print(f"{k:12}: {v}", highlight=False)
            out.print("healthy" if st.healthy else "UNHEALTHY: " + "; ".join(st.problems), highlight=False)
        if not st.healthy:
            raise typer.Exit(1)

    run(go)


@app.command()
def dsn(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
        ro: bool = typer.Option(False, "--ro", help="the read-only (replicas) endpoint"),
        show_password: bool = typer.Option(False, "--show-password", help="include the password in the URI")) -> None:
    """Print the connection URI of the R/W (or --ro) endpoint."""

    def go() -> None:
        spec = resolve_spec(spec_file, scope)
        from stack.errors import StateError
        from tasks.host.secrets import load_or_create
        from tasks.host.state import secrets_file
        from tasks.postgres import dsn as make_dsn

        password = None
        if show_password:
            if not secrets_file(spec.scope).exists():
                raise StateError(f"no passwords stored for '{spec.scope}'; run `pgha up` first")
            password = load_or_create(secrets_file(spec.scope)).superuser
        sys.stdout.write(make_dsn(spec, read_only=ro, password=password) + "\n")

    run(go)


@app.command()
def drill(kind: str = typer.Argument(..., help="switchover | graceful-stop | hard-kill | partition | replica-kill | "
                                               "etcd-member-loss | haproxy-restart"),
          spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
          to: str | None = typer.Option(None, "--to", help="switchover candidate / replica to kill"),
          interval_ms: int = typer.Option(50, "--interval-ms", help="probe interval"),
          heal_timeout: int = typer.Option(180, "--heal-timeout", help="seconds the cluster may take to be whole again"),
          as_json: bool = typer.Option(False, "--json", help="machine-readable result"),
          wait: float = WaitOpt) -> None:
    """Break the cluster on purpose under write load, measure the gaps and lost writes, heal it."""

    def go() -> None:
        check_wait(wait)
        from stack.drill import DrillKind

        try:
            drill_kind = DrillKind(kind)
        except ValueError:
            raise UsageError(f"unknown drill '{kind}'; choose one of {', '.join(k.value for k in DrillKind)}") from None
        spec = resolve_spec(spec_file, scope)
        from flows.drill import drill as drill_flow
        from tasks.docker_engine import client

        client()
        from prefect import tags

        with tags("pgha", "health"):  # a failed drill alerts like a failed audit
            r = drill_flow(spec, drill_kind, to=to, probe_interval_ms=interval_ms, heal_timeout_s=heal_timeout,
                           wait_seconds=wait)
        if as_json:
            sys.stdout.write(json.dumps(r, indent=2) + "\n")
            return
        t = Table(title=f"{r['kind']} drill on {spec.scope}", title_justify="left")
        for col in ("target", "write gap", "read gap", "lost writes", "leader", "timeline", "whole after", "rejoin"):
            t.add_column(col)
        t.add_row(r["target"], f"{r['write_gap_s']:.2f} s", f"{r['read_gap_s']:.2f} s", str(len(r["lost_writes"])),
                  f"{r['old_leader']} -> {r['new_leader']}", f"{r['timeline_before']} -> {r['timeline_after']}",
                  f"{r['whole_s']} s", r["rejoin"])
        out.print(t)
        out.print(r["timeline"], highlight=False, markup=False)
        for n in r["notes"]:
            out.print(f"- {n}", highlight=False)
        out.print(f"chart: {r['chart_png']}", highlight=False)

    run(go)


@images_app.command("build")
def images_build(spec_file: Path | None = SpecOpt,
                 updates: str = typer.Option("none", "--updates",
                                             help="none | security: also take packages from <suite>-security")) -> None:
    """Build the node image for the spec if it is missing (debootstrap base when no registry)."""

    def go() -> None:
        spec = load_spec(spec_file)
        from tasks.docker_engine import client
        from tasks.images import UPDATES, ensure_image

        if updates not in UPDATES:
            raise UsageError(f"--updates must be one of {', '.join(UPDATES)}, not '{updates}'")
        client()
        tag, log = ensure_image(spec, updates)
        for line in log:
            err.print(f"pgha: {line}", highlight=False)
        out.print(tag, highlight=False)

    run(go)

# ---- backups (issue 4): backup, dump, verify-restore, restore ----

IntoSpecOpt = typer.Option(None, "--into-spec", help="spec file of the new cluster (default: the source's, ports + 10)")


@app.command()
def backup(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
           backup_type: str = typer.Option("full", "--type", help="full | diff | incr"),
           no_verify: bool = typer.Option(False, "--no-verify", help="skip the verified restore after the backup"),
           as_json: bool = typer.Option(False, "--json", help="machine-readable result")) -> None:
    """pgBackRest backup from a replica, then restore it into a scratch container and check it."""

    def go() -> None:
        from stack.backup import BackupType

        try:
            btype = BackupType(backup_type)
        except ValueError:
            raise UsageError(f"unknown backup type '{backup_type}'; choose full, diff or incr") from None
        spec = resolve_spec(spec_file, scope)
        from flows.backup import backup as backup_flow
        from flows.backup import preflight
        from tasks.docker_engine import client

        client()
        preflight(spec)
        r = backup_flow(spec, btype, verify=False if no_verify else None)
        if as_json:
            sys.stdout.write(json.dumps(r, indent=2, default=str) + "\n")
            return
        out.print(f"{r['type']} backup {r['label']} of {spec.scope} from {r['source']}: {r['size_mb']} MB "
                  f"({r['stored_mb']} MB stored) in {r['duration_s']} s; WAL {r['wal_start']}..{r['wal_stop']}"
                  + (f"; expired {r['expired']}" if r["expired"] else ""), highlight=False)
        if v := r.get("verification"):
            out.print(f"verified restore: passed in {v['duration_s']} s ({v['canary']}; pg_amcheck: {v['amcheck']})",
                      highlight=False)

    run(go)


@app.command()
def dump(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
         as_json: bool = typer.Option(False, "--json", help="machine-readable result")) -> None:
    """pg_dump -Fc of every database from a replica into the repository volume (own retention)."""

    def go() -> None:
        spec = resolve_spec(spec_file, scope)
        from flows.backup import dump as dump_flow
        from tasks.docker_engine import client

        client()
        r = dump_flow(spec)
        if as_json:
            sys.stdout.write(json.dumps(r, indent=2) + "\n")
            return
        for f in r["files"]:
            out.print(f"{f['database']}: {f['file']} ({f['size_mb']} MB, {f['duration_s']} s)", highlight=False)

    run(go)


@app.command("verify-restore")
def verify_restore(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
                   label: str | None = typer.Option(None, "--set", help="backup set label (default: the newest)"),
                   as_json: bool = typer.Option(False, "--json", help="machine-readable result")) -> None:
    """Restore a backup set into a scratch container, check it, remove it. Exit non-zero on any failure."""

    def go() -> None:
        spec = resolve_spec(spec_file, scope)
        from flows.verify import preflight
        from flows.verify import verify_restore as verify_flow
        from tasks.docker_engine import client

        client()
        preflight(spec, label)
        r = verify_flow(spec, label=label)
        if as_json:
            sys.stdout.write(json.dumps(r, indent=2) + "\n")
            return
        out.print(f"backup {r['label']} of {spec.scope}: restore verified in {r['duration_s']} s "
                  f"({r['canary']}; pg_amcheck: {r['amcheck']})", highlight=False)

    run(go)


@app.command()
def restore(to: str = typer.Option(..., "--to", help="target time with zone, e.g. '2026-11-25 21:03:00+00'"),
            spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
            into: str | None = typer.Option(None, "--into", help="new cluster scope to restore into (default)"),
            into_spec: Path | None = IntoSpecOpt,
            in_place: bool = typer.Option(False, "--in-place", help="rebuild the live cluster from the restore"),
            yes: bool = typer.Option(False, "--yes", help="confirm --in-place"),
            as_json: bool = typer.Option(False, "--json", help="machine-readable result")) -> None:
    """Point-in-time restore into a new cluster (safe default), or in place with --in-place --yes."""

    def go() -> None:
        from stack.backup import parse_target_time

        target = parse_target_time(to)
        if isinstance(target, str):
            raise UsageError(target)
        if in_place and (into or into_spec):
            raise UsageError("--in-place and --into/--into-spec exclude each other")
        if in_place and not yes:
            raise UsageError("--in-place stops the live cluster and replaces its data; add --yes to confirm")
        if not in_place and not (into or into_spec):
            raise UsageError("say where to restore: --into SCOPE (a new cluster) or --in-place --yes")
        spec = resolve_spec(spec_file, scope)
        from flows.restore import preflight, target_spec
        from flows.restore import restore as restore_flow
        from tasks.docker_engine import client

        client()
        new_spec = None if in_place else target_spec(spec, into, load_spec(into_spec) if into_spec else None)
        preflight(spec, to, new_spec, in_place)
        if in_place:
            # Said before anything changes: the user asked for it with --yes, but should see it.
            sys.stderr.write(f"pgha: {spec.scope} will be stopped and rebuilt; everything written after "
                             f"{target.isoformat(' ')} is discarded\n")
        r = restore_flow(spec, target.isoformat(), new_spec, in_place=in_place)
        if as_json:
            sys.stdout.write(json.dumps(r, indent=2, default=str) + "\n")
            return
        if in_place:
            out.print(f"restored {spec.scope} in place to {r['target']} (backup {r['from_set']}) in {r['duration_s']} s; "
                      f"now on timeline {r['timeline']}; everything written after {r['target']} was discarded",
                      highlight=False)
            return
        out.print(f"restored {spec.scope} to {r['target']} into {r['into']} (backup {r['from_set']}) "
                  f"in {r['duration_s']} s", highlight=False)
        if new_spec is not None:
            print_endpoints(new_spec)

    run(go)


# ---- health audit, Prefect server, alerts (issue 3) ----

server_app = typer.Typer(no_args_is_help=True, help="The local Prefect server, work pool, deployments and worker.")
alerts_app = typer.Typer(no_args_is_help=True, help="Alert automations defined in deployments/alerts.yaml.")
app.add_typer(server_app, name="server")
app.add_typer(alerts_app, name="alerts")
LEVEL_STYLE = {"ok": "green", "warn": "yellow", "critical": "bold red"}


def audit_table(report: dict[str, Any]) -> Table:
    t = Table(title=f"health audit of {report['scope']} ({report['elapsed_s']} s)", title_justify="left")
    for col in ("check", "target", "status", "observed", "threshold", "hint"):
        t.add_column(col)
    for f in report["findings"]:
        t.add_row(f["check"], f["target"], f"[{LEVEL_STYLE.get(f['status'], '')}]{f['status']}[/]", f["observed"],
                  f["threshold"], f["hint"])
    return t


@app.command("audit")
def audit_cmd(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
              as_json: bool = typer.Option(False, "--json", help="machine-readable report")) -> None:
    """Run the health-audit flow: every check as a row; exit 1 when any finding is critical."""

    def go() -> None:
        spec = resolve_spec(spec_file, scope)
        from prefect import tags

        from flows.audit import audit as audit_flow
        from stack.errors import PghaError as _Err
        from tasks.docker_engine import client

        client()
        with tags("pgha", "health"):  # the tag the alert automation matches
            state = audit_flow(spec, return_state=True)
        report = state.result(raise_on_failure=False)
        if not isinstance(report, dict):
            raise _Err(f"the audit flow ended {state.name}: {state.message or report}")
        if as_json:
            sys.stdout.write(json.dumps(report, indent=2) + "\n")
        else:
            out.print(audit_table(report))
            out.print(report["message"], highlight=False, markup=False)
        if report["status"] == "critical":
            raise typer.Exit(1)

    run(go)


@server_app.command("start")
def server_start(alerts: bool = typer.Option(True, "--alerts/--no-alerts", help="apply deployments/alerts.yaml")) -> None:
    """Start (or keep) the server, work pool, deployments, alerts and worker; idempotent."""

    def go() -> None:
        from tasks import prefect_server as ps

        for line in ps.start_all(with_alerts=alerts):
            out.print(f"pgha: {line}", highlight=False)
        out.print(f"UI: {ps.ui_url()}   use it from a shell: export PREFECT_API_URL={ps.api_url()}", highlight=False)

    run(go)


@server_app.command("stop")
def server_stop() -> None:
    """Stop the worker and the server that `pgha server start` started (nothing else)."""

    def go() -> None:
        from tasks import prefect_server as ps

        for line in ps.stop_all():
            out.print(f"pgha: {line}", highlight=False)

    run(go)


@server_app.command("status")
def server_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Pids, health and URLs of the server and worker; exit 1 when the server does not answer."""

    def go() -> None:
        from tasks import prefect_server as ps

        st = ps.status()
        if as_json:
            sys.stdout.write(json.dumps(st, indent=2) + "\n")
        else:
            for k, v in st.items():
                out.print(f"{k:15}: {v}", highlight=False)
        if not st["server_healthy"]:
            raise typer.Exit(1)

    run(go)


AlertsFileOpt = typer.Option(None, "--file", help="alerts file (default deployments/alerts.yaml)")


@alerts_app.command("apply")
def alerts_apply(file: Path | None = AlertsFileOpt) -> None:
    """Create or update the alert automations and their webhook block; re-applying never duplicates."""

    def go() -> None:
        from stack.alerts import ALERTS_FILE
        from tasks import prefect_server as ps

        for line in ps.apply_alerts(file or ALERTS_FILE):
            out.print(f"pgha: {line}", highlight=False)

    run(go)



# ---- rolling changes: upgrade, config set, scale, etcd replace (issue 6) ----

config_app = typer.Typer(no_args_is_help=True, help="Change PostgreSQL parameters with a rolling restart.")
app.add_typer(config_app, name="config")
etcd_app = typer.Typer(no_args_is_help=True, help="etcd member maintenance.")
app.add_typer(etcd_app, name="etcd")


def _events(events: list[str]) -> None:
    for e in events:
        out.print(f"- {e}", highlight=False, markup=False)


@app.command()
def upgrade(image: str | None = typer.Option(None, "--image", help="target node image tag (same PostgreSQL major)"),
            updates: str | None = typer.Option(None, "--updates",
                                               help="security: build (if missing) and roll out the spec's image "
                                                    "with the suite's security updates, instead of --image"),
            spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
            node_timeout: int | None = typer.Option(None, "--node-timeout",
                                                    help="seconds one node may take to come back (default: spec)"),
            as_json: bool = typer.Option(False, "--json", help="machine-readable result")) -> None:
    """Rolling minor upgrade of the Patroni nodes to IMAGE: replicas first, switchover, then the old leader."""

    def go() -> None:
        if (image is None) == (updates is None):
            raise UsageError("give exactly one of --image TAG or --updates security")
        if image is not None and not image.strip():
            raise UsageError("--image must name an image tag")
        if updates is not None and updates != "security":
            raise UsageError(f"--updates must be security, not '{updates}'")
        if node_timeout is not None and not 10 <= node_timeout <= 3600:
            raise UsageError(f"--node-timeout must be between 10 and 3600 seconds, not {node_timeout}")
        spec = resolve_spec(spec_file, scope)
        from flows.upgrade import gather_facts
        from flows.upgrade import upgrade as upgrade_flow
        from stack.rolling import precheck
        from tasks.docker_engine import client

        client()
        target = image or ""
        if updates is not None:
            from tasks.images import ensure_image

            target, log = ensure_image(spec.model_copy(update={"image": None}), updates)
            for line in log:
                err.print(f"pgha: {line}", highlight=False)
        # Refuse before paying the flow's start-up when the pre-check already says no.
        facts = gather_facts(spec, target)
        pending = cluster_dir(spec.scope) / "upgrade-pending.json"
        if not pending.exists() and (why := precheck(facts, spec.upgrade.max_lag_bytes,
                                                     spec.upgrade.max_transaction_age_s)) is not None:
            from stack.errors import StateError

            raise StateError(f"upgrade refused: {why}")
        r = upgrade_flow(spec, image=target, node_timeout_s=node_timeout)
        if as_json:
            sys.stdout.write(json.dumps(r, indent=2, default=str) + "\n")
            return
        t = Table(title=f"upgrade of {spec.scope} to {target}", title_justify="left")
        for col in ("node", "version before", "version after", "image after"):
            t.add_column(col)
        for row in r["rows"]:
            t.add_row(row["node"], row["version before"], row["version after"], row["image after"])
        out.print(t)
        _events(r["events"])
        out.print(f"done in {r['elapsed_s']}s", highlight=False)

    run(go)


@config_app.command("set")
def config_set(assignments: list[str] = typer.Argument(..., help="KEY=VALUE PostgreSQL parameters"),  # noqa: B008
               spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
               no_restart: bool = typer.Option(False, "--no-restart", help="leave members with pending_restart"),
               as_json: bool = typer.Option(False, "--json", help="machine-readable result")) -> None:
    """Set PostgreSQL parameters through Patroni; restart members that need it, one at a time."""

    def go() -> None:
        from stack.rolling import parse_assignments

        try:
            params = parse_assignments(assignments)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        spec = resolve_spec(spec_file, scope)
        from flows.config import config_set as config_flow
        from flows.config import validate
        from tasks.docker_engine import client
        from tasks.patroni import cluster_view

        client()
        # Refuse a parameter before paying the flow's start-up (the flow checks again).
        lead = cluster_view(spec).leader()
        if lead is not None:
            validate(spec, lead.name, params)
        r = config_flow(spec, parameters=params, restart=not no_restart)
        if as_json:
            sys.stdout.write(json.dumps(r, indent=2, default=str) + "\n")
            return
        for member, vals in r["values"].items():
            out.print(f"{member}: " + ", ".join(f"{k}={v}" for k, v in vals.items()), highlight=False)
        _events(r["events"])
        out.print(f"restarted: {', '.join(r['restarted']) or 'none'}; {r['elapsed_s']}s", highlight=False)

    run(go)


@app.command()
def scale(nodes: int = typer.Option(..., "--nodes", help="number of Patroni nodes wanted (1-9)"),
          spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
          as_json: bool = typer.Option(False, "--json", help="machine-readable result")) -> None:
    """Add or remove Patroni nodes; HAProxy is reloaded without dropping sessions."""

    def go() -> None:
        if not 1 <= nodes <= 9:
            raise UsageError(f"--nodes must be between 1 and 9, not {nodes}")
        spec = resolve_spec(spec_file, scope)
        from flows.scale import scale as scale_flow
        from tasks.docker_engine import client

        client()
        r = scale_flow(spec, nodes=nodes)
        if as_json:
            sys.stdout.write(json.dumps(r, indent=2, default=str) + "\n")
            return
        _events(r["events"])
        out.print(f"{spec.scope}: {r['plan']}; now {nodes} nodes ({r['elapsed_s']}s)", highlight=False)

    run(go)


@etcd_app.command("replace")
def etcd_replace(member: str = typer.Argument(..., help="etcd member to replace, e.g. etcd-2"),
                 spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
                 as_json: bool = typer.Option(False, "--json", help="machine-readable result")) -> None:
    """Replace one etcd member (remove, fresh data, add back), keeping quorum throughout."""

    def go() -> None:
        spec = resolve_spec(spec_file, scope)
        if member not in spec.etcd_names():
            raise UsageError(f"'{member}' is not an etcd member of {spec.scope}; choose one of "
                             f"{', '.join(spec.etcd_names())}")
        from flows.scale import etcd_replace as replace_flow
        from tasks.docker_engine import client

        client()
        r = replace_flow(spec, member=member)
        if as_json:
            sys.stdout.write(json.dumps(r, indent=2, default=str) + "\n")
            return
        _events(r["events"])
        out.print(f"{member} replaced (member id {r['old_id']} -> {r['new_id']}) in {r['elapsed_s']}s", highlight=False)

    run(go)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
