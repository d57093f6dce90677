"""Client traffic around a rolling change: the drill's write/read probes plus HAProxy's R/O pool.

Used by the integration tests and `benchmarks/upgrade.py` to measure what clients see while
a change runs in another process: the longest write gap, the longest read gap, acknowledged
writes lost, and the fewest replicas HAProxy had UP in its R/O pool at any sample.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from stack.drill import longest_gap, lost_writes
from stack.errors import PghaError
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import haproxy
from tasks.postgres import ensure_probe_table, probe_ids
from tasks.postgres_probe import Probe


@dataclass
class Traffic:
    write_gap_s: float = 0.0
    read_gap_s: float = 0.0
    writes_acked: int = 0
    write_errors: int = 0
    read_errors: int = 0
    lost: list[int] = field(default_factory=list)
    min_ro_up: int = -1  # fewest replicas UP in HAProxy's R/O pool at any sample
    ro_samples: int = 0
    seconds: float = 0.0


class _PoolWatch(threading.Thread):
    """Samples HAProxy's stats every `interval` seconds: how many R/O servers are UP."""

    def __init__(self, spec: ClusterSpec, interval: float = 0.2) -> None:
        super().__init__(name="pgha-ro-pool-watch", daemon=True)
        self.spec, self.interval = spec, interval
        self.counts: list[int] = []
        self._stop_evt = threading.Event()

    def stop(self) -> None:
        self._stop_evt.set()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            try:
                rows = haproxy.backend_states(self.spec)["replicas"]
                self.counts.append(sum(1 for s in rows.values() if s.startswith("UP")))
            except PghaError:
                self.counts.append(0)  # stats unreachable: count it as nothing routable
            self._stop_evt.wait(self.interval)


@contextmanager
def measured(spec: ClusterSpec, secrets: Secrets, interval: float = 0.05,
             max_seconds: float = 1800) -> Iterator[Traffic]:
    """Run probes for the duration of the block; the yielded Traffic is filled in at its end."""
    ensure_probe_table(spec, secrets)
    run_id = "up-" + uuid.uuid4().hex[:10]
    writer = Probe(spec, secrets, run_id, write=True, interval=interval, max_seconds=max_seconds)
    reader = Probe(spec, secrets, run_id, write=False, interval=interval, max_seconds=max_seconds)
    pool = _PoolWatch(spec)
    result = Traffic()
    for t in (writer, reader, pool):
        t.start()
    wait_for("the probes to warm up", lambda: (len(writer.log.ok), len(reader.log.ok)),
             lambda n: n[0] >= 10 and (n[1] >= 10 or spec.nodes == 1), timeout=30, interval=0.1)
    start = time.monotonic()
    try:
        yield result
    finally:
        end = time.monotonic()
        for t in (writer, reader, pool):
            t.stop()
        for t in (writer, reader, pool):
            t.join(10)
        result.seconds = round(end - start, 1)
        result.write_gap_s = round(longest_gap(writer.log.ok, start, end), 3)
        result.read_gap_s = round(longest_gap(reader.log.ok, start, end), 3)
        result.writes_acked = len(writer.log.acked_ids)
        result.write_errors = len(writer.log.errors)
        result.read_errors = len(reader.log.errors)
        result.lost = lost_writes(writer.log.acked_ids, probe_ids(spec, secrets, run_id))
        result.min_ro_up = min(pool.counts) if pool.counts else -1
        result.ro_samples = len(pool.counts)
