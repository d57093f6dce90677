"""Drill analysis, pure: write/read gaps, lost writes, the timeline, and the verdict.

The flow (flows/drill.py) injects faults and records what the probes saw; everything it
concludes from those observations is computed here and unit-tested without Docker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from stack.results import DrillResult
from stack.spec import ClusterSpec


class DrillKind(StrEnum):
    SWITCHOVER = "switchover"
    SWITCHOVER_POOLED = "switchover-pooled"  # the write probe goes through the pooler
    GRACEFUL_STOP = "graceful-stop"
    HARD_KILL = "hard-kill"
    PARTITION = "partition"
    REPLICA_KILL = "replica-kill"
    ETCD_MEMBER_LOSS = "etcd-member-loss"
    HAPROXY_RESTART = "haproxy-restart"
    FREEZE = "freeze"  # docker pause of the leader for a while, then unpause
    ETCD_QUORUM_LOSS = "etcd-quorum-loss"  # stop a majority of etcd members for a while, then start them
    HOST_LOSS = "host-loss"  # many hosts: a whole host dies (lab: docker kill of the lab host), then boots again
    HOST_PARTITION = "host-partition"  # lab: the lab host cut off the lab network while it runs, then reconnected
    SITE_SWITCHOVER = "site-switchover"  # run on a standby site: the controlled site switchover under writes
    SITE_LOSS = "site-loss"  # run on a standby site: every container of its primary site killed, then a site failover

    @property
    def is_site(self) -> bool:
        """A drill of two sites, run with `--scope` of the standby site (its `standby_of` names the other)."""
        return self in (DrillKind.SITE_SWITCHOVER, DrillKind.SITE_LOSS)

    @property
    def whole_host(self) -> bool:
        """The fault hits every member of one host (`--host`)."""
        return self in (DrillKind.HOST_LOSS, DrillKind.HOST_PARTITION)

    @property
    def moves_leader(self) -> bool:
        return self in (DrillKind.SWITCHOVER, DrillKind.SWITCHOVER_POOLED, DrillKind.GRACEFUL_STOP,
                        DrillKind.HARD_KILL, DrillKind.PARTITION)

    @property
    def is_switchover(self) -> bool:
        return self in (DrillKind.SWITCHOVER, DrillKind.SWITCHOVER_POOLED)

    @property
    def timed(self) -> bool:
        """The fault lasts a given time (`--seconds`), then the drill undoes it."""
        return self in (DrillKind.FREEZE, DrillKind.ETCD_QUORUM_LOSS)


def fault_seconds(kind: DrillKind, ttl: int, seconds: int | None) -> int:
    """How long a timed fault lasts: the given seconds, else ttl + 5 (freeze) or 60 (etcd-quorum-loss).

    Raises ValueError for `seconds` on a kind that is not timed or out of 1..900.
    """
    if seconds is not None and not kind.timed:
        raise ValueError(f"--seconds only applies to freeze and etcd-quorum-loss, not {kind}")
    if seconds is not None and not 1 <= seconds <= 900:
        raise ValueError(f"--seconds must be between 1 and 900, not {seconds}")
    if seconds is not None:
        return seconds
    return ttl + 5 if kind == DrillKind.FREEZE else 60 if kind == DrillKind.ETCD_QUORUM_LOSS else 0


@dataclass
class ProbeLog:
    """What one probe saw, as monotonic seconds."""

    ok: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    acked_ids: list[int] = field(default_factory=list)  # write probe only
    stalls: list[float] = field(default_factory=list)  # seconds from sending each successful attempt to its commit


def longest_gap(ok: list[float], start: float, end: float) -> float:
    """Longest time without a success in [start, end] (the edges count as gap boundaries)."""
    points = [start, *sorted(t for t in ok if start <= t <= end), end]
    return max((b - a for a, b in zip(points, points[1:], strict=False)), default=0.0)


def lost_writes(acked: list[int], present: set[int]) -> list[int]:
    """Acknowledged ids that the healed cluster does not have: the RPO, which must be empty."""
    return sorted(i for i in acked if i not in present)


def timeline(writes: ProbeLog, reads: ProbeLog, start: float, end: float, fault: float,
             marks: dict[str, float] | None = None, width: int = 100) -> str:
    """A compact text chart: one character per time cell, █ success, x only errors, · nothing."""
    span = max(end - start, 1e-6)
    cell = span / width

    def row(log: ProbeLog) -> str:
        cells = ["·"] * width

        def index(t: float) -> int | None:
            i = int((t - start) / cell)
            return i if 0 <= i < width else None

        for t, _ in log.errors:
            if (i := index(t)) is not None:
                cells[i] = "x"
        for t in log.ok:  # a success in a cell wins over an error in it
            if (i := index(t)) is not None:
                cells[i] = "█"
        return "".join(cells)

    def marker_row() -> str:
        line = [" "] * width
        for label, t in {"F": fault, **(marks or {})}.items():
            pos = min(width - 1, max(0, int((t - start) / cell)))
            line[pos] = label[0]
        return "".join(line)

    legend = f"one cell = {cell * 1000:.0f} ms; █ success, x error, · no answer; F fault"
    extra = ", ".join(f"{k[0]} {k}" for k in (marks or {}))
    return "\n".join([
        f"writes {row(writes)}",
        f"reads  {row(reads)}",
        f"       {marker_row()}",
        legend + (f", {extra}" if extra else ""),
    ])


def error_digest(log: ProbeLog, t_fault: float, limit: int = 8) -> list[str]:
    """The first errors a probe saw, as '+seconds-after-fault message' lines."""
    return [f"{t - t_fault:+.2f}s {msg}" for t, msg in log.errors[:limit]]


def verdict(r: DrillResult) -> tuple[bool, str]:
    """Pass only with zero acknowledged writes lost and the cluster whole again.

    site-loss loses the writes its primary site had not yet streamed (asynchronous standby): they
    are its RPO, reported, not a failure; it passes when the promoted site took writes and the
    old site follows it again.
    """
    if r.kind == DrillKind.SITE_LOSS:
        if not r.healed:
            return False, f"site-loss: the old site {r.target} does not follow {r.new_leader}'s site: {r.operator_action}"
        return True, (f"site-loss: RPO {len(r.lost_writes)} acknowledged writes ({r.rpo_s or 0:.2f}s of writes), "
                      f"RTO {r.rto_s or 0:.2f}s from the failover to the first write on the promoted site, "
                      f"{r.writes_acked} writes acknowledged; the old site rebuilt as its standby")
    if r.kind == DrillKind.SITE_SWITCHOVER:
        if r.lost_writes:
            return False, f"{len(r.lost_writes)} acknowledged writes lost (first ids {r.lost_writes[:5]})"
        if not r.healed:
            return False, f"site-switchover: the old primary site {r.target} does not follow: {r.operator_action}"
        return True, (f"site-switchover: write gap {r.write_gap_s:.2f}s, 0 of {r.writes_acked} acknowledged "
                      f"writes lost, the old primary site follows the new one")
    if r.lost_writes:
        return False, f"{len(r.lost_writes)} acknowledged writes lost (first ids {r.lost_writes[:5]})"
    if not r.healed:
        return False, "the cluster did not become whole again within the bound"
    if r.kind == DrillKind.SWITCHOVER_POOLED and r.write_errors:
        return False, f"{r.write_errors} transactions failed through the pooler (its clients must only wait)"
    if r.longest_stall_s is not None:
        return True, (f"{r.kind}: longest stall {r.longest_stall_s:.2f}s through the pooler, 0 failed transactions, "
                      f"0 of {r.writes_acked} acknowledged writes lost, whole after {r.whole_s or 0:.1f}s")
    return True, (f"{r.kind}: write gap {r.write_gap_s:.2f}s, read gap {r.read_gap_s:.2f}s, "
                  f"0 of {r.writes_acked} acknowledged writes lost, whole after {r.whole_s or 0:.1f}s")


@dataclass(frozen=True)
class Target:
    member: str  # the member the fault hits
    candidate: str = ""  # switchover: the member that should take over
    also: tuple[str, ...] = ()  # further members the same fault hits (etcd-quorum-loss: the majority)

    @property
    def members(self) -> list[str]:
        return [self.member, *self.also]


def choose_target(kind: DrillKind, leader: str, replicas: dict[str, tuple[str, int | None]], nodes: int,
                  etcd_members: int, etcd_leader: str = "", to: str | None = None,
                  etcd_names: list[str] | None = None) -> Target:
    """Pick what a drill hits; raise ValueError with a readable reason when it cannot run.

    `replicas` maps member -> (Patroni role, lag bytes). In synchronous mode Patroni promotes
    only the synchronous standby, so that is the default switchover candidate.
    """
    if kind.moves_leader and nodes < 2:
        raise ValueError(f"{kind} needs at least 2 nodes: a single node has nothing to fail over to")
    if to is not None and not kind.is_switchover and kind != DrillKind.REPLICA_KILL:
        raise ValueError(f"--to only applies to switchover and replica-kill, not {kind}")
    if to is not None and to not in replicas:
        raise ValueError(f"--to {to} is not a replica of this cluster (replicas: {', '.join(sorted(replicas)) or 'none'})")
    if kind.is_switchover:
        if to is not None:
            return Target(leader, to)
        sync = sorted(m for m, (role, _) in replicas.items() if role == "sync_standby")
        if sync:
            return Target(leader, sync[0])
        best = min(replicas.items(), key=lambda kv: (kv[1][1] if kv[1][1] is not None else 1 << 62, kv[0]))
        return Target(leader, best[0])
    if kind in (DrillKind.GRACEFUL_STOP, DrillKind.HARD_KILL, DrillKind.PARTITION):
        return Target(leader)
    if kind == DrillKind.FREEZE:
        if nodes < 2:
            raise ValueError("freeze needs at least 2 nodes: a frozen single node has nothing to fail over to")
        return Target(leader)
    if kind == DrillKind.ETCD_QUORUM_LOSS:
        if etcd_members < 3:
            raise ValueError("etcd-quorum-loss needs at least 3 etcd members (with 1 the cluster simply has no etcd)")
        majority = etcd_members // 2 + 1
        names = etcd_names or [f"etcd-{i}" for i in range(1, etcd_members + 1)]
        # The etcd leader among the stopped ones, so that no leader remains in the minority either.
        order = sorted(names, key=lambda n: (n != etcd_leader, n))[:majority]
        return Target(order[0], also=tuple(order[1:]))
    if kind == DrillKind.REPLICA_KILL:
        if nodes < 2:
            raise ValueError("replica-kill needs at least 2 nodes")
        if to is not None:
            return Target(to)
        asynchronous = sorted(m for m, (role, _) in replicas.items() if role != "sync_standby")
        return Target(asynchronous[0] if asynchronous else sorted(replicas)[0])
    if kind == DrillKind.ETCD_MEMBER_LOSS:
        if etcd_members < 3:
            raise ValueError("etcd-member-loss needs at least 3 etcd members so that quorum holds")
        return Target(etcd_leader or "etcd-1")
    return Target("haproxy")


def host_target(host: str, hosts: list[str], on_host: list[str], node_names: list[str]) -> Target:
    """host-loss, host-partition: every member on `host` is hit; the Patroni node there (if any) is the one watched."""
    if not hosts:
        raise ValueError("host drills need a spec with hosts (a cluster over several engines)")
    if host not in hosts:
        raise ValueError(f"--host {host} is not one of the spec's hosts ({', '.join(hosts)})")
    if not on_host:
        raise ValueError(f"host {host} runs no member of the cluster but HAProxy")
    nodes = [m for m in on_host if m in node_names]
    first = nodes[0] if nodes else on_host[0]
    return Target(member=first, also=tuple(m for m in on_host if m != first))


def members_on_host(spec: ClusterSpec, host: str) -> list[str]:
    """The Patroni nodes and etcd members the spec places on `host` (HAProxy runs on every host)."""
    if not spec.multi_host:
        return []
    return [m for m in [*spec.node_names(), *spec.etcd_names()] if spec.host_of(m) == host]


def spec_host_target(spec: ClusterSpec, kind: DrillKind, host: str | None) -> Target | None:
    """The members a host drill hits, from the spec alone (None for a drill that is not per host).

    Checked before anything runs (the CLI refuses in one line before it starts an API or asks
    an engine): `--host` with a drill that is not per host, a host drill without `--host`, a
    host the spec does not name, a host that holds no member.
    """
    if host is not None and not kind.whole_host:
        raise ValueError(f"--host only applies to host-loss and host-partition, not {kind.value}")
    if not kind.whole_host:
        return None
    if host is None:
        raise ValueError(f"{kind.value} needs --host (one of the spec's hosts)")
    return host_target(host, [h.name for h in spec.hosts or []], members_on_host(spec, host), spec.node_names())


def site_drill_refusal(spec: ClusterSpec, kind: DrillKind, to: str | None, seconds: int | None,
                       host: str | None, kill_hosts: bool = False) -> str | None:
    """Why a drill cannot run on this spec as asked (one line), None when it can.

    A site drill runs on the standby site (its `standby_of` names the primary site), on one engine
    or over hosts.
    """
    if kill_hosts and kind != DrillKind.SITE_LOSS:
        return f"--kill-hosts applies to site-loss only, not {kind.value}"
    if kill_hosts and not spec.multi_host:
        return (f"--kill-hosts kills the primary site's lab hosts: {spec.scope} runs on this machine's engine "
                "(no hosts:)")
    if not kind.is_site:
        if spec.standby_of is not None:
            return (f"cluster {spec.scope} is a standby site: its drills are site-switchover and site-loss "
                    f"(the others run on the primary site {spec.standby_of.scope})")
        return None
    if spec.standby_of is None:
        return (f"{kind.value} runs on a standby site (`--scope` of the cluster whose spec has standby_of); "
                f"{spec.scope} is not one")
    extra = [o for o, v in (("--to", to), ("--seconds", seconds), ("--host", host)) if v is not None]
    if extra:
        return f"{', '.join(extra)} does not apply to {kind.value} (the drill hits the whole primary site)"
    return None


def rpo_seconds(acked: list[tuple[int, float]], present: set[int], t_fault: float) -> float:
    """Seconds of acknowledged writes a site loss lost: from the last write before the fault that
    the promoted site has, to the last write acknowledged before the fault (0 when none is missing).

    `acked`: (id, acknowledged at) in order. With nothing present before the fault, from the
    first acknowledged write.
    """
    before = [(i, t) for i, t in acked if t <= t_fault]
    missing = [t for i, t in before if i not in present]
    if not missing:
        return 0.0
    kept = [t for i, t in before if i in present and t < min(missing)]
    start = kept[-1] if kept else before[0][1]
    return round(max(missing) - start, 3)
