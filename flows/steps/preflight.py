"""Preflight once: a check the CLI ran is not run again by the flow in the same process."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# The CLI runs a flow's preflight before the flow starts (a refusal then costs no Prefect
# start-up and prints no flow-run traceback); the flow runs the same preflight as its first
# step, because a deployment run has no CLI in front of it. Within one process the second
# call returns the first one's result instead of checking everything again.
_checked: dict[str, Any] = {}


def _key(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    def plain(a: Any) -> Any:
        return a.model_dump(mode="json") if hasattr(a, "model_dump") else a

    return f"{fn.__module__}.{fn.__qualname__}:" + json.dumps([plain(a) for a in args], sort_keys=True, default=str)


def preflight_once(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` unless this process just ran it with the same arguments; then reuse its result.

    A result is reused once (the flow's own call consumes it), so a later operation in the
    same process checks again.
    """
    key = _key(fn, args)
    if key in _checked:
        return _checked.pop(key)  # type: ignore[no-any-return]
    result = fn(*args)
    _checked[key] = result
    return result


def forget_preflight(fn: Callable[..., Any], *args: Any) -> None:
    """Drop a remembered result (the CLI refused after the preflight, no flow will consume it)."""
    _checked.pop(_key(fn, args), None)
