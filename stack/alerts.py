"""Alerts as code: `deployments/alerts.yaml` read and validated into automation definitions.

Pure (no server): `tasks.prefect_alerts.apply_alerts` turns these into a notification block
and Prefect automations. An alert fires when a flow run carrying one of its tags (`health`:
the audit, the drills, the backups) ends in one of its states (Failed, Crashed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stack.errors import SpecError, UsageError

ROOT = Path(__file__).resolve().parent.parent
ALERTS_FILE = ROOT / "deployments" / "alerts.yaml"
WEBHOOK_ENV = "PGHA_ALERT_WEBHOOK_URL"
SLACK_ENV = "PGHA_ALERT_SLACK_URL"  # a Slack incoming-webhook URL is a secret: never in the file
SENDGRID_ENV = "PGHA_ALERT_SENDGRID_API_KEY"
HEARTBEAT_ENV = "PGHA_HEARTBEAT_URL"  # overrides heartbeat.url (a ping URL is a credential: anyone with it can ping)
STATES = ("Failed", "Crashed", "TimedOut", "Cancelled")

# The notification text. Jinja, rendered by the Prefect server when the automation fires:
# `flow_run.state.message` is the audit's list of critical findings (or the crash reason),
# `flow_run|ui_url` the link to the run (the server needs PREFECT_UI_URL for it).
CLUSTER_EXPR = ("{{ (flow_run.parameters.get('spec') or {}).get('scope') or flow_run.parameters.get('scope')"
                " or 'hy-home-db' }}")
DEFAULT_SUBJECT = "pgha: {{ flow.name }} {{ flow_run.state.name | lower }} on cluster " + CLUSTER_EXPR
DEFAULT_BODY = (
    "cluster: " + CLUSTER_EXPR + "\n"
    "flow: {{ flow.name }}{% if deployment %} (deployment {{ deployment.name }}){% endif %}\n"
    "run: {{ flow_run.name }} ({{ flow_run.id }}) ended {{ flow_run.state.name }}\n"
    "failing checks: {{ flow_run.state.message }}\n"
    "link: {{ flow_run|ui_url }}\n"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Notification(_Strict):
    """Where alerts go: one Prefect notification block. Secrets come from the environment only."""

    kind: Literal["webhook", "slack", "email"] = Field(
        "webhook", description="webhook: CustomWebhook (JSON POST); slack: SlackWebhook; email: SendgridEmail")
    block: str = Field("pgha-alerts", pattern=r"^[a-z0-9-]+$", description="notification block name")
    webhook_url: str | None = Field(None, description=f"kind webhook: POST target; ${WEBHOOK_ENV} overrides it")
    email_from: str | None = Field(None, description="kind email: sender address")
    email_to: list[str] = Field(default_factory=list, description="kind email: recipients")


class Alert(_Strict):
    name: str = Field(min_length=3, max_length=100)
    description: str = ""
    tags: list[str] = Field(default_factory=lambda: ["health"], min_length=1)
    states: list[str] = Field(default_factory=lambda: ["Failed", "Crashed"], min_length=1)
    subject: str = DEFAULT_SUBJECT
    body: str = DEFAULT_BODY
    enabled: bool = True

    @field_validator("states")
    @classmethod
    def _states(cls, v: list[str]) -> list[str]:
        for s in v:
            if s not in STATES:
                raise ValueError(f"unknown state {s!r}; use {', '.join(STATES)}")
        return v


class Silence(_Strict):
    """Proactive alerts: silence is a failure too. One automation per cluster and kind."""

    enabled: bool = True
    audit_within_s: int = Field(3600, ge=10, le=7 * 86400,
                                description="alert when no health audit of a cluster completed within this")
    backup_within_s: int = Field(26 * 3600, ge=10, le=30 * 86400,
                                 description="alert when no backup of a cluster completed within this")
    unhealthy_after_failure: bool = Field(True, description="alert when a mutating flow failed and left the "
                                                            "cluster unhealthy")


HeartbeatStyle = Literal["healthchecks", "uptime-kuma"]
HeartbeatEvent = Literal["start", "success", "fail"]


def _check_heartbeat_url(url: str) -> str:
    if not url.startswith(("http://", "https://")) or len(url) < len("http://x"):
        raise ValueError(f"must be an http:// or https:// URL, not {url[:12]!r}...")  # never the whole (secret) URL
    return url


class Heartbeat(_Strict):
    """A dead man's switch outside this host: every health audit pings it when it starts, when it
    succeeds, and with a failure when it fails, so the service alerts when the pings stop (the host,
    the server or the worker is gone) as well as when an audit fails."""

    url: str | None = Field(None, description="the check's ping URL (healthchecks.io, Uptime Kuma push); "
                                              "`{scope}` is replaced by the cluster's scope; "
                                              f"${HEARTBEAT_ENV} overrides it")
    style: HeartbeatStyle = Field("healthchecks", description="healthchecks: URL/start, URL, URL/fail; uptime-kuma: "
                                                              "URL?status=up|down&msg=... (no start ping)")
    timeout_s: float = Field(5.0, gt=0, le=30, description="per ping; a ping that fails is logged, never fails the audit")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _check_heartbeat_url(v)


class AlertsFile(_Strict):
    notification: Notification = Field(default_factory=Notification)  # type: ignore[arg-type]
    alerts: list[Alert] = Field(min_length=1)
    silence: Silence = Field(default_factory=Silence)  # type: ignore[arg-type]
    heartbeat: Heartbeat = Field(default_factory=Heartbeat)  # type: ignore[arg-type]

    @field_validator("alerts")
    @classmethod
    def _unique(cls, v: list[Alert]) -> list[Alert]:
        names = [a.name for a in v]
        if len(set(names)) != len(names):
            raise ValueError("alert names must be unique (they are how re-applying finds them)")
        return v


def load_alerts(path: Path = ALERTS_FILE) -> AlertsFile:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise SpecError(f"{path} is not valid YAML") from None
    try:
        return AlertsFile.model_validate(data or {})
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        raise SpecError(f"invalid alerts file {path}: {loc}: {str(e['msg']).removeprefix('Value error, ')}") from None


def webhook_url(cfg: AlertsFile, env: dict[str, str] | None = None) -> str:
    """The webhook target: $PGHA_ALERT_WEBHOOK_URL, else the file's `notification.webhook_url`."""
    env = dict(os.environ) if env is None else env
    url = env.get(WEBHOOK_ENV) or cfg.notification.webhook_url
    if not url:
        raise UsageError(f"no alert webhook configured: set {WEBHOOK_ENV} or notification.webhook_url in "
                         f"{ALERTS_FILE.relative_to(ROOT)}")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"alert webhook URL must start with http:// or https://, not {url[:40]!r}")
    return url


def heartbeat(cfg: AlertsFile | None, env: dict[str, str] | None = None) -> Heartbeat | None:
    """The heartbeat to ping, or None: $PGHA_HEARTBEAT_URL (validated like the file's) over `heartbeat.url`."""
    env = dict(os.environ) if env is None else env
    hb = cfg.heartbeat if cfg is not None else Heartbeat()
    url = env.get(HEARTBEAT_ENV) or hb.url
    if not url:
        return None
    try:
        _check_heartbeat_url(url)
    except ValueError as exc:
        raise UsageError(f"{HEARTBEAT_ENV}: {exc}") from None
    return hb.model_copy(update={"url": url})


def notification_block(cfg: AlertsFile, env: dict[str, str] | None = None) -> tuple[Any, str]:
    """The Prefect notification block for `notification.kind` and where it sends (for the log line)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock, SendgridEmail, SlackWebhook

    env = dict(os.environ) if env is None else env
    n = cfg.notification
    if n.kind == "slack":
        url = env.get(SLACK_ENV, "")
        if not url.startswith("https://"):
            raise UsageError(f"notification.kind slack needs {SLACK_ENV} (the https:// incoming-webhook URL)")
        return SlackWebhook(url=url), "Slack"
    if n.kind == "email":
        key = env.get(SENDGRID_ENV, "")
        if not key or not n.email_from or not n.email_to:
            raise UsageError(f"notification.kind email needs {SENDGRID_ENV}, notification.email_from and "
                             "notification.email_to")
        return SendgridEmail(api_key=key, sender_email=n.email_from, to_emails=list(n.email_to)), \
            "e-mail to " + ", ".join(n.email_to)
    url = webhook_url(cfg, env)
    return CustomWebhookNotificationBlock(name=n.block, url=url, method="POST", json_data=dict(WEBHOOK_JSON)), url


def trigger(alert: Alert) -> dict[str, Any]:
    """The automation's event trigger: a flow run with one of the tags reached one of the states."""
    return {
        "type": "event",
        "posture": "Reactive",
        "expect": sorted(f"prefect.flow-run.{s}" for s in alert.states),
        "match": {"prefect.resource.id": "prefect.flow-run.*"},
        "match_related": {"prefect.resource.role": "tag",
                          "prefect.resource.id": [f"prefect.tag.{t}" for t in alert.tags]},
        "threshold": 1,
        "within": 0,
    }


WEBHOOK_JSON = {"subject": "{{subject}}", "body": "{{body}}", "source": "pgha"}


# ---- event alerts: proactive (silence) and the unhealthy-after-failure one ----------------------
# Their templates read the event (`event.resource`, `event.payload`), not a flow run.
AUDIT_EVENT = "pgha.audit.completed"  # tasks/events.py emits it at the end of every audit
BACKUP_EVENT = "pgha.backup.completed"  # the backup operation's end (flows/steps/ops.operation)
UNHEALTHY_EVENT = "pgha.cluster.unhealthy-after-failure"
SILENCE_PREFIX = "pgha-silence-"
UNHEALTHY_ALERT = "pgha-unhealthy-after-failure"


class EventAlert(_Strict):
    """One automation on pgha events: its name, trigger (EventTrigger fields) and notification text."""

    name: str
    description: str
    trigger: dict[str, Any]
    subject: str
    body: str


def _human(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def silence_alerts(cfg: AlertsFile, scopes: list[str]) -> list[EventAlert]:
    """Per cluster: no `pgha.audit.completed` within the audit window, no backup within the backup window.

    A Proactive trigger without `for_each` opens its window when the automation is (re)applied
    and fires when the window closes without the expected event; then the next window opens, so
    a silent cluster is reported once per window until its audits (backups) come back.
    """
    if not cfg.silence.enabled:
        return []
    out = []
    for scope in sorted(set(scopes)):
        for kind, event, within in (("audit", AUDIT_EVENT, cfg.silence.audit_within_s),
                                    ("backup", BACKUP_EVENT, cfg.silence.backup_within_s)):
            what = "health audit" if kind == "audit" else "backup"
            out.append(EventAlert(
                name=f"{SILENCE_PREFIX}{kind}-{scope}",
                description=f"No {what} of cluster {scope} completed within {_human(within)} "
                            f"(expects {event} for pgha.cluster.{scope}).",
                trigger={"type": "event", "posture": "Proactive", "expect": [event],
                         "match": {"prefect.resource.id": f"pgha.cluster.{scope}"}, "threshold": 1,
                         "within": within},
                subject=f"pgha: no {what} of cluster {scope} within {_human(within)}",
                body=(f"cluster: {scope}\nno {what} completed within {_human(within)}: its deployment did not run, "
                      f"its worker is down, or the run never ended.\nexpected event: {event}\n"),
            ))
    return out


def unhealthy_alert(cfg: AlertsFile) -> list[EventAlert]:
    if not cfg.silence.unhealthy_after_failure:
        return []
    return [EventAlert(
        name=UNHEALTHY_ALERT,
        description="A mutating flow failed (not a refused input) and the cluster was not healthy afterwards.",
        trigger={"type": "event", "posture": "Reactive", "expect": [UNHEALTHY_EVENT],
                 "match": {"prefect.resource.id": "pgha.cluster.*"}, "threshold": 1, "within": 0},
        subject="pgha: {{ event.payload.operation }} failed and left cluster {{ event.payload.scope }} unhealthy",
        body=("cluster: {{ event.payload.scope }}\noperation: {{ event.payload.operation }}\n"
              "error: {{ event.payload.error }}\nproblems: {{ event.payload.problems }}\n"),
    )]
