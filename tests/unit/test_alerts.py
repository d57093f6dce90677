"""Alerts as code: the shipped file is valid, the trigger matches health-tagged failures, bad input is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import alerts as al
from stack.errors import SpecError, UsageError


def test_shipped_alerts_file_is_valid() -> None:
    cfg = al.load_alerts()
    names = [a.name for a in cfg.alerts]
    assert "pgha-health-flow-failed" in names
    a = cfg.alerts[0]
    assert a.tags == ["health"] and set(a.states) == {"Failed", "Crashed"}


def test_trigger_matches_failed_or_crashed_runs_with_the_tag() -> None:
    t = al.trigger(al.Alert(name="x-health", tags=["health", "backup"]))
    assert t["expect"] == ["prefect.flow-run.Crashed", "prefect.flow-run.Failed"]
    assert t["match_related"] == {"prefect.resource.role": "tag",
                                  "prefect.resource.id": ["prefect.tag.health", "prefect.tag.backup"]}
    assert t["posture"] == "Reactive" and t["threshold"] == 1
    from prefect.events.schemas.automations import EventTrigger

    EventTrigger(**t)  # type: ignore[arg-type]  # accepted by Prefect's own model


def render(template: str, params: dict[str, object]) -> str:
    """Render as the Prefect server does when the automation fires: its sandbox, filters and models."""
    import uuid

    from prefect.server.events.actions import SendNotification
    from prefect.server.schemas.core import Flow
    from prefect.server.schemas.responses import FlowRunResponse
    from prefect.server.schemas.states import State, StateType
    from prefect.server.utilities.user_templates import render_user_template_sync
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    # Building the action validates the template against the server's sandbox and registers
    # the server's filters (`ui_url`) in the environment render_user_template_sync uses.
    SendNotification(block_document_id=uuid.uuid4(), subject=al.DEFAULT_SUBJECT, body=template)
    flow = Flow(id=uuid.uuid4(), name="health-audit")
    run = FlowRunResponse(
        id=uuid.UUID("00000000-0000-0000-0000-000000001234"), name="brave-otter", flow_id=flow.id,
        parameters=params,
        state=State(type=StateType.FAILED, name="Failed",
                    message="health audit of lab: 1 critical: container.running pg-2: exited"),
    )
    with temporary_settings({PREFECT_UI_URL: "http://127.0.0.1:4200"}):
        return render_user_template_sync(template, {"flow_run": run, "flow": flow, "deployment": None})


@pytest.mark.parametrize(("params", "cluster"), [
    ({"spec": {"scope": "lab"}}, "lab"), ({}, "hy-home-db"), ({"spec": {}}, "hy-home-db"), ({"scope": "bk1"}, "bk1"),
])
def test_message_names_cluster_failing_checks_and_link(params: dict[str, object], cluster: str) -> None:
    body = render(al.DEFAULT_BODY, params)
    assert f"cluster: {cluster}\n" in body
    assert "failing checks: health audit of lab: 1 critical: container.running pg-2: exited" in body
    assert "link: http://127.0.0.1:4200/runs/flow-run/00000000-0000-0000-0000-000000001234" in body
    assert render(al.DEFAULT_SUBJECT, params) == f"pgha: health-audit failed on cluster {cluster}"


def test_webhook_url_from_env_then_file(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("notification: {webhook_url: 'https://hooks.example/x'}\nalerts: [{name: abc}]\n")
    cfg = al.load_alerts(f)
    assert al.webhook_url(cfg, env={}) == "https://hooks.example/x"
    assert al.webhook_url(cfg, env={al.WEBHOOK_ENV: "http://127.0.0.1:9/h"}) == "http://127.0.0.1:9/h"
    with pytest.raises(UsageError, match="no alert webhook configured"):
        al.webhook_url(al.load_alerts(), env={})
    with pytest.raises(UsageError, match="must start with http"):
        al.webhook_url(cfg, env={al.WEBHOOK_ENV: "ftp://x"})


@pytest.mark.parametrize(("text", "message"), [
    ("alerts: []", "alerts: List should have at least 1 item"),
    ("alerts: [{name: abc, states: [Exploded]}]", "unknown state 'Exploded'"),
    ("alerts: [{name: abc}, {name: abc}]", "alert names must be unique"),
    ("alerts: [{name: abc, colour: red}]", "alerts.0.colour: Extra inputs are not permitted"),
    ("alerts: [", "is not valid YAML"),
])
def test_bad_alerts_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(SpecError) as info:
        al.load_alerts(f)
    assert message in str(info.value)


def test_notification_block_per_kind(tmp_path: Path) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock, SendgridEmail, SlackWebhook

    f = tmp_path / "a.yaml"
    f.write_text("alerts: [{name: abc}]\n")
    block, target = al.notification_block(al.load_alerts(f), env={al.WEBHOOK_ENV: "http://127.0.0.1:9/h"})
    assert isinstance(block, CustomWebhookNotificationBlock) and target == "http://127.0.0.1:9/h"
    assert block.json_data == al.WEBHOOK_JSON
    f.write_text("notification: {kind: slack}\nalerts: [{name: abc}]\n")
    with pytest.raises(UsageError, match="PGHA_ALERT_SLACK_URL"):
        al.notification_block(al.load_alerts(f), env={})
    block, target = al.notification_block(al.load_alerts(f), env={al.SLACK_ENV: "https://hooks.slack.com/services/T/B/x"})
    assert isinstance(block, SlackWebhook) and target == "Slack"
    f.write_text("notification: {kind: email, email_from: pgha@example.org, email_to: [dba@example.org]}\n"
                 "alerts: [{name: abc}]\n")
    with pytest.raises(UsageError, match="PGHA_ALERT_SENDGRID_API_KEY"):
        al.notification_block(al.load_alerts(f), env={})
    block, target = al.notification_block(al.load_alerts(f), env={al.SENDGRID_ENV: "SG.key"})
    assert isinstance(block, SendgridEmail) and target == "e-mail to dba@example.org"
    assert "SG.key" not in repr(block)  # the key is a SecretStr


# ---- the heartbeat (dead man's switch) ----

def _hb(tmp_path: Path, body: str) -> al.Heartbeat | None:
    f = tmp_path / "alerts.yaml"
    f.write_text("alerts: [{name: abc}]\n" + body)
    return al.heartbeat(al.load_alerts(f), env={})


def test_heartbeat_is_off_by_default_and_the_env_overrides_the_file(tmp_path: Path) -> None:
    assert al.heartbeat(al.load_alerts(), env={}) is None  # the shipped file pings nothing
    hb = _hb(tmp_path, "heartbeat: {url: 'https://hc-ping.com/k/{scope}'}\n")
    assert hb is not None and hb.url == "https://hc-ping.com/k/{scope}" and hb.style == "healthchecks"
    over = al.heartbeat(al.load_alerts(), env={al.HEARTBEAT_ENV: "http://127.0.0.1:9/hb"})
    assert over is not None and over.url == "http://127.0.0.1:9/hb"


@pytest.mark.parametrize("url", ["ftp://x/y", "hc-ping.com/uuid", "javascript:alert(1)", "http://"])
def test_heartbeat_url_must_be_http(tmp_path: Path, url: str) -> None:
    f = tmp_path / "alerts.yaml"
    f.write_text(f"alerts: [{{name: abc}}]\nheartbeat: {{url: '{url}'}}\n")
    with pytest.raises(SpecError, match="heartbeat.url: must be an http:// or https:// URL"):
        al.load_alerts(f)
    with pytest.raises(UsageError, match=f"{al.HEARTBEAT_ENV}: must be an http"):
        al.heartbeat(al.load_alerts(), env={al.HEARTBEAT_ENV: url})


def test_heartbeat_refusal_never_echoes_the_whole_url(tmp_path: Path) -> None:
    secret = "ftp://hc-ping.com/0f1e2d3c-secret-ping-key"
    with pytest.raises(UsageError) as exc:
        al.heartbeat(None, env={al.HEARTBEAT_ENV: secret})
    assert "secret-ping-key" not in str(exc.value)


def test_heartbeat_pings_in_each_services_convention(tmp_path: Path) -> None:
    from tasks.heartbeat import heartbeat_ping

    hc = al.Heartbeat(url="https://hc-ping.com/key/{scope}")
    assert heartbeat_ping(hc, "lab-1", "start") == ("POST", "https://hc-ping.com/key/lab-1/start")
    assert heartbeat_ping(hc, "lab-1", "success") == ("POST", "https://hc-ping.com/key/lab-1")
    assert heartbeat_ping(hc, "lab-1", "fail") == ("POST", "https://hc-ping.com/key/lab-1/fail")
    uuid = al.Heartbeat(url="https://hc-ping.com/0f1e2d3c/")  # a trailing slash is not doubled
    assert heartbeat_ping(uuid, "x", "fail") == ("POST", "https://hc-ping.com/0f1e2d3c/fail")
    kuma = al.Heartbeat(url="https://kuma.example/api/push/T0k3n?ping=", style="uptime-kuma")
    assert heartbeat_ping(kuma, "x", "start") is None  # push monitors know up and down only
    assert heartbeat_ping(kuma, "x", "success", "ok") == ("GET", "https://kuma.example/api/push/T0k3n?ping=&status=up&msg=ok")
    method, url = heartbeat_ping(kuma, "x", "fail", "2 critical: pg-2 down") or ("", "")
    assert method == "GET" and url.endswith("&status=down&msg=2%20critical%3A%20pg-2%20down")


def test_heartbeat_ping_never_raises_nor_names_the_url() -> None:
    from tasks.heartbeat import ping

    hb = al.Heartbeat(url="http://127.0.0.1:9/secret-key", timeout_s=1)  # port 9: nothing listens
    out = ping(hb, "x", "start")
    assert out.startswith("start: ") and "secret-key" not in out
