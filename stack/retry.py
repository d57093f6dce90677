"""Which failures are worth another try, pure: a busy engine's hiccup, not a refusal.

A scheduled backup has no second run: the night's set is simply missing and the alert fires.
So the backup flow runs its steps again when what failed them was transient - the engine cut a
command's output short, its API or a connection was reset, the engine did not answer - and
fails at once on everything else: a bad spec, a cluster in a state that forbids the
operation, pgBackRest refusing (a lock held, a repository mismatch, a failed check).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from stack.errors import SpecError, StateError, UsageError

T = TypeVar("T")

# tasks.node_exec's note on a command whose output stream ended before its exit mark.
OUTPUT_CUT = "the engine cut this command's output short"
# libpq's words when its connect_timeout passes (a busy machine's TLS and SCRAM exchange through HAProxy).
CONNECT_TIMED_OUT = "timeout expired"
# What the adapters say when the engine or a connection went away under a call.
TRANSIENT_MARKS = (OUTPUT_CUT, "engine does not answer", "connection reset", "connection aborted",
                   "broken pipe", "remote end closed connection", CONNECT_TIMED_OUT)
# Transport errors by class name (requests', urllib3's, http.client's), which a pure module does not import.
TRANSPORT_ERRORS = frozenset({"ConnectionError", "ChunkedEncodingError", "ProtocolError", "RemoteDisconnected",
                              "IncompleteRead", "ReadTimeout"})


class Verdict(StrEnum):
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True)
class Classified:
    verdict: Verdict
    reason: str


def classify(exc: BaseException) -> Classified:
    """RETRY for a transient engine or connection failure; FAIL for anything a retry cannot change."""
    if isinstance(exc, (SpecError, UsageError, StateError)):
        return Classified(Verdict.FAIL, f"not transient: {type(exc).__name__}")
    text = str(exc).lower()
    if mark := next((m for m in TRANSIENT_MARKS if m in text), None):
        return Classified(Verdict.RETRY, f"transient: {mark}")
    if isinstance(exc, ConnectionError) or any(c.__name__ in TRANSPORT_ERRORS for c in type(exc).__mro__):
        return Classified(Verdict.RETRY, f"transient: {type(exc).__name__}")
    return Classified(Verdict.FAIL, f"not transient: {type(exc).__name__}")


def with_retries(fn: Callable[[], T], delays_s: Sequence[float],
                 on_retry: Callable[[int, BaseException, float], None] = lambda *_: None,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """`fn()`, run again after each delay in `delays_s` while it fails transiently (`classify`).

    `on_retry(attempt, exc, delay)` is told before each new try (attempt counts from 1); the
    last failure, or the first one that is not transient, is raised as it was.
    """
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt > len(delays_s) or classify(exc).verdict is Verdict.FAIL:
                raise
            delay = delays_s[attempt - 1]
            on_retry(attempt, exc, delay)
            sleep(delay)
            attempt += 1
