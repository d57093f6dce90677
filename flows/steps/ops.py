"""The operation wrapper every mutating flow shares: the cluster's lock, timing, events and
a result artifact, around a function that returns a typed result."""

from __future__ import annotations

import functools
import inspect
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from flows.steps.deployment import deployment_entry, pinned_spec
from stack.errors import SpecError, UsageError
from stack.results import Result
from stack.spec import ClusterSpec
from tasks import events
from tasks.cluster_limit import cluster_limit
from tasks.host import journal
from tasks.host.generations import serving
from tasks.host.lock import holder_name, mutating

P = ParamSpec("P")
R = TypeVar("R", bound=Result)


@dataclass
class Op:
    """One running operation: its name, start and the events it noted (returned in its result)."""

    name: str
    scope: str
    started: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)  # extra journal fields (a drill's kind, a verified set)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1)


_current: ContextVar[Op | None] = ContextVar("pgha_op", default=None)


def current() -> Op:
    """The operation this code runs in (a bare one outside any, e.g. in a unit test)."""
    op = _current.get()
    return op if op is not None else Op(name="(none)", scope="")


def note(text: str) -> None:
    """Record an event of the current operation (returned in its result) and log it."""
    current().events.append(f"{time.strftime('%H:%M:%S')} {text}")
    try:
        get_run_logger().info(text)
    except Exception:  # noqa: BLE001, S110 - outside a flow run there is no run logger
        pass


def result_artifact(scope: str, operation: str, result: Result) -> None:
    """A table of the result's top-level scalar fields, key `<scope>-<operation>-result`."""
    rows = [{"field": k, "value": str(v)} for k, v in result.to_json().items()
            if not isinstance(v, (dict, list)) and v is not None]
    create_table_artifact(key=f"{scope}-{operation}-result".lower(), table=rows,
                          description=f"{operation} of {scope}")


@contextmanager
def operation(name: str, spec: ClusterSpec, lock_scope: str | None = None, wait_seconds: float = 0) -> Iterator[Op]:
    """Hold the cluster's mutating lock (refuse at once, or wait `wait_seconds`) and time the operation.

    The context form of `mutating_flow`, for a flow that does more after releasing the lock
    (the backup flow verifies its new set under another lock).
    """
    op = Op(name=name, scope=spec.scope)
    holder = holder_name(name)
    # With a Prefect server: its global concurrency limit `pgha-<scope>` excludes runs on every
    # worker's machine (refused at once, or after wait_seconds); the host flock stays under it,
    # and is the whole guard with the ephemeral API.
    with cluster_limit(lock_scope or spec.scope, holder, wait_seconds=wait_seconds), \
            mutating(lock_scope or spec.scope, holder, wait_seconds=wait_seconds):
        token = _current.set(op)
        started, outcome = time.time(), "failed"
        try:
            yield op
            outcome = "completed"
        except (UsageError, SpecError):
            raise  # refused input: nothing was changed
        except Exception as exc:
            alert_if_left_unhealthy(spec, name, exc)
            raise
        finally:
            _current.reset(token)
            # The journal `pgha history` reads to name the cause of a leader change.
            journal.record(spec.scope, {"operation": name, "started": round(started, 3), "outcome": outcome,
                                        "run": journal.run_id(), **op.detail},
                           max_bytes=spec.state.journal_kib * 1024)
            events.operation_ended(spec.scope, name, outcome, op.elapsed(), op.detail)


def alert_if_left_unhealthy(spec: ClusterSpec, operation_name: str, exc: BaseException) -> None:
    """A failed mutating operation that could not leave a healthy cluster emits the event the
    `pgha-unhealthy-after-failure` alert automation notifies on (best effort, never masks `exc`)."""
    try:
        from tasks.cluster_health import cluster_status

        st = cluster_status(spec)
        if st.healthy:
            return
        error = (str(exc).splitlines() or [type(exc).__name__])[0]
        events.unhealthy_after_failure(spec.scope, operation_name, error, st.problems)
        note(f"{operation_name} failed and {spec.scope} is not healthy: alert sent")
    except Exception:  # noqa: BLE001, S110 - the operation's own error is what the caller must see
        pass


def mutating_flow(operation_name: str, lock: Callable[[dict[str, Any]], str] | None = None,
                  default_wait: float = 0, creates: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the wrapped flow body under the cluster's mutating lock, timed, with its result artifact.

    The lock's scope is the `spec` argument's scope unless `lock` computes another from the
    bound arguments (restore into a new scope locks that one). A `wait_seconds` argument, when
    the flow has one, is how long to wait for the lock. `creates`: the operation may create the
    cluster, so a deployment run for a scope with no stored spec takes the code's defaults.
    """

    def deco(fn: Callable[P, R]) -> Callable[P, R]:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            # After a finished major upgrade the user's spec (a deployment's parameter) names the
            # cluster; the flow runs on its serving generation (idempotent: a resolved spec stays).
            given: ClusterSpec = bound.arguments["spec"]
            spec: ClusterSpec = serving(given)
            bound.arguments["spec"] = spec
            args, kwargs = bound.args, bound.kwargs  # type: ignore[assignment]
            scope = lock(bound.arguments) if lock else spec.scope
            wait = float(bound.arguments.get("wait_seconds", default_wait) or default_wait)
            with operation(operation_name, spec, scope, wait):
                # A deployment run: the spec stored on this host for the scope, never the
                # parameter's own (refused when it says more); checked under the lock, so a
                # run meeting a busy cluster is told that first.
                if deployment_entry():
                    bound.arguments["spec"] = spec = serving(pinned_spec(given, creates))
                    args, kwargs = bound.args, bound.kwargs  # type: ignore[assignment]
                result = fn(*args, **kwargs)
            result_artifact(spec.scope, operation_name, result)
            return result

        # Prefect reads the parameters' types from the signature; resolve the flow module's
        # string annotations here, where this module's globals would not know its names.
        hints = typing.get_type_hints(fn, include_extras=True)
        wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()],
            return_annotation=hints.get("return", sig.return_annotation))
        return wrapper

    return deco
