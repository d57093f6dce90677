"""Health-audit checks: observed values in, finding rows (ok / warn / critical) out.

Pure: no Docker, no network. `flows/audit.py` gathers the observations (`stack.audit_obs`) with
`tasks/*` and calls these functions, which return rows (`stack.findings`); unit tests feed them
values at the thresholds' boundaries. A value at or above a `*_warn` threshold is a warning, at or
above `*_critical` critical.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from stack.audit_obs import (
    Baseline,
    ContainerObs,
    EtcdAuthObs,
    EtcdMember,
    HaproxyObs,
    LeaderKeyObs,
    PatroniObs,
    PostgresObs,
    PressureObs,
    ReplicationRow,
    StandbyObs,
)
from stack.fencing import Counters
from stack.findings import Finding, Level, grade
from stack.layout import ETCD_QUOTA_BYTES
from stack.spec import AuditThresholds, ClusterSpec
from stack.tls import CA_CRITICAL_DAYS, CA_WARN_DAYS, CertInfo, ca_outcome, expiry_outcome

XID_WRAPAROUND = 2**31


def _mib(n: float) -> str:
    return f"{n / 1048576:.1f} MiB"


def check_etcd(members: list[EtcdMember], spec: ClusterSpec, th: AuditThresholds) -> list[Finding]:
    out: list[Finding] = []
    seen = {m.member: m for m in members}
    for name in spec.etcd_names():
        m = seen.get(name)
        if m is None or not m.healthy:
            why = "no answer" if m is None else (m.error or "unhealthy")
            out.append(Finding("etcd.member", name, Level.CRITICAL, why, "healthy",
                               f"`pgha logs {name}`; `pgha up` restarts a stopped member"))
        else:
            out.append(Finding("etcd.member", name, Level.OK, "healthy", "healthy"))
    healthy = sum(1 for n in spec.etcd_names() if n in seen and seen[n].healthy)
    need = spec.etcd_members // 2 + 1
    out.append(Finding("etcd.quorum", spec.scope, Level.OK if healthy >= need else Level.CRITICAL,
                       f"{healthy}/{spec.etcd_members} healthy", f">= {need}",
                       "" if healthy >= need else "Patroni cannot renew its leader lock without quorum"))
    leaders = [m.member for m in members if m.healthy and m.is_leader]
    out.append(Finding("etcd.leader", spec.scope, Level.OK if len(leaders) == 1 else Level.CRITICAL,
                       ", ".join(leaders) or "none", "exactly one",
                       "" if len(leaders) == 1 else "etcd has no leader: check its logs and the network"))
    for m in members:
        if m.db_size is None:
            continue
        pct = 100.0 * m.db_size / ETCD_QUOTA_BYTES
        lvl = grade(pct, th.etcd_db_warn_pct, th.etcd_db_critical_pct)
        out.append(Finding("etcd.db_size", m.member, lvl, f"{_mib(m.db_size)} ({pct:.1f}% of quota)",
                           f"warn {th.etcd_db_warn_pct:g}%, critical {th.etcd_db_critical_pct:g}%",
                           "" if lvl == Level.OK else "compact and defragment etcd (etcdctl compaction / defrag)"))
    return out


def leader_key_verdict(obs: LeaderKeyObs) -> str:
    """"" when the leader key is one Patroni wrote (or there is none), else why it is not. Patroni
    writes its leader key and its own member key with the same lease (its session); the fencer,
    the only other etcd user that may write the leader key, may write no member key. (A write
    that carries the named member's own lease is not told apart: docs/threat-model.md.)"""
    if obs.holder is None:
        return ""
    if not obs.lease:
        return f"the leader key names {obs.holder} with no lease"
    if obs.holder_member_lease is None:
        return f"the leader key names {obs.holder}, which has no member key"
    if obs.holder_member_lease != obs.lease:
        return f"the leader key's lease is not {obs.holder}'s session"
    return ""


def check_leader_key(obs: LeaderKeyObs | None, spec: ClusterSpec, error: str = "") -> list[Finding]:
    if obs is None:
        return [Finding("etcd.leader_key", spec.scope, Level.WARN, error or "etcd did not answer",
                        "written by Patroni", "the `etcd.*` rows say why")]
    why = leader_key_verdict(obs)
    if why:
        return [Finding("etcd.leader_key", spec.scope, Level.CRITICAL, why + ": not written by Patroni",
                        "written by Patroni", "Patroni acts on a leader it did not elect: delete the key "
                        "(the members elect a leader again) and find out who wrote it")]
    observed = f"{obs.holder}, with its session" if obs.holder else "no leader key (an election)"
    return [Finding("etcd.leader_key", spec.scope, Level.OK, observed, "written by Patroni")]


def check_etcd_auth(obs: EtcdAuthObs | None, spec: ClusterSpec, error: str = "") -> list[Finding]:
    """etcd's authentication: on (ok); off on a cluster made before pgha switched it on (warning:
    no rolling path, a rebuild moves it); off although pgha had switched it on (critical: `up`
    switches it on again). Not judged with TLS off (auth needs it)."""
    if not spec.tls.enabled:
        return []
    if obs is None:
        return [Finding("etcd.auth", spec.scope, Level.WARN, error or "etcd did not answer", "on",
                        "the `etcd.*` rows say why")]
    if obs.enabled:
        return [Finding("etcd.auth", spec.scope, Level.OK, "on", "on")]
    if obs.switched_on_by_pgha:
        return [Finding("etcd.auth", spec.scope, Level.CRITICAL, "off (pgha had switched it on)", "on",
                        "every certificate holder can write the cluster's keys: `pgha up` switches it on again")]
    return [Finding("etcd.auth", spec.scope, Level.WARN, "off: a cluster made before etcd authentication", "on",
                    "any holder of a certificate from the cluster's CA can write its keys; rebuild the cluster "
                    "(`pgha restore --into NEW-SCOPE`, or `pgha upgrade --major`) to move it to etcd authentication")]
def leader_role(spec: ClusterSpec) -> str:
    """The role Patroni reports for the cluster's leader: a standby cluster's is `standby_leader`."""
    return "standby_leader" if spec.standby_of is not None else "leader"


def check_patroni(obs: PatroniObs | None, spec: ClusterSpec, error: str = "") -> list[Finding]:
    if obs is None:
        return [Finding("patroni.api", spec.scope, Level.CRITICAL, error or "no node answers /cluster", "answers",
                        "every Patroni node is down or unreachable: `pgha status`")]
    out: list[Finding] = []
    by_name = {m.name: m for m in obs.members}
    # A standby cluster (second site) is led by a standby leader that follows the primary site.
    role = leader_role(spec)
    leaders = [m for m in obs.members if m.role == role]
    out.append(Finding("patroni.leader", spec.scope, Level.OK if len(leaders) == 1 else Level.CRITICAL,
                       ", ".join(m.name for m in leaders) or "none",
                       "exactly one" if role == "leader" else "exactly one standby leader",
                       "" if len(leaders) == 1 else "no writable primary: see `pgha status` and Patroni logs"
                       if role == "leader" else f"no standby leader following {spec.standby_of.scope if spec.standby_of else ''}: "
                       "see `pgha site status` and Patroni logs"))
    out.append(Finding("patroni.paused", spec.scope, Level.WARN if obs.paused else Level.OK,
                       "paused" if obs.paused else "not paused", "not paused",
                       "maintenance mode: no automatic failover until `pgha resume`" if obs.paused else ""))
    lead_tl = leaders[0].timeline if len(leaders) == 1 else None
    for name in spec.node_names():
        m = by_name.get(name)
        if m is None:
            out.append(Finding("patroni.member", name, Level.CRITICAL, "not registered", "running/streaming",
                               f"container {spec.container(name)} down? `pgha status`; `pgha up` starts it"))
            continue
        good = m.state == "running" if m.role == "leader" else m.state in ("streaming", "running")
        out.append(Finding("patroni.member", name, Level.OK if good else Level.CRITICAL, f"{m.role} {m.state}",
                           "running/streaming", "" if good else f"`pgha logs {name}`"))
        if lead_tl is not None and m.timeline is not None and m.timeline != lead_tl:
            out.append(Finding("patroni.timeline", name, Level.CRITICAL, f"timeline {m.timeline}",
                               f"leader's {lead_tl}", f"the member diverged: `pgha reinit {name} --yes`"))
        if m.pending_restart:
            out.append(Finding("patroni.pending_restart", name, Level.WARN, "pending restart", "none",
                               f"a changed parameter needs a restart: `pgha restart {name}`"))
        for probe, codes in (("liveness", obs.liveness), ("readiness", obs.readiness)):
            code = codes.get(name)
            ok = code == 200
            out.append(Finding(f"patroni.{probe}", name, Level.OK if ok else Level.CRITICAL,
                               "no answer" if code is None else f"HTTP {code}", "HTTP 200",
                               "" if ok else f"Patroni's /{probe} on {name} fails"))
    return out


def check_replication(leader: str | None, rows: list[ReplicationRow], spec: ClusterSpec,
                      th: AuditThresholds, error: str = "") -> list[Finding]:
    if leader is None:
        return [Finding("replication", spec.scope, Level.CRITICAL, error or "no leader to read from", "",
                        "replication cannot be checked without a primary")]
    out: list[Finding] = []
    by_name = {r.name: r for r in rows}
    for name in spec.node_names():
        if name == leader:
            continue
        r = by_name.get(name)
        if r is None or r.state != "streaming":
            out.append(Finding("replication.streaming", name, Level.CRITICAL,
                               "absent from pg_stat_replication" if r is None else r.state, "streaming",
                               f"replica {name} does not replicate: `pgha status`, `pgha logs {name}`"))
            continue
        out.append(Finding("replication.streaming", name, Level.OK, f"streaming ({r.sync_state})", "streaming"))
        if spec.delay_of(name) is not None:
            continue  # it replays late on purpose: its `delayed.within` row judges its lag
        if r.lag_bytes is not None:
            lvl = grade(r.lag_bytes, th.lag_warn_bytes, th.lag_critical_bytes)
            out.append(Finding("replication.lag_bytes", name, lvl, f"{r.lag_bytes} B",
                               f"warn {th.lag_warn_bytes}, critical {th.lag_critical_bytes}",
                               "" if lvl == Level.OK else "replica falls behind: disk/CPU of the replica, long queries"))
        if r.lag_s is not None:
            lvl = grade(r.lag_s, th.lag_warn_s, th.lag_critical_s)
            out.append(Finding("replication.lag_seconds", name, lvl, f"{r.lag_s:.1f} s",
                               f"warn {th.lag_warn_s:g}, critical {th.lag_critical_s:g}",
                               "" if lvl == Level.OK else "replica replays late"))
    # A standby cluster's leader has no synchronous standby (Patroni applies synchronous_mode to a primary).
    if spec.timing.synchronous_mode and spec.nodes > 1 and spec.standby_of is None:
        sync = [r.name for r in rows if r.sync_state in ("sync", "quorum")]
        out.append(Finding("replication.sync_standby", spec.scope, Level.OK if sync else Level.CRITICAL,
                           ", ".join(sync) or "none", "one (synchronous_mode)",
                           "" if sync else "commits wait for or lose their second copy: a replica must stream"))
    return out


def check_standby(obs: StandbyObs | None, spec: ClusterSpec, th: AuditThresholds, error: str = "") -> list[Finding]:
    """A standby site streams from its primary site and replays within the lag thresholds."""
    if spec.standby_of is None:
        return []
    primary = spec.standby_of.scope
    want = (f"streaming from {primary}; lag warn {th.lag_warn_bytes} B / {th.lag_warn_s:g} s, "
            f"critical {th.lag_critical_bytes} B / {th.lag_critical_s:g} s")
    if obs is None:
        return [Finding("site.standby", spec.scope, Level.CRITICAL, error or "no answer", want,
                        f"neither the standby leader's position nor {primary}'s can be read: `pgha site status`")]
    if obs.receiver != "streaming":
        return [Finding("site.standby", spec.scope, Level.CRITICAL, f"not streaming (receiver: {obs.receiver or 'none'})",
                        want, f"{primary} down or unreachable? `pgha site status --scope {spec.scope}`")]
    by_bytes = Level.OK if obs.lag_bytes is None else grade(obs.lag_bytes, th.lag_warn_bytes, th.lag_critical_bytes)
    by_s = Level.OK if obs.lag_s is None else grade(obs.lag_s, th.lag_warn_s, th.lag_critical_s)
    lvl = max(by_bytes, by_s, key=[Level.OK, Level.WARN, Level.CRITICAL].index)
    observed = (f"streaming, {'?' if obs.lag_bytes is None else obs.lag_bytes} B / "
                f"{'?' if obs.lag_s is None else f'{obs.lag_s:g}'} s behind {primary}")
    return [Finding("site.standby", spec.scope, lvl, observed, want,
                    "" if lvl == Level.OK else f"the standby site falls behind {primary}")]


def check_delayed(leader: str | None, rows: list[ReplicationRow], obs: HaproxyObs | None, spec: ClusterSpec,
                  th: AuditThresholds) -> list[Finding]:
    """Each delayed replica replays within its delay (plus the lag thresholds) and is out of R/O routing.

    Its lag is `replay_lag` from pg_stat_replication: about the delay while writes arrive, none once
    it has replayed everything (an idle primary). A delayed node HAProxy routes reads to would
    serve data `delay` old as if current: critical.
    """
    out: list[Finding] = []
    by_name = {r.name: r for r in rows}
    for d in spec.delayed:
        want = f"replays within {d.delay} + {th.lag_warn_s:g} s; out of R/O routing"
        if d.name == leader:  # declared delayed while it led: its tags keep it from being promoted, not from leading
            out.append(Finding("delayed.within", d.name, Level.CRITICAL, "the primary", want,
                               "a delayed node leads: `pgha switchover` to another node, then it replays late"))
            continue
        backend = obs.replicas.get(d.name) if obs is not None else None
        if backend is not None and backend.status.startswith("UP"):
            out.append(Finding("delayed.within", d.name, Level.CRITICAL, "in R/O routing (HAProxy replicas UP)",
                               want, "reads could be served from a node replaying late: its noloadbalance tag "
                               f"is not in effect; `pgha up` renders it again, `pgha logs {d.name}`"))
            continue
        r = by_name.get(d.name)
        if r is None or r.lag_s is None:
            observed = "no replication row" if r is None else "caught up (nothing waits for replay)"
            out.append(Finding("delayed.within", d.name, Level.OK, observed, want))
            continue
        lvl = grade(r.lag_s - d.seconds, th.lag_warn_s, th.lag_critical_s)
        out.append(Finding("delayed.within", d.name, lvl, f"replays {r.lag_s:.1f} s late (delay {d.seconds} s)", want,
                           "" if lvl == Level.OK else "the delayed replica falls behind its delay: replay "
                           "paused (a recovery left it paused?), disk or CPU of the node"))
    return out


def check_haproxy(obs: HaproxyObs | None, leader: str | None, streaming: set[str], spec: ClusterSpec,
                  th: AuditThresholds, baseline: Baseline, error: str = "") -> list[Finding]:
    if obs is None:
        return [Finding("haproxy.stats", spec.scope, Level.CRITICAL, error or "unreachable", "answers",
                        f"HAProxy stats on 127.0.0.1:{spec.ports.stats} do not answer: "
                        f"`pgha logs {spec.haproxy_member}`")]
    out: list[Finding] = []
    # A standby cluster's R/W port reaches its standby leader, read-only until `pgha site promote`.
    standby = spec.standby_of is not None
    rw_ok = obs.rw_writable != standby and obs.rw_member is not None and obs.rw_member == leader
    out.append(Finding("haproxy.rw_port", str(spec.ports.rw), Level.OK if rw_ok else Level.CRITICAL,
                       (f"{obs.rw_member or '?'} " + ("writable" if obs.rw_writable else "read-only"))
                       if obs.rw_member or obs.rw_writable else (obs.error or "no connection"),
                       f"{'read-only standby' if standby else 'writable'} leader {leader or '?'}",
                       "" if rw_ok else "writes do not reach the primary: HAProxy backends, `pgha status`"))
    if spec.nodes > 1:
        ro_ok = obs.ro_in_recovery is True
        out.append(Finding("haproxy.ro_port", str(spec.ports.ro), Level.OK if ro_ok else Level.CRITICAL,
                           "no connection" if obs.ro_in_recovery is None else
                           f"{obs.ro_member or '?'} " + ("replica" if obs.ro_in_recovery else "PRIMARY"),
                           "a replica", "" if ro_ok else "the R/O port must reach replicas only"))
    up_primary = {s for s, b in obs.primary.items() if b.status.startswith("UP")}
    want_primary = {leader} if leader else set()
    out.append(Finding("haproxy.primary_backend", spec.scope, Level.OK if up_primary == want_primary else Level.CRITICAL,
                       "UP: " + (", ".join(sorted(up_primary)) or "none"), "UP: " + (leader or "the leader"),
                       "" if up_primary == want_primary else "HAProxy's view of the primary differs from Patroni's"))
    up_replicas = {s for s, b in obs.replicas.items() if b.status.startswith("UP")}
    lvl = Level.OK if up_replicas == streaming else Level.WARN
    if (spec.nodes > 1 and not up_replicas) or (leader is not None and leader in up_replicas):
        lvl = Level.CRITICAL  # no reads at all, or the R/O port may reach the primary
    out.append(Finding("haproxy.replica_backend", spec.scope, lvl, "UP: " + (", ".join(sorted(up_replicas)) or "none"),
                       "UP: " + (", ".join(sorted(streaming)) or "none"),
                       "" if lvl == Level.OK else "HAProxy's replica set differs from Patroni's streaming replicas "
                       "(a check may be mid-transition; re-run the audit)"))
    for backend, servers in (("primary", obs.primary), ("replicas", obs.replicas)):
        for server, b in servers.items():
            key = f"{backend}/{server}"
            flaps = b.chkdown - baseline.chkdown[key] if key in baseline.chkdown and b.chkdown >= baseline.chkdown[key] else 0
            if flaps >= th.flaps_warn:
                out.append(Finding("haproxy.flapping", key, Level.WARN, f"{flaps} DOWN transitions since last audit",
                                   f"< {th.flaps_warn}", "a node's check keeps failing and recovering: "
                                   "its Patroni API, network or load"))
    return out


def check_postgres(obs: PostgresObs | None, spec: ClusterSpec, th: AuditThresholds, error: str = "") -> list[Finding]:
    if obs is None:
        return [Finding("postgres.connect", str(spec.ports.rw), Level.CRITICAL, error or "no connection", "connects",
                        "the primary does not accept connections through HAProxy")]
    out: list[Finding] = []
    pct = 100.0 * obs.connections / max(obs.max_connections, 1)
    lvl = grade(pct, th.connections_warn_pct, th.connections_critical_pct)
    out.append(Finding("postgres.connections", "primary", lvl, f"{obs.connections}/{obs.max_connections} ({pct:.0f}%)",
                       f"warn {th.connections_warn_pct:g}%, critical {th.connections_critical_pct:g}%",
                       "" if lvl == Level.OK else "use a pooler or raise max_connections"))
    for check, value, warn, crit, hint in (
        ("postgres.oldest_transaction", obs.oldest_xact_s, th.transaction_warn_s, th.transaction_critical_s,
         "a long transaction holds back vacuum: pg_stat_activity"),
        ("postgres.idle_in_transaction", obs.oldest_idle_in_xact_s, th.idle_in_transaction_warn_s,
         th.idle_in_transaction_critical_s, "a client left a transaction open: pg_terminate_backend"),
    ):
        lvl = Level.OK if value is None else grade(value, warn, crit)
        out.append(Finding(check, "primary", lvl, "none" if value is None else f"{value:.0f} s",
                           f"warn {warn:g} s, critical {crit:g} s", "" if lvl == Level.OK else hint))
    if not obs.inactive_slots:
        out.append(Finding("postgres.inactive_slots", "primary", Level.OK, "none", "none retaining WAL"))
    for slot, retained in sorted(obs.inactive_slots.items()):
        lvl = grade(retained, th.slot_retained_warn_bytes, th.slot_retained_critical_bytes)
        out.append(Finding("postgres.inactive_slot", slot, lvl, f"inactive, retains {_mib(retained)}",
                           f"warn {_mib(th.slot_retained_warn_bytes)}, critical {_mib(th.slot_retained_critical_bytes)}",
                           "" if lvl == Level.OK else "drop the slot if its consumer is gone (pg_drop_replication_slot)"))
    lvl = grade(obs.max_xid_age, th.xid_age_warn, th.xid_age_critical)
    out.append(Finding("postgres.xid_age", "primary", lvl,
                       f"{obs.max_xid_age} ({100.0 * (XID_WRAPAROUND - obs.max_xid_age) / XID_WRAPAROUND:.1f}% margin)",
                       f"warn {th.xid_age_warn}, critical {th.xid_age_critical}",
                       "" if lvl == Level.OK else "VACUUM FREEZE the oldest database before wraparound"))
    out.append(Finding("postgres.data_checksums", "primary", Level.OK if obs.data_checksums else Level.WARN,
                       "on" if obs.data_checksums else "off", "on",
                       "" if obs.data_checksums else "silent corruption goes unnoticed: pg_checksums --enable (offline)"))
    return out


def check_disks(used_pct: dict[str, float | None], spec: ClusterSpec, th: AuditThresholds) -> list[Finding]:
    out: list[Finding] = []
    for member in spec.node_names():
        pct = used_pct.get(member)
        if pct is None:
            continue  # a stopped node is reported by the container and Patroni checks
        lvl = grade(pct, th.disk_warn_pct, th.disk_critical_pct)
        out.append(Finding("disk.data_volume", member, lvl, f"{pct:.0f}% used",
                           f"warn {th.disk_warn_pct:g}%, critical {th.disk_critical_pct:g}%",
                           "" if lvl == Level.OK else f"volume {spec.volume(member)} fills up: WAL, slots, bloat"))
    return out


def check_containers(containers: list[ContainerObs], spec: ClusterSpec, th: AuditThresholds,
                     baseline: Baseline) -> list[Finding]:
    out: list[Finding] = []
    by_member = {c.member: c for c in containers}
    for member, _ in spec.expected_members():
        c = by_member.get(member)
        name = spec.container(member)
        if member in spec.fencer_members() and (c is None or c.status != "running"):
            # Without the watcher failover still works, by Patroni's ttl: a warning, not critical.
            out.append(Finding("container.running", member, Level.WARN, "missing" if c is None else c.status,
                               "running", f"fencing is off until `pgha up` starts {name}: a dead leader is "
                                          "replaced only after Patroni's ttl"))
            continue
        if member == spec.metrics_member and spec.metrics.enabled and (c is None or c.status != "running"):
            # The exporter only reports: its absence shows as a failed scrape, the cluster is unaffected.
            out.append(Finding("container.running", member, Level.WARN, "missing" if c is None else c.status,
                               "running", f"metrics are not served until `pgha up` starts {name}"))
            continue
        if c is None or c.status != "running":
            out.append(Finding("container.running", member, Level.CRITICAL, "missing" if c is None else c.status,
                               "running", f"`pgha up` starts {name} again; docker logs {name}"))
            continue
        # `starting` before its first check (a container just started) is expected, not a warning.
        first_due = c.health == "starting" and c.health_pending
        lvl = Level.OK if c.health in ("healthy", "") or first_due else (
            Level.WARN if c.health == "starting" else Level.CRITICAL)
        seen = "starting, first check due" if first_due else c.health
        out.append(Finding("container.running", member, lvl, f"running, {seen or 'no health check'}",
                           "running, healthy", "" if lvl == Level.OK else f"docker inspect {name} (health log)"))
        prev = baseline.restarts.get(c.name)
        delta = c.restart_count - prev[1] if prev and prev[0] == c.container_id and c.restart_count >= prev[1] else 0
        lvl = Level.OK if delta < th.restarts_warn else grade(delta, th.restarts_warn, th.restarts_critical)
        out.append(Finding("container.restarts", member, lvl,
                           f"{delta} since last audit" if prev else f"{c.restart_count} (first audit)",
                           f"warn {th.restarts_warn}, critical {th.restarts_critical}",
                           "" if lvl == Level.OK else f"{name} keeps restarting: docker logs {name}"))
    return out


def _cap(driver: str, options: dict[str, str] | None) -> str:
    opts = options or {}
    if "max-size" not in opts:
        return f"no cap ({driver or 'unknown'} driver)"
    return f"{opts['max-size']} x {opts.get('max-file', '1')} files ({driver})"


def check_log_caps(containers: list[ContainerObs], spec: ClusterSpec) -> list[Finding]:
    """Each member's log is capped as the spec's `logs:` says. A container created by an older pgha
    (no cap) or under another `logs:` keeps its log options until it is recreated: a warning."""
    want = spec.logs.driver_options()
    expected = _cap("json-file", want)
    out: list[Finding] = []
    by_member = {c.member: c for c in containers}
    for member, _ in spec.expected_members():
        c = by_member.get(member)
        if c is None or not c.log_driver:
            continue  # a missing container is container.running's finding
        ok = c.log_driver == "json-file" and c.log_options == want
        out.append(Finding("container.log_cap", member, Level.OK if ok else Level.WARN,
                           _cap(c.log_driver, c.log_options), expected,
                           "" if ok else f"`pgha up` recreates {spec.container(member)} with the spec's cap "
                                         "(Patroni nodes one at a time)"))
    return out


OOM_WINDOW_S = 3600.0  # how far back the audit looks for `oom` events


def check_resources(obs: list[PressureObs], spec: ClusterSpec, th: AuditThresholds) -> list[Finding]:
    """Memory use against each container's limit, and OOM kills (hardening: the limits are real)."""
    out: list[Finding] = []
    for o in sorted(obs, key=lambda o: o.member):
        name = spec.container(o.member)
        if o.used_bytes is None or not o.limit_bytes:
            out.append(Finding("resource.memory", o.member, Level.WARN, "no limit" if not o.limit_bytes else "no stats",
                               "a memory limit (resources:)", f"`pgha up` recreates {name} with its limit"))
        else:
            pct = 100.0 * o.used_bytes / o.limit_bytes
            lvl = grade(pct, th.memory_warn_pct, th.memory_critical_pct)
            out.append(Finding("resource.memory", o.member, lvl,
                               f"{_mib(o.used_bytes)} of {_mib(o.limit_bytes)} ({pct:.0f}%)",
                               f"warn {th.memory_warn_pct:g}%, critical {th.memory_critical_pct:g}%",
                               "" if lvl == Level.OK else f"raise resources.{_role(spec, o.member)}.memory_mib "
                                                          "or lower the memory settings"))
        killed = o.oom_killed or o.oom_events > 0
        observed = ("last exit was an OOM kill" if o.oom_killed else "") + (
            f"{'; ' if o.oom_killed else ''}{o.oom_events} OOM kill(s) in the last hour" if o.oom_events else "")
        out.append(Finding("resource.oom", o.member, Level.CRITICAL if killed else Level.OK,
                           observed or "none in the last hour", "none",
                           f"{name} ran out of memory: raise its limit or lower its memory settings" if killed else ""))
    return out


def _role(spec: ClusterSpec, member: str) -> str:
    if member in spec.etcd_names():
        return "etcd"
    if member in spec.node_names():
        return "patroni"
    if member == spec.fencer_member or member in spec.fencer_members():
        return "fencer"
    return {spec.haproxy_member: "haproxy", spec.pooler_member: "pooler"}.get(member, "patroni")


FENCER_STALE_S = 30.0  # the watcher writes its counters at least every 10 s


def check_fencing(stats: Counters | None, spec: ClusterSpec, now: float, error: str = "",
                  target: str | None = None) -> list[Finding]:
    """A fencing watcher: alive (fresh heartbeat) and what it decided so far, by outcome.

    `target`: the row's subject, the scope for the one watcher of a single engine, the watcher's
    member (`fencer-<host>`) with `hosts` (`check_fencers`).
    """
    subject = target or spec.scope
    if not spec.fencing:
        return [Finding("fencing.watcher", spec.scope, Level.OK, "off (spec.fencing: false)", "",
                        "a dead leader is replaced after Patroni's ttl")]
    if stats is None:
        return [Finding("fencing.watcher", subject, Level.WARN, f"missing: {error or 'no counters'}", "running",
                        "failover of a dead leader falls back to Patroni's ttl; `pgha up` restarts the fencer")]
    age = now - stats.heartbeat_at
    by = stats.by_outcome
    fenced = by.get("fenced", 0)
    skipped = ", ".join(f"{k.removeprefix('skipped: ')} {v}" for k, v in sorted(by.items()) if k != "fenced")
    observed = (f"heartbeat {age:.0f} s ago; {stats.events} events, fenced {fenced}"
                + (f", skipped: {skipped}" if skipped else ""))
    lvl = Level.OK if age < FENCER_STALE_S else Level.WARN
    out = [Finding("fencing.watcher", subject, lvl, observed, f"heartbeat < {FENCER_STALE_S:.0f} s",
                   "" if lvl == Level.OK else "the watcher is stuck: docker logs of the fencer")]
    unreachable = by.get("skipped: etcd unreachable", 0) + by.get("skipped: engine did not confirm", 0)
    if unreachable:
        out.append(Finding("fencing.unconfirmed", subject, Level.WARN,
                           f"{unreachable} deaths not fenced: etcd or the engine did not answer", "0",
                           "those failovers waited for Patroni's ttl"))
    return out


def check_fencers(per_member: dict[str, tuple[Counters | None, str]], spec: ClusterSpec, now: float,
                  error: str = "") -> list[Finding]:
    """Every watcher's rows: one for the single engine's (subject: the scope), one per watched host
    with `hosts` (subject: `fencer-<host>`). `per_member` maps member -> (counters or None, why none);
    a watcher missing from it is reported missing with `error` (the gathering failed as a whole)."""
    if not spec.fencing:
        return check_fencing(None, spec, now)
    out: list[Finding] = []
    for m in spec.fencer_members():
        stats, why = per_member.get(m, (None, error))
        out += check_fencing(stats, spec, now, why, target=m if spec.multi_host else None)
    return out


def check_failsafe(configured: bool | None, active: list[str], spec: ClusterSpec, error: str = "") -> list[Finding]:
    """Patroni's failsafe_mode: set as the spec says, and whether a node runs on it now (etcd lost)."""
    if configured is None:
        return [Finding("patroni.failsafe_mode", spec.scope, Level.WARN, f"unknown: {error or 'no answer'}",
                        str(spec.failsafe_mode).lower())]
    lvl = Level.OK if configured == spec.failsafe_mode else Level.WARN
    out = [Finding("patroni.failsafe_mode", spec.scope, lvl, "on" if configured else "off",
                   "on" if spec.failsafe_mode else "off", "" if lvl == Level.OK else "`pgha up` sets it as the spec says")]
    out.append(Finding("patroni.failsafe_active", spec.scope, Level.WARN if active else Level.OK,
                       f"running on failsafe: {', '.join(active)}" if active else "not active", "not active",
                       "etcd has no quorum: the primary is kept only while it reaches every member" if active else ""))
    return out


def next_baseline(containers: list[ContainerObs], haproxy: HaproxyObs | None, previous: Baseline) -> Baseline:
    """The baseline the next audit compares with (keeps old flap counters when HAProxy did not answer)."""
    chk = dict(previous.chkdown)
    if haproxy is not None:
        chk = {f"{bk}/{s}": b.chkdown for bk, servers in (("primary", haproxy.primary), ("replicas", haproxy.replicas))
               for s, b in servers.items()}
    return Baseline(restarts={c.name: (c.container_id, c.restart_count) for c in containers if c.container_id},
                    chkdown=chk)


@dataclass(frozen=True)
class Verdict:
    level: Level
    message: str


def verdict(scope: str, findings: list[Finding]) -> Verdict:
    """The audit's outcome and one message naming every critical finding (the alert shows it)."""
    crit = [f for f in findings if f.status == Level.CRITICAL]
    warn = [f for f in findings if f.status == Level.WARN]
    if crit:
        return Verdict(Level.CRITICAL, f"health audit of {scope}: {len(crit)} critical: "
                       + "; ".join(f.line() for f in crit))
    if warn:
        return Verdict(Level.WARN, f"health audit of {scope}: ok with {len(warn)} warning(s): "
                       + "; ".join(f.line() for f in warn))
    return Verdict(Level.OK, f"health audit of {scope}: all {len(findings)} checks ok")


def check_tls(infos: list[CertInfo] | None, spec: ClusterSpec, now: dt.datetime, error: str = "") -> list[Finding]:
    """Two rows: the member or client certificate nearest to expiry (warning `tls.expiry_warn_days`
    before, critical after), and the CA (warned a year ahead: replacing it is a new cluster)."""
    if not spec.tls.enabled:
        return []
    if infos is None:
        return [Finding("tls.cert_expiry", spec.scope, Level.CRITICAL, error or "cannot read the certificates",
                        "", "run `pgha up` to create them")]
    outcome, detail = expiry_outcome(infos, now, spec.tls.expiry_warn_days)
    level = {"ok": Level.OK, "warning": Level.WARN}.get(outcome, Level.CRITICAL)
    ca_state, ca_detail = ca_outcome(infos, now)
    ca_level = {"ok": Level.OK, "warning": Level.WARN}.get(ca_state, Level.CRITICAL)
    return [Finding("tls.cert_expiry", spec.scope, level, detail, f"warn {spec.tls.expiry_warn_days} days before",
                    "" if level == Level.OK else "pgha certs renew"),
            Finding("tls.ca_expiry", spec.scope, ca_level, ca_detail,
                    f"warn {CA_WARN_DAYS} days before, critical {CA_CRITICAL_DAYS}",
                    "" if ca_level == Level.OK else "a new cluster: pgha restore --into NEW-SCOPE")]
