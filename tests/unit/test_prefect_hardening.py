"""The Prefect hardening's pure parts: approval answers, the limit's name, silence alerts, the auth file."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.steps.approval import approval_refusal, in_deployment_run, require_approval
from stack import alerts as al
from stack.errors import UsageError
from stack.spec import ClusterSpec
from tasks import cluster_limit as cl
from tasks import prefect_auth as pa
from tasks import prefect_server as ps
from tasks import prefect_workers as pw


def test_only_the_exact_scope_approves() -> None:
    spec = ClusterSpec(scope="pgha-it-x1")
    assert approval_refusal(spec, "pgha-it-x1") is None
    assert approval_refusal(spec, "  pgha-it-x1 \n") is None  # a pasted newline is not a refusal
    for typed in ("", "pgha-it-x2", "PGHA-IT-X1", "yes"):
        msg = approval_refusal(spec, typed)
        assert msg is not None and "nothing changed" in msg and "pgha-it-x1" in msg


def test_outside_a_deployment_the_callers_confirmation_is_the_approval() -> None:
    assert not in_deployment_run()
    assert require_approval(ClusterSpec(scope="pgha-it-x1"), "teardown with volumes").startswith("run outside")


def test_limit_names_and_when_the_limit_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cl.limit_name("hy-home-db") == "pgha-hy-home-db"
    assert cl.limit_name("hy-home-db/verify") == "pgha-hy-home-db-verify"
    assert cl.holder_variable("hy-home-db") == "pgha_holder_hy_home_db"
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.delenv(cl.EPHEMERAL_ENV, raising=False)
    monkeypatch.delenv(cl.OFF_ENV, raising=False)
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    assert cl.in_use()
    monkeypatch.setenv(cl.EPHEMERAL_ENV, "1")  # pgha's own ephemeral API: the flock alone
    assert not cl.in_use()
    monkeypatch.delenv(cl.EPHEMERAL_ENV)
    monkeypatch.setenv(cl.OFF_ENV, "1")
    assert not cl.in_use()
    monkeypatch.undo()
    refresh_global_settings_context()  # no server URL left behind for the other tests


def test_silence_alerts_per_cluster_are_proactive_and_accepted_by_prefect() -> None:
    from prefect.events.schemas.automations import EventTrigger, Posture

    cfg = al.load_alerts()
    assert cfg.silence.audit_within_s == 3600 and cfg.silence.backup_within_s == 26 * 3600
    alerts = al.silence_alerts(cfg, ["b-db", "a-db", "a-db"])
    assert [a.name for a in alerts] == ["pgha-silence-audit-a-db", "pgha-silence-backup-a-db",
                                        "pgha-silence-audit-b-db", "pgha-silence-backup-b-db"]
    audit = alerts[0]
    t = EventTrigger(**audit.trigger)  # type: ignore[arg-type]
    assert t.posture == Posture.Proactive and t.expect == {al.AUDIT_EVENT} and t.within.total_seconds() == 3600
    assert t.match.model_dump()["prefect.resource.id"] == "pgha.cluster.a-db"
    assert "within 1 h" in audit.subject and "within 26 h" in alerts[1].subject
    (unhealthy,) = al.unhealthy_alert(cfg)
    EventTrigger(**unhealthy.trigger)  # type: ignore[arg-type]
    off = cfg.model_copy(update={"silence": al.Silence(enabled=False, unhealthy_after_failure=False)})
    assert al.silence_alerts(off, ["a-db"]) == [] and al.unhealthy_alert(off) == []


def test_silence_window_below_prefects_minimum_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "alerts.yaml"
    f.write_text("alerts: [{name: pgha-x}]\nsilence: {audit_within_s: 5}\n")
    from stack.errors import SpecError

    with pytest.raises(SpecError, match="silence.audit_within_s"):
        al.load_alerts(f)


def test_the_auth_secret_is_made_once_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    assert pa.auth_string() is None
    made = pa.auth_string(create=True)
    assert made is not None and made.startswith("pgha:") and pa.auth_string(create=True) == made
    assert pa.auth_file().stat().st_mode & 0o777 == 0o600
    assert ps.env()["PREFECT_API_AUTH_STRING"] == made  # the client side; the server's own only in its process


def test_a_worker_auth_file_must_be_private_and_well_formed(tmp_path: Path) -> None:
    f = tmp_path / "auth"
    f.write_text("pgha:" + "x" * 30 + "\n")
    f.chmod(0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        pa.read_auth_file(f)
    f.chmod(0o600)
    assert pa.read_auth_file(f) == "pgha:" + "x" * 30
    f.write_text("no-colon-here\n")
    with pytest.raises(UsageError, match="user:password"):
        pa.read_auth_file(f)
    with pytest.raises(UsageError, match="cannot read"):
        pa.read_auth_file(tmp_path / "missing")
    with pytest.raises(UsageError, match="worker name"):
        pw.start_extra_worker("Bad_Name", None, None)
