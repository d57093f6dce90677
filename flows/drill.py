"""drill: break the cluster on purpose under client load, measure, and always heal.

A write probe commits through the R/W port every 50 ms and a read probe queries the R/O port;
from what they saw come the write/read gaps (the RTO a client sees) and the acknowledged
writes missing afterwards (the RPO, which must be 0). The fault is undone in a `finally`, and
the flow fails (so the health alert fires) when the cluster is not whole again within a bound
or any acknowledged write is lost.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from prefect import flow, get_run_logger

from flows.steps.cluster import require_healthy
from flows.steps.drill_report import finish
from flows.steps.ops import mutating_flow
from stack.cluster import ClusterView, back_since
from stack.drill import (
    DrillKind,
    Target,
    choose_target,
    error_digest,
    fault_seconds,
    longest_gap,
    lost_writes,
    site_drill_refusal,
    spec_host_target,
)
from stack.errors import PghaError, UsageError
from stack.results import DrillResult
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_lab, etcd, patroni, postgres
from tasks.cluster_health import wait_healthy
from tasks.faults import boot_host, cut_host, heal, inject, kill_host, reconnect_host
from tasks.host.lock import WaitSeconds
from tasks.host.secrets import cluster_secrets
from tasks.host.state import cluster_dir, write_private
from tasks.postgres_probe import Probe


class DrillFailed(PghaError):
    """The drill lost acknowledged writes or the cluster did not heal."""


def _pending_file(spec: ClusterSpec) -> Path:
    return cluster_dir(spec.scope) / "drill-pending.json"


def wait_back(spec: ClusterSpec, member: str, since_unix: float, timeout: float) -> None:
    """Wait until the node itself says its PostgreSQL restarted after `since_unix` and replicates or leads."""
    wait_for(f"{member} back and replicating", lambda: patroni.member_status(spec, member),
             lambda st: back_since(st, since_unix), timeout=timeout, interval=0.5,
             describe=lambda st: f"state {st.state}, started {st.postmaster_start_time}")


def heal_leftovers(spec: ClusterSpec) -> str | None:
    """Heal what an interrupted drill (process killed half-way) left behind."""
    path = _pending_file(spec)
    if not path.exists():
        return None
    pending = json.loads(path.read_text())
    member = str(pending["member"])
    if pending.get("host"):
        boot_host(spec, str(pending["host"]))
        reconnect_host(spec, str(pending["host"]))
    what = "; ".join(heal(spec, m) for m in [member, *pending.get("also", [])])
    if member in spec.node_names():
        wait_back(spec, member, float(pending.get("since", 0)), 180)
    wait_healthy(spec, 180, stable_s=1.0)
    path.unlink(missing_ok=True)
    return f"healed what an interrupted {pending['kind']} drill left on {pending['member']}: {what}"


def _old_side(spec: ClusterSpec, member: str) -> str:
    """What a cut-off leader says of itself (asked inside its container: no network needed)."""
    try:
        st = patroni.member_status(spec, member)
    except PghaError:
        return "API unreachable"
    return f"role {st.role}, PostgreSQL {st.state}"


def _primaries(spec: ClusterSpec) -> list[str]:
    """Nodes whose own Patroni says they run a writable primary (asked one by one: etcd may be gone)."""
    out = []
    for m in spec.node_names():
        try:
            st = patroni.member_status(spec, m)
        except PghaError:
            continue
        if st.writable_primary:
            out.append(m + (" (failsafe)" if st.failsafe_mode_is_active else ""))
    return out


def _await_window(spec: ClusterSpec, kind: DrillKind, old_leader: str, writer: Probe, t_fault: float,
                  seconds: int) -> tuple[str, list[str]]:
    """A timed fault: watch the cluster until its window ends (the caller then undoes the fault).

    Samples which nodes run a writable primary every few seconds: more than one at any time
    would be a split brain, and is noted as such.
    """
    notes: list[str] = []
    end = t_fault + seconds
    seen: list[tuple[float, list[str]]] = []

    def sample() -> float:
        now = time.monotonic()
        if not seen or now - seen[-1][0] >= 3:
            seen.append((now, _primaries(spec)))
        return now

    wait_for(f"the {kind.value} window of {seconds}s", sample, lambda now: now >= end, timeout=seconds + 60,
             interval=0.5)
    seen.append((time.monotonic(), _primaries(spec)))  # the state the fault ends in, whatever the sampling
    split = [(round(t - t_fault, 1), p) for t, p in seen if len(p) > 1]
    counts = sorted({len(p) for _, p in seen})
    notes.append(f"{len(seen)} samples during the {seconds}s fault: writable primaries per sample {counts}"
                 + (f"; SPLIT BRAIN at {split[:3]}" if split else "; never more than one"))
    if seen:
        notes.append(f"primary at the end of the fault: {', '.join(seen[-1][1]) or 'none (read-only)'}")
    acked = [t for t in writer.log.ok if t_fault <= t <= end]
    notes.append(f"{len(acked)} writes acknowledged while the fault lasted")
    if kind == DrillKind.FREEZE:
        try:
            lead = patroni.cluster_view(spec).leader()
            return (lead.name if lead else old_leader), notes
        except PghaError:
            return old_leader, notes
    return old_leader, notes


def _await_recovery(spec: ClusterSpec, kind: DrillKind, old_leader: str, writer: Probe, reader: Probe,
                    t_fault: float, timeout: float, seconds: int = 0,
                    host_members: list[str] | None = None) -> tuple[str, list[str]]:
    """Wait until clients are served again after the fault; returns (leader, notes)."""
    notes: list[str] = []

    def leader_now() -> str:
        lead = patroni.cluster_view(spec).leader()
        return lead.name if lead else ""

    if kind.timed:
        return _await_window(spec, kind, old_leader, writer, t_fault, seconds)
    if kind.moves_leader or (kind.whole_host and old_leader in (host_members or [])):
        new = wait_for("a new Patroni leader", leader_now, lambda n: bool(n) and n != old_leader,
                       timeout=timeout, interval=0.2)
        t_new = time.monotonic()
        wait_for("writes acknowledged by the new leader", lambda: writer.log.ok[-1] if writer.log.ok else 0.0,
                 lambda t: t > t_new, timeout=30, interval=0.1)
        if kind in (DrillKind.PARTITION, DrillKind.HOST_PARTITION):
            # No split brain: the cut-off leader must stop being a writable primary by itself
            # (writable only while Patroni still runs it as a primary: role primary AND running).
            seen = wait_for("the partitioned leader to stop accepting writes", lambda: _old_side(spec, old_leader),
                            lambda r: r != "role primary, PostgreSQL running", timeout=timeout, interval=0.5)
            notes.append(f"no split brain: when {new} had taken over, the cut-off {old_leader} had stopped "
                         f"accepting writes by itself ({seen}; checked {time.monotonic() - t_fault:.1f}s after the cut)")
        return new, notes
    probe = reader if kind == DrillKind.REPLICA_KILL else writer
    wait_for("clients served again", lambda: probe.log.ok[-1] if probe.log.ok else 0.0,
             lambda t: t > t_fault + 0.2, timeout=timeout, interval=0.1)
    return old_leader, notes


def _target(spec: ClusterSpec, kind: DrillKind, view: ClusterView, to: str | None, host: str | None = None) -> Target:
    lead = view.leader()
    assert lead is not None  # a healthy cluster has exactly one
    try:
        on_host = spec_host_target(spec, kind, host)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if on_host is not None:
        if kind == DrillKind.HOST_PARTITION and not docker_lab.is_lab_host(spec, str(host)):
            raise UsageError(f"host-partition runs in a lab only; {host} is a real host (use host-loss)")
        return on_host
    etcd_leader = etcd.leader_member(spec) if kind in (DrillKind.ETCD_MEMBER_LOSS, DrillKind.ETCD_QUORUM_LOSS) else ""
    replicas = {m.name: (m.role.value, m.lag) for m in view.replicas()}
    if kind.is_switchover:  # a delayed replica is never a candidate (stack.render.node_tags: nofailover)
        if to is not None and (delayed := spec.delay_of(to)) is not None:
            raise UsageError(f"--to {to} is a delayed replica (replays {delayed.delay} late) and never a "
                             "switchover candidate; choose another node")
        replicas = {k: v for k, v in replicas.items() if spec.delay_of(k) is None}
    try:
        return choose_target(kind, lead.name, replicas, spec.nodes, spec.etcd_members, etcd_leader, to,
                             etcd_names=spec.etcd_names())
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@flow(name="drill", description="Failover/fault drill under write load: measure RTO/RPO and always heal.")
@mutating_flow("drill")
def drill(spec: ClusterSpec = ClusterSpec(), kind: DrillKind = DrillKind.SWITCHOVER,  # noqa: B008
          to: str | None = None, probe_interval_ms: int = 50, heal_timeout_s: int = 180,
          wait_seconds: WaitSeconds = 0, seconds: int | None = None, host: str | None = None,
          kill_hosts: bool = False) -> DrillResult:
    log = get_run_logger()
    if not 10 <= probe_interval_ms <= 5000:
        raise UsageError(f"probe_interval_ms must be between 10 and 5000, not {probe_interval_ms}")
    if why := site_drill_refusal(spec, kind, to, seconds, host, kill_hosts):
        raise UsageError(why)
    if kind.is_site:
        from flows.site_drill import run_site_drill

        return run_site_drill(spec, kind, probe_interval_ms, heal_timeout_s, wait_seconds, kill_hosts)
    if kind == DrillKind.SWITCHOVER_POOLED and not spec.runs_pooler:
        raise UsageError(f"switchover-pooled needs the pooler: cluster {spec.scope} runs none (pooler.enabled: false, or hosts)")
    try:
        window = fault_seconds(kind, spec.timing.ttl, seconds)
        spec_host_target(spec, kind, host)  # a bad --host is refused before anything is asked or healed
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if (healed := heal_leftovers(spec)) is not None:
        log.warning(healed)
    view = require_healthy(spec, "the drill", settle_s=10)
    lead = view.leader()
    assert lead is not None
    target = _target(spec, kind, view, to, host)
    secrets = cluster_secrets(spec.scope)
    postgres.ensure_probe_table(spec, secrets)
    run_id = uuid.uuid4().hex[:12]
    interval = probe_interval_ms / 1000
    bound = spec.timing.ttl + 60 + heal_timeout_s + window  # probes stop by themselves after this
    writer = Probe(spec, secrets, run_id, write=True, interval=interval, max_seconds=bound + 60,
                   pooled=kind == DrillKind.SWITCHOVER_POOLED)
    reader = Probe(spec, secrets, run_id, write=False, interval=interval, max_seconds=bound + 60)
    writer.start()
    reader.start()
    healed_ok, whole_at, t_fault, t_heal = False, None, time.monotonic(), time.monotonic()
    notes: list[str] = []
    new_leader = lead.name
    wall_fault = time.time()
    try:
        wait_for("the probes to warm up", lambda: (len(writer.log.ok), len(reader.log.ok)),
                 lambda n: n[0] >= 20 and (n[1] >= 20 or spec.nodes == 1), timeout=30, interval=0.1)
        wall_fault = time.time()
        write_private(_pending_file(spec), json.dumps({"kind": kind.value, "member": target.member,
                                                       "also": list(target.also), "since": wall_fault,
                                                       "host": host if kind.whole_host else None}))
        t_fault = time.monotonic()
        log.info("%s: fault on %s%s%s", kind.value, ", ".join(target.members),
                 f" (candidate {target.candidate})" if target.candidate else "", f" for {window}s" if window else "")
        try:
            if kind == DrillKind.HOST_LOSS:
                notes.append(kill_host(spec, str(host)))
            elif kind == DrillKind.HOST_PARTITION:
                notes.append(cut_host(spec, str(host)))
            else:
                inject(spec, kind, target)
            new_leader, more = _await_recovery(spec, kind, lead.name, writer, reader, t_fault,
                                               timeout=spec.timing.ttl + 60, seconds=window,
                                               host_members=target.members)
            notes += more
        finally:
            t_heal = time.monotonic()
            if kind == DrillKind.HOST_LOSS:
                log.info("booting %s: %s", host, boot_host(spec, str(host)))
            elif kind == DrillKind.HOST_PARTITION:
                log.info("reconnecting %s: %s", host, reconnect_host(spec, str(host)))
            for member in target.members:
                log.info("healing %s: %s", member, heal(spec, member))
            try:
                if target.member in spec.node_names() and not (kind == DrillKind.FREEZE and new_leader == lead.name):
                    # (A freeze shorter than the ttl leaves the leader in place: nothing restarts.)
                    # /cluster can show a member's stale entry; ask the node itself that its
                    # PostgreSQL came back after the fault and replicates (or leads).
                    wait_back(spec, target.member, wall_fault, heal_timeout_s)
                wait_healthy(spec, heal_timeout_s, stable_s=1.0)
                whole_at = time.monotonic()
                healed_ok = True
                _pending_file(spec).unlink(missing_ok=True)
            except PghaError as exc:
                notes.append(f"not whole after {heal_timeout_s}s: {str(exc).splitlines()[0]}")
        # A little steady traffic after healing, so the chart shows the cluster serving again.
        if healed_ok:
            wait_for("steady writes after healing", lambda: writer.log.ok[-1] if writer.log.ok else 0.0,
                     lambda t: t > time.monotonic() - 0.2 and t > (whole_at or t_heal) + 1.0,
                     timeout=30, interval=0.1)
    finally:
        for p in (writer, reader):
            p.stop()
        for p in (writer, reader):
            p.join(10)
    result = _measure(spec, kind, target, lead.name, lead.timeline, new_leader, writer, reader, secrets, run_id,
                      t_fault, wall_fault, whole_at, healed_ok, notes)
    marks = {"heal": t_heal} | ({"whole": whole_at} if whole_at else {})
    return finish(spec, result, writer.log, reader.log, t_fault, time.monotonic(), wall_fault, marks,
                  f"{spec.scope}: {kind.value} drill on {target.member}", f"{result.kind} drill on `{spec.scope}`",
                  _table(result), DrillFailed)


def _measure(spec: ClusterSpec, kind: DrillKind, target: Target, old_leader: str, timeline_before: int | None,
             new_leader: str, writer: Probe, reader: Probe, secrets: Secrets, run_id: str, t_fault: float,
             wall_fault: float, whole_at: float | None, healed_ok: bool, notes: list[str]) -> DrillResult:
    """What the probes saw and the healed cluster holds, as the drill's result."""
    t_end = time.monotonic()
    present = postgres.probe_ids(spec, secrets, run_id)
    lead_after = patroni.cluster_view(spec).leader()
    rejoin = patroni.rejoin_method(spec, target.member, wall_fault) if target.member in spec.node_names() else "restart"
    window_start = t_fault - 1.0
    stall = None
    if kind == DrillKind.SWITCHOVER_POOLED:
        in_window = [d for t, d in zip(writer.log.ok, writer.log.stalls, strict=False) if t >= window_start]
        stall = round(max([longest_gap(writer.log.ok, window_start, t_end), *in_window]), 3)
    return DrillResult(
        kind=kind.value, target=target.member, old_leader=old_leader,
        new_leader=lead_after.name if lead_after else new_leader,
        timeline_before=timeline_before, timeline_after=lead_after.timeline if lead_after else None,
        write_gap_s=round(longest_gap(writer.log.ok, window_start, t_end), 3),
        read_gap_s=round(longest_gap(reader.log.ok, window_start, t_end), 3) if spec.nodes > 1 else 0.0,
        writes_acked=len(writer.log.acked_ids), write_errors=len(writer.log.errors),
        lost_writes=lost_writes(writer.log.acked_ids, present),
        recovered_s=None, whole_s=round(whole_at - t_fault, 2) if whole_at else None,
        healed=healed_ok, rejoin=rejoin, notes=notes, write_errors_seen=error_digest(writer.log, t_fault),
        longest_stall_s=stall,
    )


def _table(r: DrillResult) -> list[str]:
    return [
        "| write gap | read gap | lost writes | new leader | timeline | whole after | rejoin |",
        "|---|---|---|---|---|---|---|",
        f"| {r.write_gap_s:.2f} s | {r.read_gap_s:.2f} s | {len(r.lost_writes)} | {r.new_leader} | "
        f"{r.timeline_before} → {r.timeline_after} | {r.whole_s} s | {r.rejoin} |",
    ]
