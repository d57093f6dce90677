"""Shared Prefect task settings: no caching of side effects, retries only when transient."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from stack.errors import DockerError, EtcdError, ExecError, ImageError, PatroniError, PostgresError


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry engine hiccups and component connection errors, never user or state errors."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a state without a result is not worth a retry
        return False
    if isinstance(exc, (ImageError, ExecError)):  # a build, or a command that ran and failed
        return False
    return isinstance(exc, (DockerError, EtcdError, PatroniError, PostgresError, ConnectionError))


SIDE_EFFECT: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "retries": 2,
    "retry_delay_seconds": [1, 4],
    "retry_condition_fn": transient,
}
# A side effect that must not be retried (a fault, a build failure) or a read: never cached.
ONCE: dict[str, Any] = {"cache_policy": NO_CACHE}
READ_ONLY = ONCE
