"""A lab (`pgha lab`) shared by several clusters, each on lab hosts of its own: what the benchmarks'
`--lab` runs stand on (two sites and a baseline cluster, a delayed replica's cluster).

Import after `_env.private_env` (the lab's record goes to the benchmark's private state directory).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from stack import lab
from tasks import docker_lab


def lab_clusters(name: str, port_base: int, sizes: list[tuple[str, int]]) -> tuple[lab.LabStatus, list[dict[str, Any]],
                                                                                   float]:
    """A fresh lab `name` (a lab of that name removed first) of as many hosts as `sizes` asks for in
    all, and for each (scope, n) the spec data of a cluster on the next n of its hosts (as `pgha lab
    up` writes it for a whole lab: one node per host, etcd on an odd number of them, fewer than 3
    hosts accepted as an unsafe placement); and the seconds `lab up` took."""
    docker_lab.down(name)
    t = time.monotonic()
    st = docker_lab.up(name, sum(n for _, n in sizes), port_base, sizes[0][0])
    took = time.monotonic() - t
    out: list[dict[str, Any]] = []
    first = 0
    for scope, n in sizes:
        out.append(lab.spec_data(scope, st.hosts[first:first + n]))
        first += n
    return st, out, took


class OutOfTime(Exception):  # noqa: N818 - what the operator reads
    """The benchmark ran past its --max-minutes."""


@contextmanager
def bounded(minutes: float) -> Iterator[None]:
    """Raise OutOfTime in the main thread once `minutes` have passed (the caller's `finally` cleans up)."""
    def expire(_sig: int, _frame: FrameType | None) -> None:
        raise OutOfTime(f"still running after --max-minutes {minutes:g}: stopped")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, minutes * 60)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
