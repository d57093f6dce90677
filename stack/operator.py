"""The operator's verbs, decided: restart order, history causes, audit order, leader changes.

Pure: the flows and the CLI gather the facts (Patroni's view and /history, the operations
journal, the audit findings) and these functions decide; unit-tested without Docker.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from stack.cluster import ClusterView, TimelineSwitch
from stack.errors import StateError, UsageError

# ---- restart / reinit ----


@dataclass(frozen=True)
class RestartStep:
    member: str
    leader: bool  # its turn starts with a switchover away from it


def restart_plan(view: ClusterView, nodes: list[str], member: str | None) -> list[RestartStep]:
    """Which members to restart, replicas first (by name), the leader last; refuse what cannot be done.

    `member` None: every node. The leader's turn is a switchover to a restarted replica, then
    a restart as a replica, so writes pause only for the switchover.
    """
    if member is not None and member not in nodes:
        raise UsageError(f"unknown member {member}; the Patroni nodes are {', '.join(nodes)}")
    if view.paused:
        raise StateError("the cluster is paused (maintenance mode); `pgha resume` first")
    lead = view.leader()
    if lead is None:
        raise StateError("the cluster has no leader; a rolling restart needs one (see `pgha status`)")
    wanted = [member] if member is not None else sorted(nodes, key=_num)
    missing = [m for m in wanted if view.member(m) is None]
    if missing:
        raise StateError(f"{missing[0]} is not registered in the cluster (see `pgha status`)")
    steps = [RestartStep(m, False) for m in wanted if m != lead.name]
    if lead.name in wanted:
        steps.append(RestartStep(lead.name, True))
    return steps


def reinit_problem(view: ClusterView, nodes: list[str], member: str) -> str | None:
    """Why `member` cannot be rebuilt from the leader (None: it can)."""
    if member not in nodes:
        return f"unknown member {member}; the Patroni nodes are {', '.join(nodes)}"
    lead = view.leader()
    if lead is None:
        return "the cluster has no leader to clone from (see `pgha status`)"
    if lead.name == member:
        return f"{member} is the leader; reinit rebuilds a replica from it (switch over first)"
    return None


def _num(name: str) -> tuple[str, int]:
    m = re.search(r"(\d+)$", name)
    return (name[: m.start()], int(m.group(1))) if m else (name, 0)


# ---- history ----


@dataclass(frozen=True)
class HistoryEvent:
    timeline: int
    time: str
    new_leader: str
    cause: str
    detail: str


CAUSES = {"drill": "drill", "upgrade": "upgrade", "restart": "switchover (restart)",
          "switchover": "switchover", "config-set": "switchover (config set)", "scale": "switchover (scale)",
          "restore": "restore", "bootstrap": "bootstrap"}
SLACK_S = 5.0


def parse_time(text: str) -> float | None:
    """Patroni's ISO time (with offset) as a Unix time; None when it is not one."""
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def cause_of(when: float | None, journal: Iterable[dict[str, Any]]) -> tuple[str, str]:
    """(cause, detail) of a timeline switch at `when`: the pgha operation running then, else a failover."""
    if when is None:
        return "unknown", "no time recorded"
    for e in journal:
        start, end = e.get("started"), e.get("at")
        if not isinstance(start, (int, float)) or not isinstance(end, (int, float)):
            continue
        if start - SLACK_S <= when <= end + SLACK_S:
            op = str(e.get("operation", ""))
            run = f", run {e['run']}" if e.get("run") else ""
            return CAUSES.get(op, op), f"during pgha {op} ({e.get('outcome', '?')}{run})"
    return "failover", "no pgha operation was running: Patroni promoted a replica"


def history_events(history: list[TimelineSwitch], journal: list[dict[str, Any]]) -> list[HistoryEvent]:
    """Patroni's timeline switches, newest last, each with its cause from the operations journal.

    A switch older than what a trimmed journal still holds (`stack.housekeeping.trim_journal`)
    and matching no kept operation is "unknown", not a failover: its operation may have been cut.
    """
    from stack.housekeeping import trimmed_before

    cut = trimmed_before(journal)
    out = []
    for h in history:
        when = parse_time(h.time)
        cause, detail = cause_of(when, journal)
        if cause == "failover" and when is not None and cut is not None and when <= cut + SLACK_S:
            cause, detail = "unknown", "older than the operations journal keeps (state.journal_kib)"
        out.append(HistoryEvent(timeline=h.timeline + 1, time=h.time, new_leader=h.new_leader, cause=cause,
                                detail=detail))
    return out


# ---- leader changes (the audit's event) ----


@dataclass(frozen=True)
class LeaderChange:
    old_leader: str
    new_leader: str
    old_timeline: int | None
    new_timeline: int | None


def leader_change(previous: dict[str, Any] | None, leader: str | None, timeline: int | None) -> LeaderChange | None:
    """A change since the last audit (None on the first audit, without a leader, or when nothing changed)."""
    if previous is None or not leader:
        return None
    old, old_tl = str(previous.get("leader") or ""), previous.get("timeline")
    if not old or (old == leader and old_tl == timeline):
        return None
    return LeaderChange(old_leader=old, new_leader=leader, old_timeline=old_tl if isinstance(old_tl, int) else None,
                        new_timeline=timeline)


# ---- audit presentation ----

SEVERITY = {"critical": 0, "warn": 1, "ok": 2}


def ordered(rows: list[Any]) -> list[Any]:
    """Criticals first, then warnings, then the ok rows (stable inside each)."""
    return sorted(rows, key=lambda r: SEVERITY.get(str(getattr(r, "status", "ok")), 3))


def summary_line(scope: str, rows: list[Any], paused: bool = False) -> str:
    """One line on top of the audit: the counts and the first critical (or warning)."""
    n = {k: sum(1 for r in rows if getattr(r, "status", "") == k) for k in SEVERITY}
    head = f"{scope}: {n['critical']} critical, {n['warn']} warning, {n['ok']} ok"
    if paused:
        head += "; PAUSED (maintenance mode: Patroni will not fail over)"
    first = next((r for r in ordered(rows) if getattr(r, "status", "ok") != "ok"), None)
    if first is not None:
        head += f" — first: {first.check} {first.target}: {first.observed}"
    return head


def md_cell(text: str) -> str:
    """A table cell the Prefect UI shows as written: a leading `>` (`>= 2`) would render as a quote."""
    text = str(text).replace("|", "\\|").replace(">=", "≥").replace("<=", "≤")
    if text.startswith(">"):
        text = "more than " + text[1:].lstrip()
    elif text.startswith("<"):
        text = "less than " + text[1:].lstrip()
    return text
