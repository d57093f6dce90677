"""The Typer app, the options every verb shares, and the one decorator that runs a verb.

A verb validates its input (Typer: enums and ranges; pgha: the spec and the cluster's state),
runs its flow in-process and returns the flow's result model; `@command` renders it (a table,
or `--json`), turns every `PghaError` into one line on stderr and its exit code, and stops the
ephemeral Prefect API it started. Flows use that ephemeral API when PREFECT_API_URL is unset,
and that server when it is set. PGHA_DEBUG=1 shows the traceback of an internal error.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

try:  # Typer >= 0.2x carries its own copy of Click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older Typer on Click
    from click import exceptions as click_errors  # type: ignore[no-redef]

from cli.api import API
from stack.errors import PghaError, UsageError, WaitTimeout
from stack.spec import ClusterSpec, load_spec
from tasks.host.lock import MAX_WAIT_SECONDS

P = ParamSpec("P")
R = TypeVar("R")


def one_line(text: str) -> str:
    return " ".join(text.split())


def usage_message(exc: Exception) -> str:
    """Click's message for a bad argument, as one sentence that names the allowed range."""
    param = getattr(exc, "param", None)
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if isinstance(exc, click_errors.BadParameter) and param is not None and (low, high) != (None, None):
        name = param.opts[0] if getattr(param, "opts", None) else str(param.name)
        allowed = (f"between {low} and {high}" if low is not None and high is not None
                   else f"at least {low}" if low is not None else f"at most {high}")
        errors = getattr(exc.__cause__, "errors", None)  # the pydantic check Typer ran
        first = errors()[0] if callable(errors) else {}
        if first.get("type") in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            return f"{name} must be {allowed}, not {first.get('input')}"
    text = one_line(getattr(exc, "format_message", lambda: str(exc))())
    text = text.replace("Value error, ", "")  # pydantic's prefix on a refused enum value
    return text[:1].lower() + text[1:]


# `pgha --help` lists the verbs in these panels (Typer's rich_help_panel), in this order; the CLI
# reference of the docs (docs/hooks/gen_cli.py) uses the same grouping.
CLUSTER = "Cluster"
DAY_TWO = "Day two"
BACKUPS = "Backups and restore"
HEALTH = "Drills and audits"
CHANGES = "Upgrades and changes"
SUPPORT = "Logs and support"
SERVER = "Server and alerts"
LAB = "Lab"
PANELS = (CLUSTER, DAY_TWO, BACKUPS, HEALTH, CHANGES, SUPPORT, SERVER, LAB)


# Options whose value may be left out (`pgha upgrade --major` = `--major latest`): Typer cannot
# declare one, so the word is supplied before Click parses. Declared here, not by the verb's module
# on import: importing a module changes no shared state.
OPTIONAL_VALUES: dict[str, str] = {
    "--major": "latest",  # `pgha upgrade --major` alone: the newest major pgha packages
}


def fill_optional_values(args: list[str]) -> list[str]:
    """Insert the default after an optional-value option that is last or followed by another option."""
    out: list[str] = []
    for i, a in enumerate(args):
        out.append(a)
        if a in OPTIONAL_VALUES and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append(OPTIONAL_VALUES[a])
    return out


class PghaGroup(TyperGroup):
    """Click's usage errors (bad enum value, out of range, unknown option) as one `pgha: error:` line, exit 2.

    Typer would print a framed box (rich) or four lines (plain); a user mistake is one line here.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        """The verbs panel by panel (`PANELS` order), each panel in the order its verbs were registered."""
        def rank(name: str) -> int:
            panel = getattr(self.commands[name], "rich_help_panel", None)
            return PANELS.index(panel) if panel in PANELS else len(PANELS)

        return sorted(super().list_commands(ctx), key=rank)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        args = fill_optional_values(list(sys.argv[1:] if args is None else args))
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as exc:  # `pgha` alone: the help text, as before
            exc.show()
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            sys.stderr.write(f"pgha: error: {usage_message(exc)}{hint}\n")
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.stderr.write("pgha: interrupted\n")
            sys.exit(130)
        # Non-standalone Click returns a deliberate exit code (typer.Exit, --help) as the value.
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(cls=PghaGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run a PostgreSQL HA cluster (etcd + Patroni + HAProxy) on Docker with Prefect flows.")

# Wide enough for the members table when output goes to a pipe or a CI log.
out = Console(width=None if sys.stdout.isatty() else 140, soft_wrap=True)

SpecOpt = typer.Option(None, "--spec", "-s", help="cluster spec YAML (default: $PGHA_SPEC, else the stored spec of --scope, else defaults)")
ScopeOpt = typer.Option(None, "--scope", help="cluster scope (default: hy-home-db)")
WaitOpt = typer.Option(0.0, "--wait", metavar="SECONDS", min=0, max=MAX_WAIT_SECONDS,
                       help="wait up to SECONDS for another mutating flow on the cluster to end (default: refuse at once)")
JsonOpt = typer.Option(False, "--json", help="machine-readable result")


def stderr_line(text: str) -> None:
    sys.stderr.write(text + "\n")


def resolve_spec(spec_file: Path | None, scope: str | None) -> ClusterSpec:
    """--spec, else $PGHA_SPEC, else the spec stored by the last `up` of --scope, else defaults;
    then the serving generation's spec (after a finished major upgrade, `tasks.host.generations`),
    as the cluster runs it (a pooler on by default that `pgha up` has not added yet: none)."""
    from tasks.host.generations import deployed

    return deployed(_resolve_spec(spec_file, scope))


def _resolve_spec(spec_file: Path | None, scope: str | None) -> ClusterSpec:
    from tasks.host.generations import serving, stored_spec_file

    if spec_file is None and os.environ.get("PGHA_SPEC"):
        spec_file = Path(os.environ["PGHA_SPEC"])
    if spec_file is not None:
        spec = load_spec(spec_file)
        if scope and scope != spec.scope:
            raise UsageError(f"--scope {scope} contradicts the spec's scope {spec.scope}")
        return serving(spec)
    name = scope or ClusterSpec().scope
    stored = stored_spec_file(name)
    if stored.exists():
        return serving(load_spec(stored))
    if scope is not None and scope != ClusterSpec().scope:
        raise UsageError(f"no cluster '{scope}' was brought up from this machine; pass --spec FILE")
    return ClusterSpec()


@dataclass(frozen=True)
class Done(Generic[R]):
    """What a verb hands `@command`: the flow's result and the spec its renderer names (scope, ports)."""

    result: R
    spec: ClusterSpec | None = None


def require_engines(spec: ClusterSpec) -> None:
    """Every Docker engine the cluster uses answers (one line naming the host otherwise)."""
    from tasks import docker_hosts

    docker_hosts.engines(spec).check()


def warm() -> None:
    """Start the ephemeral Prefect API now (unless PREFECT_API_URL is set): it gets ready while the checks run.

    Verbs call it once their arguments and spec are valid, so a plain mistake spawns nothing.
    """
    API.start()


def run_flow(flow: Callable[..., R], *args: Any, tags: Sequence[str] = (), **kwargs: Any) -> R:
    """Call a flow in-process once the ephemeral API (if pgha runs one) answers."""
    API.start()
    API.wait_ready()
    if not tags:
        return flow(*args, **kwargs)
    from prefect import tags as prefect_tags

    with prefect_tags(*tags):
        return flow(*args, **kwargs)


@dataclass(frozen=True)
class Verb:
    """What every verb that runs a flow shares: the spec it acts on, the checks before its flow,
    and the flow run that makes its `Done`.

    `Verb.open` resolves the spec (`resolve_spec`); each check is a method returning the verb, called
    in the order that verb needs: `warm` (start the ephemeral API now, to get ready while the rest
    runs; a verb that should spawn nothing on a plain mistake warms after its checks), `engines`
    (every Docker engine answers), `answers` (a Patroni node answers), `not_busy` (no other mutating
    flow holds the cluster; skipped with --wait, where the flow waits for the lock itself).
    """

    spec: ClusterSpec
    name: str
    wait: float = 0.0

    @classmethod
    def open(cls, name: str, spec_file: Path | None, scope: str | None, wait: float = 0.0) -> Verb:
        return cls(resolve_spec(spec_file, scope), name, wait)

    def warm(self) -> Verb:
        warm()
        return self

    def engines(self) -> Verb:
        require_engines(self.spec)
        return self

    def answers(self) -> Verb:
        from tasks import patroni

        patroni.cluster_view(self.spec)  # PatroniError (one line) when no node answers
        return self

    def not_busy(self) -> Verb:
        """Refuse at once (one line, before any flow run) when another mutating flow holds the cluster.

        The flow takes the lock itself; this only spares the user a failed flow run.
        """
        if self.wait > 0:
            return self
        from tasks.host.lock import mutating

        with mutating(self.spec.scope, f"pgha {self.name} (pre-check)", wait_seconds=0):
            pass
        return self

    def run(self, flow: Callable[..., R], *args: Any, tags: Sequence[str] = (), **kwargs: Any) -> Done[R]:
        """The flow run on this verb's spec (first argument), as the verb's `Done`."""
        return Done(run_flow(flow, self.spec, *args, tags=tags, **kwargs), self.spec)


@contextmanager
def checks() -> Iterator[Callable[..., Any]]:
    """`check(fn, *args)`: a flow's preflight run once (`flows.steps.preflight_once`), before the flow.

    Call it with exactly the arguments the flow passes, so the flow's own call reuses the
    result. Whatever the flow did not consume (it failed earlier, or the verb stopped) is
    forgotten on the way out, so nothing stale is reused later in this process.
    """
    from flows.steps import forget_preflight, preflight_once

    ran: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def check(fn: Callable[..., R], *args: Any) -> R:
        ran.append((fn, args))
        return preflight_once(fn, *args)

    try:
        yield check
    finally:
        for fn, args in ran:
            forget_preflight(fn, *args)


def to_json(value: Any) -> Any:
    return value.to_json() if hasattr(value, "to_json") else value


def _fail(exc: BaseException) -> NoReturn:
    """One line on stderr and the exit code for anything a verb raised."""
    if isinstance(exc, PghaError):
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        stderr_line(f"pgha: error: {first}")
        if isinstance(exc, WaitTimeout) and exc.logs:
            stderr_line(exc.logs.rstrip())
        raise typer.Exit(exc.exit_code) from None
    if isinstance(exc, KeyboardInterrupt):
        stderr_line("pgha: interrupted")
        raise typer.Exit(130) from None
    if os.environ.get("PGHA_DEBUG"):
        raise exc
    line = str(exc).splitlines()[0] if str(exc) else ""
    stderr_line(f"pgha: internal error: {type(exc).__name__}: {line} (PGHA_DEBUG=1 shows the traceback)")
    raise typer.Exit(1) from None


def command(render: Callable[[Done[Any]], None] | None = None, *, flows: bool = False,
            failed: Callable[[Any], bool] | None = None,
            fast_exit: bool = False) -> Callable[[Callable[P, Any]], Callable[P, None]]:
    """Wrap a verb: errors as one line + exit code, the result rendered (or `--json`), the API stopped.

    The verb returns a `Done` (or a bare result, or None when it printed everything itself).
    `flows`: the verb runs flows; the ephemeral Prefect API it starts (`warm`, `run_flow`) is
    stopped on every way out.
    `failed(result)`: exit 1 after rendering (an unhealthy status, a critical audit).
    `fast_exit`: once the verb has run, the `pgha` process ends without the interpreter's teardown
    (`exit_now`, called by `cli.app.main`; a verb called in-process, as the tests do, is not affected).
    """

    def wrap(fn: Callable[P, Any]) -> Callable[P, None]:
        @functools.wraps(fn)
        def verb(*args: P.args, **kwargs: P.kwargs) -> None:
            if fast_exit:
                EXIT.fast = True
            try:
                with ephemeral_api() if flows else nullcontext():
                    done = fn(*args, **kwargs)
                if done is None:
                    return
                if not isinstance(done, Done):
                    done = Done(done)
                if kwargs.get("as_json"):
                    sys.stdout.write(json.dumps(to_json(done.result), indent=2, default=str) + "\n")
                elif render is not None:
                    render(done)
            except (typer.Exit, SystemExit):
                raise  # a deliberate exit code, not an error
            except BaseException as exc:  # noqa: BLE001 - every way out becomes one line
                _fail(exc)
            if failed is not None and failed(done.result):
                raise typer.Exit(1)

        return verb

    return wrap


@dataclass
class ExitMode:
    """How the `pgha` process ends once its verb returns (`cli.app.main` reads it)."""

    fast: bool = False  # a verb with `@command(fast_exit=True)` ran: `exit_now`


EXIT = ExitMode()


def exit_code(code: object) -> int:
    """`sys.exit(code)`'s exit status: None is 0, an int itself, anything else is printed and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    stderr_line(str(code))
    return 1


def exit_now(code: object) -> NoReturn:
    """End the process as the interpreter would, but without freeing every module and object first.

    What a normal exit does before that is done here too, in the same order: non-daemon threads
    joined (with the thread pools' exit hooks), the atexit handlers run (Prefect sends the events and
    logs it queued, an ephemeral API is stopped, logging is flushed), stdout and stderr flushed. The
    teardown skipped is pure cost for a process that ends anyway: about a third of a second of CPU
    after a verb that imported Prefect.
    """
    status = exit_code(code)
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say on it
            pass
    os._exit(status)


@contextmanager
def ephemeral_api() -> Iterator[None]:
    """Whatever ephemeral Prefect API the verb started is stopped on every way out."""
    try:
        yield
    finally:
        API.stop()
