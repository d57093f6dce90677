"""Prefect events pgha emits: the only place that talks to Prefect's event stream.

Every event's resource is the cluster: `prefect.resource.id = pgha.cluster.<scope>`, with
`pgha.scope = <scope>`, so an automation can match one cluster or all (`pgha.cluster.*`).

| event | when | payload |
|---|---|---|
| `pgha.leader.changed` | an audit sees another leader or timeline than the last audit | scope, old_leader, new_leader, old_timeline, new_timeline |
| `pgha.audit.completed` | a health audit ran to its end (any verdict): the proactive "no audit within 1 h" alert expects it | scope, status, message |
| `pgha.cluster.unhealthy-after-failure` | a mutating operation failed (not a refused input) and the cluster is not healthy afterwards | scope, operation, error, problems |
| `pgha.<operation>.completed` / `.failed` | a mutating operation ends (backup, verify-restore, drill, restart, reinit, pause, resume, upgrade, ...) | operation, outcome, elapsed_s, and the operation's detail (a verified set's label, ...) |

Best effort: an event that cannot be sent (no API) is logged by Prefect and never fails the
flow that emits it.
"""

from __future__ import annotations

from typing import Any

from stack.operator import LeaderChange

LEADER_CHANGED = "pgha.leader.changed"


def resource(scope: str) -> dict[str, str]:
    return {"prefect.resource.id": f"pgha.cluster.{scope}", "prefect.resource.name": scope, "pgha.scope": scope}


def emit(event: str, scope: str, payload: dict[str, Any]) -> None:
    try:
        from prefect.events import emit_event

        emit_event(event=event, resource=resource(scope), payload=payload)
    except Exception:  # noqa: BLE001, S110 - an event must never fail the operation it reports
        pass


def leader_changed(scope: str, change: LeaderChange) -> None:
    emit(LEADER_CHANGED, scope, {"scope": scope, "old_leader": change.old_leader, "new_leader": change.new_leader,
                                 "old_timeline": change.old_timeline, "new_timeline": change.new_timeline})


AUDIT_COMPLETED = "pgha.audit.completed"
UNHEALTHY_AFTER_FAILURE = "pgha.cluster.unhealthy-after-failure"


def audit_completed(scope: str, status: str, message: str) -> None:
    emit(AUDIT_COMPLETED, scope, {"scope": scope, "status": status, "message": message[:500]})


def unhealthy_after_failure(scope: str, operation: str, error: str, problems: list[str]) -> None:
    emit(UNHEALTHY_AFTER_FAILURE, scope, {"scope": scope, "operation": operation, "error": error[:500],
                                          "problems": "; ".join(problems)[:1000]})


def operation_ended(scope: str, operation: str, outcome: str, elapsed_s: float, detail: dict[str, Any]) -> None:
    emit(f"pgha.{operation}.{outcome}", scope, {"operation": operation, "outcome": outcome, "elapsed_s": elapsed_s,
                                                **{k: v for k, v in detail.items() if isinstance(v, (str, int, float, bool))}})
