"""The cluster's health as one status, and "wait until whole".

Status reads the snapshot's status parts (`tasks.observe`) and judges them (`stack.status.judge`);
it never raises for a sick cluster. The CLI's `status` calls it directly (no flow, no Prefect API).
"""

from __future__ import annotations

import time

from stack.results import ClusterStatus
from stack.snapshot import ClusterSnapshot
from stack.spec import ClusterSpec
from stack.status import judge
from stack.wait import wait_for
from tasks import postgres
from tasks._prefect import task
from tasks.host.generations import deployed
from tasks.observe import STATUS_PARTS, observe


def cluster_status(spec: ClusterSpec) -> ClusterStatus:
    """What Docker, etcd, Patroni and HAProxy say, as one status; never raises for a sick cluster.

    Read-only and quick: the CLI's `status` calls it directly (no flow, no Prefect API). The
    snapshot's status parts are asked at once (`tasks.observe`), so status answers in the time
    of the slowest system, not the sum; the judgement is `stack.status.judge`. A new session is
    opened through the R/W port as a client would: a cluster whose members all run but that no
    client can enter (a preload library that fails in every session) is not healthy.
    """
    spec = deployed(spec)
    return status_of(spec, observe(spec, STATUS_PARTS, deep=False))


def status_of(spec: ClusterSpec, snap: ClusterSnapshot) -> ClusterStatus:
    """The status `snap` shows (any snapshot holding `STATUS_PARTS`: the audit's in `pgha report`)."""
    endpoints = {"rw": postgres.dsn(spec), "ro": postgres.dsn(spec, read_only=True)}
    if spec.runs_pooler:
        endpoints["pool"] = postgres.dsn(spec, pooled=True)
    return judge(spec, snap, endpoints)


@task(name="wait-healthy")
def wait_healthy(spec: ClusterSpec, timeout: float, stable_s: float = 0.0) -> ClusterStatus:
    """Wait until the status is healthy (for `stable_s` seconds in a row when given).

    Right after a restart /cluster can still show a member's stale entry for a moment, so the
    drills ask for healthy twice, a second apart.
    """
    streak: list[float] = []

    def stable(st: ClusterStatus) -> bool:
        if not st.healthy:
            streak.clear()
            return False
        streak.append(time.monotonic())
        return streak[-1] - streak[0] >= stable_s

    return wait_for("the cluster to be healthy" if not stable_s else "the cluster to be whole again",
                    lambda: cluster_status(spec), stable, timeout=timeout, interval=0.5,
                    describe=lambda s: "; ".join(s.problems[:3]))
