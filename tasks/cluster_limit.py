"""One mutating flow per cluster across machines: a Prefect global concurrency limit `pgha-<scope>`.

The host flock (`tasks/host/lock.py`) only excludes flows that share this machine's state
directory. With a Prefect server, workers on several machines run deployments of the same
cluster, so the guard is also a global concurrency limit of 1 slot per cluster, held for the
whole operation (a lease, renewed by Prefect while the flow runs; freed by the server when the
holder dies and stops renewing it). It is taken strictly: a second mutating run is refused at
once (or after its `wait_seconds`) with one line naming the cluster, never left waiting.

Used whenever the flow talks to a Prefect server; skipped with pgha's ephemeral API (one
process, nothing else to exclude: the flock is the guard there). The holder's description is
kept in a Prefect variable `pgha-holder-<scope>`, so a refusal names the run that holds it,
wherever it runs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from stack.errors import StateError

LEASE_S = 60.0  # renewed by Prefect every ~lease/2 while the flow runs; a dead holder frees it after this
EPHEMERAL_ENV = "PGHA_EPHEMERAL_API"  # set by cli/api.py while pgha's own ephemeral API is in use
OFF_ENV = "PGHA_NO_GLOBAL_LIMIT"


def limit_name(scope: str) -> str:
    """`pgha-<scope>`; a lock scope such as `<scope>/verify` becomes `pgha-<scope>-verify`."""
    return "pgha-" + re.sub(r"[^A-Za-z0-9_-]", "-", scope)


def holder_variable(scope: str) -> str:
    return "pgha_holder_" + re.sub(r"[^a-z0-9_]", "_", scope.lower())


def in_use() -> bool:
    """True when flows run against a Prefect server (not pgha's ephemeral API, not switched off)."""
    if os.environ.get(OFF_ENV, "") not in ("", "0") or os.environ.get(EPHEMERAL_ENV) == "1":
        return False
    try:
        from prefect.settings import PREFECT_API_URL

        return bool(PREFECT_API_URL.value())
    except Exception:  # noqa: BLE001 - no Prefect settings: no server
        return False


def ensure_limit(scope: str) -> None:
    """Create the cluster's limit (1 slot) if it does not exist; idempotent across racing creators."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = limit_name(scope)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1, active=True))
        except ObjectAlreadyExists:
            pass


def _holder_text(scope: str) -> str:
    try:
        from prefect.variables import Variable

        value = Variable.get(holder_variable(scope), default=None)
        return str(value) if value else ""
    except Exception:  # noqa: BLE001 - naming the holder is best effort
        return ""


def _set_holder(scope: str, text: str | None) -> None:
    try:
        from prefect.variables import Variable

        if text is None:
            Variable.unset(holder_variable(scope))
        else:
            Variable.set(holder_variable(scope), text, overwrite=True)
    except Exception:  # noqa: BLE001, S110 - naming the holder is best effort; the limit is what excludes
        pass


class _DropSlotServiceFailures(logging.Filter):
    """A refused acquire (423) is our answer, not an error: Prefect's slot service would also log it
    at ERROR ("Service ... failed to process item") in the run's log next to our one line. Its
    failure always reaches the caller through the future it raises; only that log line is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "Service %r failed to process item %r" and record.args
                    and "ConcurrencySlotAcquisition" in str(record.args[0]))


def _quiet_refusals() -> None:
    log = logging.getLogger("prefect._internal.concurrency")
    if not any(isinstance(f, _DropSlotServiceFailures) for f in log.filters):
        log.addFilter(_DropSlotServiceFailures())


def _busy(scope: str) -> str:
    return (f"{_holder_text(scope) or 'another mutating flow run'} holds its Prefect concurrency limit "
            f"{limit_name(scope)}; retry when it ends")


@contextmanager
def cluster_limit(scope: str, holder: str, wait_seconds: float = 0) -> Iterator[None]:
    """Hold the cluster's global concurrency limit (no-op without a server); refuse in one line when busy."""
    if not in_use():
        yield
        return
    import httpx
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.sync import concurrency

    name = limit_name(scope)
    _quiet_refusals()

    def acquire() -> Any:
        # A lease renewal that fails once (a server restart) must not abort a flow mid-switchover:
        # raise_on_lease_renewal_failure=False; the flock still guards this machine meanwhile.
        cm = concurrency(name, occupy=1, strict=True, lease_duration=LEASE_S, raise_on_lease_renewal_failure=False,
                         timeout_seconds=wait_seconds if wait_seconds > 0 else None,
                         max_retries=None if wait_seconds > 0 else 0)
        cm.__enter__()
        return cm

    try:
        try:
            cm = acquire()
        except ConcurrencySlotAcquisitionError as exc:
            if "must be created" not in str(exc):
                raise
            ensure_limit(scope)  # the cluster's first mutating flow on this server: create it, once
            cm = acquire()
    except TimeoutError:
        raise StateError(f"cluster {scope} is still busy after {wait_seconds:.0f}s: {_busy(scope)}") from None
    except ConcurrencySlotAcquisitionError as exc:
        cause = exc.__cause__
        if isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 423:  # Locked: slot taken
            raise StateError(f"cluster {scope} is busy: {_busy(scope)}") from None
        raise StateError(f"cannot take the Prefect concurrency limit {name}: {str(exc)[:200]}") from None
    _set_holder(scope, holder)
    try:
        yield
    except BaseException as exc:
        _set_holder(scope, None)
        if not cm.__exit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        _set_holder(scope, None)
        cm.__exit__(None, None, None)
