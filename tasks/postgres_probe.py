"""Client probes through HAProxy: a writer on the R/W port and a reader on the R/O port.

Each runs in its own thread, one attempt every `interval` seconds, bounded by `max_seconds`
so a forgotten probe stops by itself. A write counts as acknowledged only when its commit
returned; an attempt that failed may or may not have committed and is never counted.
Connections come from `tasks.postgres.connect` (the one way pgha connects to PostgreSQL).
A site drill's writer has a second site (`other`): after a failed attempt it connects to the
other site's R/W port, so it writes wherever the primary site is, as a client of two sites would.
"""

from __future__ import annotations

import threading
import time

import psycopg

from stack.drill import ProbeLog
from stack.errors import PostgresError
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from tasks.postgres import PROBE_TABLE, connect


class Probe(threading.Thread):
    def __init__(self, spec: ClusterSpec, secrets: Secrets, run: str, write: bool,
                 interval: float = 0.05, max_seconds: float = 600, pooled: bool = False,
                 other: ClusterSpec | None = None) -> None:
        super().__init__(name=f"pgha-{'write' if write else 'read'}-probe", daemon=True)
        self.spec, self.secrets, self.run_id, self.write = spec, secrets, run, write
        self.sites = [spec] if other is None else [spec, other]  # tried in turn after a failure
        self._turn = 0
        self.pooled = pooled  # through the pooler's port instead of HAProxy's R/W port
        self.interval, self.max_seconds = interval, max_seconds
        self.log = ProbeLog()
        self._stop_evt = threading.Event()

    def stop(self) -> None:
        self._stop_evt.set()

    def _connect(self) -> psycopg.Connection:
        # Never statement_timeout on writes: a cancelled wait for synchronous replication
        # reports success for a local-only commit.
        return connect(self.sites[self._turn % len(self.sites)], self.secrets, read_only=not self.write, timeout=2,
                       application_name="pgha-probe", keepalives=True, pooled=self.pooled)

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn: psycopg.Connection | None = None
        next_id = 1
        while not self._stop_evt.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            try:
                if conn is None:
                    conn = self._connect()
                if self.write:
                    conn.execute(f"insert into {PROBE_TABLE} (run, id) values (%s, %s)",  # noqa: S608
                                 (self.run_id, next_id))
                    self.log.acked_ids.append(next_id)
                else:
                    row = conn.execute("select pg_is_in_recovery()").fetchone()
                    if not (row and row[0]):
                        raise psycopg.OperationalError("R/O port reached a primary")
                self.log.ok.append(time.monotonic())
                self.log.stalls.append(self.log.ok[-1] - began)
            except (psycopg.Error, PostgresError) as exc:
                self.log.errors.append((time.monotonic(), (str(exc).strip().splitlines() or ["error"])[0][:120]))
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg.Error:
                        pass
                conn = None
                self._turn += 1  # a second site: its R/W port next
            finally:
                if self.write:
                    next_id += 1
            self._stop_evt.wait(max(0.0, self.interval - (time.monotonic() - began)))
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass
