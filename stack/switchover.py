"""Which member a planned switchover hands the leadership to, or why it must not run (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from stack.cluster import ClusterView
from stack.errors import StateError, UsageError
from stack.spec import ClusterSpec


@dataclass(frozen=True)
class SwitchoverPlan:
    leader: str
    candidate: str

    def describe(self) -> str:
        return f"switchover {self.leader} -> {self.candidate}"


def plan_switchover(view: ClusterView, spec: ClusterSpec, to: str | None) -> SwitchoverPlan:
    """The leader and the candidate; UsageError for a bad `--to`, StateError for a cluster that cannot.

    The default candidate is the synchronous standby (in synchronous mode Patroni promotes
    nothing else), else the streaming replica with the least lag. A candidate lagging more
    than `patroni.maximum_lag_on_failover` is refused here rather than by Patroni half-way.
    """
    lead = view.leader()
    if lead is None:
        raise StateError(f"cluster {spec.scope} has no single leader; nothing to switch over from")
    if to is not None and to not in spec.node_names():
        raise UsageError(f"--to {to} is not a member of cluster {spec.scope} "
                         f"(members: {', '.join(spec.node_names())})")
    if to == lead.name:
        raise UsageError(f"--to {to} already leads cluster {spec.scope}")
    if to is not None and (delayed := spec.delay_of(to)) is not None:
        raise UsageError(f"--to {to} is a delayed replica (replays {delayed.delay} late) and never a switchover "
                         "or failover candidate; choose another node")
    max_lag = spec.timing.maximum_lag_on_failover
    if to is not None:
        m = view.member(to)
        if m is None or not m.streaming:
            state = "not registered" if m is None else m.state
            raise StateError(f"--to {to} is not a streaming replica ({state}); refusing the switchover")
        if m.lag is None or m.lag > max_lag:
            raise StateError(f"--to {to} lags {m.lag if m.lag is not None else 'an unknown number of'} bytes "
                             f"(more than maximum_lag_on_failover {max_lag}); refusing the switchover")
        if spec.timing.synchronous_mode and not m.is_sync:
            raise StateError(f"--to {to} is not the synchronous standby; in synchronous mode Patroni "
                             "promotes only that one")
        return SwitchoverPlan(lead.name, to)
    ready = [m for m in view.replicas() if m.streaming and m.lag is not None and m.lag <= max_lag
             and spec.delay_of(m.name) is None]
    if spec.timing.synchronous_mode:
        ready = [m for m in ready if m.is_sync]
    if not ready:
        raise StateError(f"cluster {spec.scope} has no streaming replica fit to take over; refusing the switchover")
    best = min(ready, key=lambda m: (not m.is_sync, m.lag or 0, m.name))
    return SwitchoverPlan(lead.name, best.name)


def catch_up_window(view: ClusterView, spec: ClusterSpec, to: str | None) -> float:
    """Seconds worth waiting for a lagging candidate before refusing (0: refusing now is right).

    Patroni publishes a replica's replay position once per HA loop, so right after a burst of
    writes (a bulk load, `pgbench -i`) a healthy streaming replica shows a large lag for up to
    `loop_wait` seconds. A candidate that streams but lags, or whose lag is not known yet, gets two
    loops and a few seconds to catch up; a cluster with no streaming replica is refused at once.
    """
    names = [to] if to is not None else [m.name for m in view.replicas() if spec.delay_of(m.name) is None]
    members = [m for n in names if (m := view.member(n)) is not None]
    if not any(m.streaming or m.state == "running" for m in members):
        return 0.0
    return 2.0 * spec.timing.loop_wait + 5.0
