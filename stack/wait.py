"""Named waits: poll a condition until it holds, never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from stack.errors import PghaError, WaitTimeout

T = TypeVar("T")


def wait_for(
    what: str,
    probe: Callable[[], T],
    ready: Callable[[T], bool],
    timeout: float,
    interval: float = 0.5,
    logs: Callable[[], str] | None = None,
    describe: Callable[[T], str] | None = None,
) -> T:
    """Call `probe` until `ready(value)` holds and return that value.

    A probe may raise a `PghaError` while the component is still starting: that counts as
    "not ready yet" and its message becomes the last state seen. On timeout, `WaitTimeout`
    carries the last state and, if `logs` is given, the component's recent logs.
    """
    deadline = time.monotonic() + timeout
    last: object = "nothing observed yet"
    while True:
        try:
            value = probe()
            if ready(value):
                return value
            last = describe(value) if describe else value
        except PghaError as exc:
            last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout, last, logs() if logs else "")
        time.sleep(interval)
