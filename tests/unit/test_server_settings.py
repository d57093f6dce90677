"""The server's history retention: the default, the refusals, the vacuum settings, what a server reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import server as S
from stack.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = S.schedule_crons((ROOT / "prefect.yaml").read_text())


def test_the_shipped_schedules_longest_interval_is_a_week() -> None:
    assert "*/15 * * * *" in SHIPPED and "0 2 * * 0" in SHIPPED
    assert S.longest_interval_s(SHIPPED) == 7 * 86400
    assert S.longest_interval_s([]) == 0
    assert S.longest_interval_s(["0 3 1 * *"]) == 31 * 86400  # monthly: the longest month in two


def test_retention_defaults_to_30_days_and_turns_the_flow_run_vacuum_on() -> None:
    assert S.retention_days(None, SHIPPED) == 30 and S.retention_days(" ", SHIPPED) == 30
    assert S.retention_days("7", SHIPPED) == 7  # exactly the longest interval is enough
    assert S.vacuum_settings(30) == {"PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
                                     "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(30 * 86400)}


@pytest.mark.parametrize(("raw", "message"), [
    ("6", "PGHA_HISTORY_RETENTION_DAYS=6 is shorter than the longest schedule interval in prefect.yaml (7 days)"),
    ("0", "must be between 1 and 3650 days, not 0"),
    ("-3", "must be between 1 and 3650 days, not -3"),
    ("30d", "must be a whole number of days, not '30d'"),
    ("99999", "must be between 1 and 3650 days"),
])
def test_bad_retention_is_refused_in_one_line(raw: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        S.retention_days(raw, SHIPPED)
    assert "\n" not in str(exc.value)


def test_what_a_running_server_keeps() -> None:
    assert S.served_retention_days({"enabled": ["events"], "retention_period": "P90D"}) is None  # Prefect's default
    assert S.served_retention_days({"enabled": ["events", "flow_runs", "orphans"], "retention_period": "P30D"}) == 30
    assert S.served_retention_days({"enabled": True, "retention_period": "PT43200S"}) == 0.5
    assert S.describe_days(None) == "flow runs forever (no flow-run vacuum)"
    assert S.describe_days(8.0) == "flow runs for 8 days"


def test_the_server_environment_carries_the_retention(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tasks import prefect_server as ps

    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    monkeypatch.setenv(S.RETENTION_ENV, "14")
    e = ps.plane("img").server_def().environment
    assert e["PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD"] == str(14 * 86400)
    monkeypatch.setenv(S.RETENTION_ENV, "3")
    with pytest.raises(UsageError, match="shorter than the longest schedule interval"):
        ps.plane("img")
