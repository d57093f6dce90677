"""The Prefect server's own settings pgha decides: how long run history is kept.

Pure: the caller reads prefect.yaml and the environment. Prefect 3's `db_vacuum` service deletes
only events by default (`PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED` = events), so flow runs, their
task runs, states, logs and artifacts would be kept forever; pgha turns the flow-run vacuum on
with a retention period (default 30 days). A retention shorter than the longest interval between
two runs of one schedule is refused: the weekly backup's previous run, its artifacts and logs
would be gone before the next one could be compared with it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml

from stack.errors import UsageError

RETENTION_ENV = "PGHA_HISTORY_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 30
MAX_RETENTION_DAYS = 3650


def schedule_crons(prefect_yaml: str) -> list[str]:
    """Every `cron` of every deployment's schedules in prefect.yaml's text."""
    doc: dict[str, Any] = yaml.safe_load(prefect_yaml) or {}
    return [str(s["cron"]) for d in doc.get("deployments") or [] for s in d.get("schedules") or []
            if isinstance(s, dict) and s.get("cron") and s.get("active", True) is not False]


def longest_interval_s(crons: list[str], start: dt.datetime | None = None, horizon_days: int = 62) -> float:
    """The longest gap between two consecutive firings of any one cron, looked at over `horizon_days`
    (two months covers weekly and monthly schedules); 0 for no schedules."""
    from cronsim import CronSim

    t0 = start or dt.datetime(2026, 1, 1)
    end = t0 + dt.timedelta(days=horizon_days)
    longest = 0.0
    for expr in crons:
        it = CronSim(expr, t0)
        prev = next(it)
        while prev < end:
            nxt = next(it)
            longest = max(longest, (nxt - prev).total_seconds())
            prev = nxt
    return longest


def retention_days(raw: str | None, crons: list[str]) -> int:
    """Days of flow-run history the server keeps: $PGHA_HISTORY_RETENTION_DAYS, else 30; refused in one
    line when it is not a whole number of days, or shorter than the longest schedule interval."""
    if raw is None or raw.strip() == "":
        days = DEFAULT_RETENTION_DAYS
    else:
        try:
            days = int(raw.strip())
        except ValueError:
            raise UsageError(f"{RETENTION_ENV} must be a whole number of days, not {raw[:20]!r}") from None
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise UsageError(f"{RETENTION_ENV} must be between 1 and {MAX_RETENTION_DAYS} days, not {days}")
    longest = longest_interval_s(crons)
    if days * 86400 < longest:
        raise UsageError(f"{RETENTION_ENV}={days} is shorter than the longest schedule interval in prefect.yaml "
                         f"({longest / 86400:g} days): the previous run would be deleted before the next one")
    return days


def vacuum_settings(days: int) -> dict[str, str]:
    """The server's environment for the vacuum: flow runs (and their orphaned logs and artifacts)
    older than `days` days are deleted, events as before (Prefect's own 7 days)."""
    return {"PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
            "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(days * 86400)}


def served_retention_days(db_vacuum: dict[str, Any]) -> float | None:
    """Days a server keeps flow runs, from its effective `server.services.db_vacuum` settings
    (`enabled` a list or a bool, `retention_period` an ISO 8601 duration); None: kept forever."""
    from pydantic import TypeAdapter

    enabled = db_vacuum.get("enabled")
    on = enabled is True or (isinstance(enabled, list | set | tuple) and "flow_runs" in enabled)
    if not on:
        return None
    period = TypeAdapter(dt.timedelta).validate_python(db_vacuum.get("retention_period"))
    return period.total_seconds() / 86400


def describe_days(days: float | None) -> str:
    return "flow runs forever (no flow-run vacuum)" if days is None else f"flow runs for {days:g} days"
