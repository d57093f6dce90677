"""pgha's Prometheus metrics: a typed snapshot of the cluster in, the text exposition format out.

Pure and standard library only: `tasks/exporter_agent.py` ships this file (as metrics.py) into
the cluster's `metrics` container, which asks every Patroni node's REST API on the cluster
network, parses the replies here (`member_sample`) and serves `render(...)` on `ports.metrics`.
The audit's rows (check statuses, backup ages, fencer counters) are the same model
(`AuditSample`), so a view of them renders the same way.

Format: https://prometheus.io/docs/instrumenting/exposition_formats/ (text 0.0.4): one
`# HELP` and one `# TYPE` line per family, then its samples; label values escape `\\`, `"`
and newlines; a sample without a value (unknown) is left out rather than written as 0.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Every role a member can hold in Patroni's /cluster; `pgha_member_role` has one series per
# role per member (1 for the member's role, 0 for the others), so "no leader" is a query that
# returns 0, not an empty one.
ROLES = ("leader", "standby_leader", "sync_standby", "quorum_standby", "replica")
CHECK_LEVELS = {"ok": 0, "warn": 1, "critical": 2}


@dataclass(frozen=True)
class MemberSample:
    """One Patroni node as the exporter saw it (None: not known, e.g. the node did not answer)."""

    name: str
    up: bool
    role: str = ""
    state: str = ""
    timeline: int | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    cert_not_after: float | None = None  # epoch seconds: its REST API certificate's notAfter (spec.tls)


@dataclass(frozen=True)
class CheckSample:
    """One audit row: check name, subject, level (ok | warn | critical)."""

    check: str
    target: str
    status: str


@dataclass(frozen=True)
class FencerSample:
    """One fencing watcher's counters: events seen and decisions by outcome."""

    member: str
    events: int
    by_outcome: tuple[tuple[str, int], ...] = ()


class FencerCounts(Protocol):
    """A watcher's counters as the audit read them (`stack.fencing.Counters`; not imported: the
    exporter runs this module alone)."""

    events: int
    by_outcome: dict[str, int]


@dataclass(frozen=True)
class AuditSample:
    """What the last audit found: every check's level, the backups' times, the fencers' counters."""

    taken_at: float
    checks: tuple[CheckSample, ...] = ()
    last_backup_at: float | None = None
    last_verified_at: float | None = None
    fencers: tuple[FencerSample, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """The cluster as observed at `taken_at` (epoch seconds)."""

    scope: str
    taken_at: float
    expected_members: int
    members: tuple[MemberSample, ...] = ()
    errors: tuple[str, ...] = ()  # what could not be asked (shown as pgha_snapshot_errors, never as text)
    audit: AuditSample | None = None


# ---- parsing Patroni's REST replies (the agent's boundary) ----

def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _timestamp(text: Any) -> float | None:
    """Patroni's timestamps ("2026-12-07 02:59:01.123456+00:00") as epoch seconds."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace(" ", "T")).timestamp()
    except ValueError:
        return None


def cluster_members(cluster: Any) -> dict[str, dict[str, Any]]:
    """Patroni's /cluster reply as {member name: its row}; {} when it is not one."""
    rows = cluster.get("members") if isinstance(cluster, dict) else None
    return {str(r["name"]): r for r in rows or [] if isinstance(r, dict) and isinstance(r.get("name"), str)}


def member_sample(name: str, patroni: Any, row: dict[str, Any] | None, now: float,
                  cert_not_after: float | None = None) -> MemberSample:
    """One node from its own /patroni reply (None: it did not answer) and its /cluster row.

    Up: the node answered and its PostgreSQL runs. Role and lag come from /cluster (the DCS's
    view, the one that knows the synchronous standby); the timeline from the node itself. Lag in
    seconds: 0 when the replica has replayed everything, else the age of the last transaction
    it replayed (Patroni's `replayed_timestamp`), unknown when it has none.
    """
    if not isinstance(patroni, dict):
        return MemberSample(name, False, cert_not_after=cert_not_after)
    state = str(patroni.get("state") or "")
    row = row or {}
    role = str(row.get("role") or "")
    if not role:  # not in /cluster (yet): its own word, in /cluster's vocabulary
        own = str(patroni.get("role") or "")
        role = {"primary": "leader", "master": "leader"}.get(own, own)
    timeline = _int(patroni.get("timeline")) or _int(row.get("timeline"))
    lag_bytes = _int(row.get("lag")) if role not in ("leader", "standby_leader") else None
    lag_seconds: float | None = None
    if lag_bytes == 0:
        lag_seconds = 0.0
    elif lag_bytes is not None:
        replayed = _timestamp((patroni.get("xlog") or {}).get("replayed_timestamp"))
        lag_seconds = max(0.0, now - replayed) if replayed is not None else None
    up = state in ("running", "streaming")
    return MemberSample(name, up, role, state, timeline, lag_bytes, lag_seconds, cert_not_after)


def audit_sample(taken_at: float, findings: list[tuple[str, str, str]], last_backup_at: float | None = None,
                 last_verified_at: float | None = None,
                 fencers: Mapping[str, FencerCounts] | None = None) -> AuditSample:
    """An audit's result as a sample: (check, target, status) rows, backup times, fencer counters."""
    fs = tuple(FencerSample(m, s.events, tuple(sorted(s.by_outcome.items())))
               for m, s in sorted((fencers or {}).items()))
    return AuditSample(taken_at, tuple(CheckSample(c, t, s) for c, t, s in findings),
                       last_backup_at, last_verified_at, fs)


def last_verified(journal: list[dict[str, Any]]) -> float | None:
    """When the last completed restore verification started (the operations journal's entries)."""
    times = [float(e["started"]) for e in journal
             if e.get("operation") == "verify-restore" and e.get("outcome") == "completed"
             and isinstance(e.get("started"), int | float)]
    return max(times, default=None)


def audit_to_json(a: AuditSample) -> str:
    """The audit's sample as the exporter reads it from its config directory (no secret in it)."""
    return json.dumps({"taken_at": a.taken_at, "checks": [[c.check, c.target, c.status] for c in a.checks],
                       "last_backup_at": a.last_backup_at, "last_verified_at": a.last_verified_at,
                       "fencers": {f.member: {"events": f.events, "by_outcome": dict(f.by_outcome)}
                                   for f in a.fencers}}, sort_keys=True)


def audit_from_json(text: str) -> AuditSample | None:
    """`audit_to_json`'s text back, or None when it is not one (a half-written or foreign file)."""
    try:
        d = json.loads(text)
        fencers = tuple(FencerSample(str(m), int(s.get("events") or 0),
                                     tuple(sorted((str(k), int(v)) for k, v in dict(s.get("by_outcome") or {}).items())))
                        for m, s in sorted(dict(d.get("fencers") or {}).items()))
        return replace(audit_sample(float(d["taken_at"]), [(str(c), str(t), str(s)) for c, t, s in d.get("checks") or []],
                                    d.get("last_backup_at"), d.get("last_verified_at")), fencers=fencers)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


@dataclass(frozen=True)
class ExporterConfig:
    """The exporter container's configuration (exporter.json in its config directory)."""

    scope: str
    nodes: tuple[tuple[str, str], ...]  # (member, base URL of its REST API)
    interval_s: float
    port: int
    ca_file: str | None = None  # spec.tls: the cluster's CA, to verify the nodes' REST certificates
    audit_file: str | None = None  # the last audit's sample, written by `pgha audit`
    timeout_s: float = 2.0

    def to_json(self) -> str:
        return json.dumps({"scope": self.scope, "nodes": [list(n) for n in self.nodes], "interval_s": self.interval_s,
                           "port": self.port, "ca_file": self.ca_file, "audit_file": self.audit_file,
                           "timeout_s": self.timeout_s}, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ExporterConfig:
        d = json.loads(text)
        return cls(d["scope"], tuple((str(m), str(u)) for m, u in d["nodes"]), float(d["interval_s"]),
                   int(d["port"]), d.get("ca_file"), d.get("audit_file"), float(d.get("timeout_s", 2.0)))


# ---- the text exposition format ----

def escape_label(value: str) -> str:
    """A label value as the format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Families:
    """Families in the order they are first declared; samples grouped under their family."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.meta: dict[str, tuple[str, str]] = {}
        self.samples: dict[str, list[str]] = {}

    def add(self, name: str, kind: str, help_text: str, labels: dict[str, str], value: float | None) -> None:
        if name not in self.meta:
            self.order.append(name)
            self.meta[name] = (kind, help_text)
            self.samples[name] = []
        if value is None:
            return
        sample = name
        text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        self.samples[name].append(f"{sample}{{{text}}} {format_value(value)}" if text else
                                  f"{sample} {format_value(value)}")

    def text(self) -> str:
        out: list[str] = []
        for name in self.order:
            kind, help_text = self.meta[name]
            out += [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} {kind}", *self.samples[name]]
        return "\n".join(out) + "\n"


def render(snap: Snapshot, now: float) -> str:
    """The snapshot in Prometheus' text format; ages are measured at `now` (epoch seconds)."""
    f = _Families()
    s = {"scope": snap.scope}
    f.add("pgha_snapshot_age_seconds", "gauge", "Seconds since the snapshot behind these metrics was taken",
          {**s, "source": "live"}, max(0.0, now - snap.taken_at))
    f.add("pgha_snapshot_errors", "gauge", "Systems the last snapshot could not ask", s, len(snap.errors))
    f.add("pgha_members_expected", "gauge", "Patroni nodes the spec declares", s, snap.expected_members)
    for m in snap.members:
        ml = {**s, "member": m.name}
        f.add("pgha_member_up", "gauge", "1 when the node answers and its PostgreSQL runs", ml, m.up)
        for role in ROLES:
            f.add("pgha_member_role", "gauge", "1 for the member's role in Patroni's cluster view, 0 for the others",
                  {**ml, "role": role}, int(m.up and m.role == role))
        f.add("pgha_member_timeline", "gauge", "PostgreSQL timeline of the member", ml, m.timeline)
        f.add("pgha_member_lag_bytes", "gauge", "Replication lag of a replica behind the leader, bytes", ml,
              m.lag_bytes)
        f.add("pgha_member_lag_seconds", "gauge",
              "Replication lag of a replica, seconds (0 when caught up, else the age of its last replayed "
              "transaction)", ml, m.lag_seconds)
        f.add("pgha_certificate_expiry_seconds", "gauge",
              "Seconds until the member's REST API certificate expires (spec.tls; divide by 86400 for days)",
              {**ml, "certificate": "patroni-rest"}, None if m.cert_not_after is None else m.cert_not_after - now)
    a = snap.audit
    if a is not None:
        f.add("pgha_snapshot_age_seconds", "gauge", "", {**s, "source": "audit"}, max(0.0, now - a.taken_at))
        for c in a.checks:
            f.add("pgha_check_status", "gauge", "Audit check level: 0 ok, 1 warn, 2 critical",
                  {**s, "check": c.check, "target": c.target}, CHECK_LEVELS.get(c.status, 2))
        f.add("pgha_backup_age_seconds", "gauge", "Seconds since the last successful backup finished", s,
              None if a.last_backup_at is None else max(0.0, now - a.last_backup_at))
        f.add("pgha_backup_verified_age_seconds", "gauge", "Seconds since a backup was last restored and verified",
              s, None if a.last_verified_at is None else max(0.0, now - a.last_verified_at))
        for fs in a.fencers:
            f.add("pgha_fencer_events_total", "counter", "Engine events the fencing watcher handled",
                  {**s, "fencer": fs.member}, fs.events)
            for outcome, n in fs.by_outcome:
                f.add("pgha_fencer_decisions_total", "counter", "Fencing decisions by outcome",
                      {**s, "fencer": fs.member, "outcome": outcome}, n)
    return f.text()
