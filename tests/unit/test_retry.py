"""Which failures a backup run tries again: transient engine hiccups, never refusals."""

from __future__ import annotations

import http.client

import pytest
import requests

from stack.errors import DockerError, ExecError, PatroniError, SpecError, StateError, UsageError
from stack.retry import OUTPUT_CUT, Verdict, classify, with_retries
from tasks.pgbackrest import BackupError


@pytest.mark.parametrize("exc", [
    # the CI failure this exists for: a file installation whose exec output the engine cut short
    BackupError(f"cannot install pgBackRest files in pg-2: ({OUTPUT_CUT})"),
    BackupError(f"pgbackrest backup failed (exit 254): ({OUTPUT_CUT})"),
    DockerError("exec in pgha-pg-2: its host's engine does not answer (ConnectionError)"),
    DockerError("host local's engine does not answer (ReadTimeout)"),
    ConnectionResetError(104, "Connection reset by peer"),
    requests.exceptions.ConnectionError("('Connection aborted.', RemoteDisconnected(...))"),
    requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"),
    http.client.RemoteDisconnected("Remote end closed connection without response"),
    PatroniError("GET /cluster on pg-1: connection reset"),
])
def test_transient_engine_and_connection_failures_are_retried(exc: BaseException) -> None:
    assert classify(exc).verdict is Verdict.RETRY, classify(exc)


@pytest.mark.parametrize("exc", [
    SpecError("backup.retention_full: must be at least 1"),
    UsageError("backups are disabled in the spec of lab (backup.enabled: false)"),
    StateError("no backup of lab: no healthy replica"),
    # pgBackRest refusing: a retry would refuse again (or do harm)
    BackupError("pgbackrest backup failed (exit 50): ERROR: [050]: unable to acquire lock on file"),
    BackupError("pgbackrest check (is WAL archiving working?) failed (pgbackrest exit 82): ERROR: [082]: WAL segment "
                "was not archived before the 60000ms timeout"),
    # broken archiving found by the backup's own start (the flow runs no `check` first): not retried
    BackupError("pgbackrest backup failed (exit 82): ERROR: [082]: WAL segment 00000001000000000000000A was not "
                "archived before the 120000ms timeout"),
    BackupError("pgbackrest reported success but the new set is not in `pgbackrest info`"),
    ExecError("psql failed in pgha-pg-1 (exit 2): FATAL: password authentication failed"),
    DockerError("container pgha-pg-2 does not exist"),
    ValueError("bad"),
])
def test_refusals_and_bad_input_fail_at_once(exc: BaseException) -> None:
    assert classify(exc).verdict is Verdict.FAIL, classify(exc)


def test_a_state_error_mentioning_a_reset_is_still_not_retried() -> None:
    assert classify(StateError("the cluster was reset: connection reset")).verdict is Verdict.FAIL


def test_with_retries_runs_again_after_each_delay_then_succeeds() -> None:
    calls: list[int] = []
    slept: list[float] = []
    told: list[tuple[int, float]] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise BackupError(f"cannot install pgBackRest files in pg-2: ({OUTPUT_CUT})")
        return "set"

    out = with_retries(flaky, (10.0, 30.0), lambda n, _e, d: told.append((n, d)), sleep=slept.append)
    assert out == "set" and len(calls) == 3 and slept == [10.0, 30.0] and told == [(1, 10.0), (2, 30.0)]


def test_with_retries_gives_up_after_the_last_delay_with_the_last_error() -> None:
    calls: list[int] = []

    def always() -> None:
        calls.append(1)
        raise DockerError(f"exec {len(calls)}: ({OUTPUT_CUT})")

    with pytest.raises(DockerError, match="exec 3"):
        with_retries(always, (1.0, 1.0), sleep=lambda _s: None)
    assert len(calls) == 3


def test_with_retries_fails_a_refusal_on_the_first_try() -> None:
    calls: list[int] = []

    def refuse() -> None:
        calls.append(1)
        raise BackupError("pgbackrest backup failed (exit 50): ERROR: [050]: unable to acquire lock")

    with pytest.raises(BackupError):
        with_retries(refuse, (1.0, 1.0), sleep=lambda _s: pytest.fail("slept before a refusal"))
    assert calls == [1]
