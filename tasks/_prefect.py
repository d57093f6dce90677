"""Shared Prefect task settings, and `task`: a Prefect task created on first use.

Importing Prefect costs 1.5-3 s; read-only verbs (`pgha status`, `logs`, `history`, ...) run
adapter code outside any flow and must not pay it. So the adapters on those paths declare
their tasks with this module's `task`, which builds the real `prefect.task` only when the task
is first called (or `.submit`ted, `.map`ped, ...) — that is, inside a flow, where Prefect is
loaded anyway. Its default cache policy is NO_CACHE (never cache a side effect or a read).
`SIDE_EFFECT`, `ONCE` and `READ_ONLY` stay importable for modules that use `prefect.task`
directly; they load Prefect when first read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypedDict, TypeVar

from stack.errors import DockerError, EtcdError, ExecError, ImageError, PatroniError, PostgresError

P = ParamSpec("P")
R = TypeVar("R")


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry engine hiccups and component connection errors, never user or state errors."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a state without a result is not worth a retry
        return False
    if isinstance(exc, (ImageError, ExecError)):  # a build, or a command that ran and failed
        return False
    return isinstance(exc, (DockerError, EtcdError, PatroniError, PostgresError, ConnectionError))


class TaskPreset(TypedDict, total=False):
    """Keyword arguments of `prefect.task` that pgha presets (`@task(name=..., **SIDE_EFFECT)`)."""

    cache_policy: Any  # a Prefect CachePolicy: typed loosely so this module does not load Prefect
    retries: int
    retry_delay_seconds: list[int]
    retry_condition_fn: Callable[[Any, Any, Any], bool]


# What SIDE_EFFECT adds to the default (no cache), without loading Prefect: `@task(name=..., **RETRY_TRANSIENT)`.
RETRY_TRANSIENT: TaskPreset = {"retries": 2, "retry_delay_seconds": [1, 4], "retry_condition_fn": transient}


class LazyTask(Generic[P, R]):
    """A Prefect task built from `fn` and `options` the first time it is used."""

    def __init__(self, fn: Callable[P, R], options: dict[str, Any]) -> None:
        self.fn = fn
        self._options = options
        self._task: Any = None
        functools.update_wrapper(self, fn)

    def real(self) -> Any:
        """The `prefect.Task` (Prefect is imported here, once)."""
        if self._task is None:
            from prefect import task as prefect_task
            from prefect.cache_policies import NO_CACHE

            self._task = prefect_task(**{"cache_policy": NO_CACHE, **self._options})(self.fn)
        return self._task

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.real()(*args, **kwargs)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:  # submit, map, with_options, name, ...
        if name.startswith("__") or name in ("fn", "_options", "_task"):
            raise AttributeError(name)
        return getattr(self.real(), name)


def task(**options: Any) -> Callable[[Callable[P, R]], LazyTask[P, R]]:
    """`prefect.task(**options)`, created on first use; cache_policy defaults to NO_CACHE."""

    def deco(fn: Callable[P, R]) -> LazyTask[P, R]:
        return LazyTask(fn, options)

    return deco


def __getattr__(name: str) -> TaskPreset:
    """SIDE_EFFECT / ONCE / READ_ONLY for `prefect.task(**PRESET)` users (loads Prefect)."""
    if name not in ("SIDE_EFFECT", "ONCE", "READ_ONLY"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from prefect.cache_policies import NO_CACHE

    # A side effect that must not be retried (a fault, a build failure) or a read: never cached.
    preset: TaskPreset = {"cache_policy": NO_CACHE}
    if name == "SIDE_EFFECT":
        preset.update(RETRY_TRANSIENT)
    return preset
