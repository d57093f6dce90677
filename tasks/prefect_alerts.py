"""The server's alert automations and the follow-up audit: created or updated by name, never duplicated.

`apply_alerts` turns deployments/alerts.yaml (stack/alerts.py, pure) into a notification block
and one automation per alert, plus the per-cluster silence alerts and the unhealthy-after-failure
alert; `apply_follow_up` makes the automation that audits a cluster again after a leader change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stack import alerts as alerts_mod
from stack.errors import StateError
from tasks.host.state import state_root
from tasks.prefect_auth import auth_string
from tasks.prefect_endpoint import api_url, healthy, ui_url


def apply_alerts(path: Path = alerts_mod.ALERTS_FILE, scopes: list[str] | None = None) -> list[str]:
    """Create or update the notification block and one automation per alert (matched by name).

    Also the event alerts: per cluster (`scopes`, default every cluster with a stored spec in
    this state directory), no audit / no backup within its window (proactive), and a mutating
    flow that failed and left its cluster unhealthy.
    """
    cfg = alerts_mod.load_alerts(path)
    block, target = alerts_mod.notification_block(cfg)
    hb = alerts_mod.heartbeat(cfg)  # a bad $PGHA_HEARTBEAT_URL is refused here, before anything is applied
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    if not healthy():
        raise StateError(f"no Prefect server answers on {ui_url()}; run `make server` first")
    done: list[str] = []
    with temporary_settings(updates={PREFECT_API_URL: api_url(), PREFECT_UI_URL: ui_url(), **_auth_setting()}):
        block_id = block.save(cfg.notification.block, overwrite=True)
        done.append(f"notification block {cfg.notification.block} -> {target}")
        with get_client(sync_client=True) as client:
            for a in cfg.alerts:
                wanted = Automation(
                    name=a.name, description=a.description, enabled=a.enabled,
                    trigger=EventTrigger(**alerts_mod.trigger(a)),
                    actions=[SendNotification(block_document_id=block_id, subject=a.subject, body=a.body)],
                )
                existing = client.read_automations_by_name(a.name)
                if existing:
                    wanted.id = existing[0].id
                    wanted.update()
                    for extra in existing[1:]:  # duplicates left by a hand-made or older apply
                        client.delete_automation(extra.id)
                    done.append(f"alert {a.name} updated")
                else:
                    wanted.create()
                    done.append(f"alert {a.name} created")
            done += _apply_event_alerts(client, cfg, block_id, scopes)
    # The heartbeat needs nothing on the server: every audit reads the file (or the variable) when it runs.
    done.append(f"heartbeat: every health audit pings it ({hb.style} style)" if hb else
                f"heartbeat: none (set heartbeat.url in {path.name} or ${alerts_mod.HEARTBEAT_ENV})")
    return done


def known_scopes() -> list[str]:
    """Clusters brought up from this state directory (those with a stored spec)."""
    root = state_root()
    return sorted(d.name for d in root.iterdir() if (d / "spec.yaml").is_file()) if root.is_dir() else []


def _apply_event_alerts(client: Any, cfg: alerts_mod.AlertsFile, block_id: Any, scopes: list[str] | None) -> list[str]:
    """The proactive (silence) and unhealthy-after-failure automations; unchanged ones are left alone,
    so re-applying (every `make up`) does not restart a proactive window."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger

    from_state = scopes is None
    wanted_alerts = alerts_mod.silence_alerts(cfg, known_scopes() if scopes is None else scopes) + \
        alerts_mod.unhealthy_alert(cfg)
    done = []
    for a in wanted_alerts:
        wanted = Automation(name=a.name, description=a.description, enabled=True, trigger=EventTrigger(**a.trigger),
                            actions=[SendNotification(block_document_id=block_id, subject=a.subject, body=a.body)])
        existing = client.read_automations_by_name(a.name)
        for extra in existing[1:]:
            client.delete_automation(extra.id)
        if existing and _same(existing[0], wanted):
            done.append(f"alert {a.name} unchanged")
        elif existing:
            wanted.id = existing[0].id
            wanted.update()
            done.append(f"alert {a.name} updated")
        else:
            wanted.create()
            done.append(f"alert {a.name} created")
    if from_state:  # clusters gone from this state directory: their silence is expected
        names = {a.name for a in wanted_alerts}
        for auto in client.read_automations():
            if auto.name.startswith(alerts_mod.SILENCE_PREFIX) and auto.name not in names:
                client.delete_automation(auto.id)
                done.append(f"alert {auto.name} removed (no such cluster here)")
    return done


def _same(existing: Any, wanted: Any) -> bool:
    def shape(a: Any) -> Any:
        trig = a.trigger.model_dump(mode="json", exclude={"id"})
        acts = [x.model_dump(mode="json") for x in a.actions]
        return (a.description, a.enabled, trig, acts)

    try:
        return bool(shape(existing) == shape(wanted))
    except Exception:  # noqa: BLE001 - a shape we cannot compare: update it
        return False


def _auth_setting() -> dict[Any, Any]:
    """The client setting that authenticates this process's API calls to pgha's server (none without auth)."""
    from prefect.settings import PREFECT_API_AUTH_STRING

    auth = auth_string()
    return {PREFECT_API_AUTH_STRING: auth} if auth else {}


FOLLOW_UP = "pgha: audit after a leader change"
AUDIT_DEPLOYMENT = "health-audit/default"


def apply_follow_up() -> str:
    """The automation that runs the health-audit deployment for a cluster whose leader changed
    (event `pgha.leader.changed`, emitted by the audit); created or updated by name."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url(), **_auth_setting()}), \
            get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(AUDIT_DEPLOYMENT)
        wanted = Automation(
            name=FOLLOW_UP,
            description="When an audit sees another leader than the last audit (a switchover or a failover), "
                        "audit that cluster again at once through the health-audit deployment, so the run and "
                        "its artifacts show how the cluster is after the change.",
            trigger=EventTrigger(expect={"pgha.leader.changed"}, match={"prefect.resource.id": "pgha.cluster.*"},
                                 posture=Posture.Reactive, threshold=1),
            actions=[RunDeployment(source="selected", deployment_id=dep.id,
                                   parameters={"scope": {"__prefect_kind": "jinja",
                                                         "template": "{{ event.payload.scope }}"}})],
        )
        existing = client.read_automations_by_name(FOLLOW_UP)
        if existing:
            wanted.id = existing[0].id
            wanted.update()
            for extra in existing[1:]:
                client.delete_automation(extra.id)
            return f"automation '{FOLLOW_UP}' updated"
        wanted.create()
        return f"automation '{FOLLOW_UP}' created"


