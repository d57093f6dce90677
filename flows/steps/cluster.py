"""The cluster as a whole: a refusal of an operation on a sick cluster, the spec kept.

Its status and "wait until whole" are `tasks.cluster_health`'s, "switch over and wait" is
`tasks.switchover`'s.
"""

from __future__ import annotations

from contextlib import suppress

import yaml

from stack.cluster import ClusterView
from stack.errors import WaitTimeout
from stack.results import ClusterStatus
from stack.spec import ClusterSpec, as_stored
from stack.status import SESSION_PROBLEM
from stack.wait import wait_for
from tasks import patroni
from tasks.cluster_health import cluster_status
from tasks.host.state import cluster_dir, write_private


def require_healthy(spec: ClusterSpec, doing: str, settle_s: float = 0.0,
                    sessions_optional: bool = False) -> ClusterView:
    """Refuse `doing` on a cluster that is not healthy (StateError, one line); its Patroni view.

    `settle_s`: a cluster that becomes healthy within that many seconds is accepted (a drill
    on a busy machine: one HAProxy check of 500 ms timing out twice marks the primary down for
    a second, and a single look would refuse a healthy cluster). `sessions_optional`: a cluster
    healthy but for new sessions not opening is accepted (what `config reset` repairs).
    """
    from stack.errors import StateError

    seen: list[ClusterStatus] = []

    def look() -> ClusterStatus:
        st = cluster_status(spec)
        if sessions_optional:
            st.problems = [p for p in st.problems if not p.startswith(SESSION_PROBLEM)]
            st.healthy = not st.problems
        seen.append(st)
        return st

    with suppress(WaitTimeout):
        wait_for(f"the cluster to be healthy before {doing}", look, lambda s: s.healthy, timeout=settle_s,
                 interval=0.5)
    st = seen[-1] if seen else look()
    if not st.healthy:
        raise StateError(f"cluster {spec.scope} is not healthy, refusing {doing}: {st.problems[0]} "
                         "(see `pgha status`)")
    return patroni.cluster_view(spec)


def store_spec(spec: ClusterSpec) -> None:
    """Keep the spec the cluster now runs as the stored one (`--scope` finds it)."""
    stored = as_stored(spec)  # with hosts, a pooler on by default is stored as on (`stack.spec.as_stored`)
    write_private(cluster_dir(spec.scope) / "spec.yaml", yaml.safe_dump(stored.model_dump(mode="json"), sort_keys=False))
