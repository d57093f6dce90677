"""Client probes through HAProxy: a writer on the R/W port and a reader on the R/O port.

Each runs in its own thread, one attempt every `interval` seconds, bounded by `max_seconds`
so a forgotten probe stops by itself. A write counts as acknowledged only when its commit
returned; an attempt that failed may or may not have committed and is never counted.
"""

from __future__ import annotations

import threading
import time

import psycopg

from stack.drill import ProbeLog
from stack.layout import SUPERUSER
from stack.secrets import Secrets
from stack.spec import ClusterSpec

PROBE_TABLE = "pgha_drill_probe"


def _connect(spec: ClusterSpec, secrets: Secrets, port: int) -> psycopg.Connection:
    # TCP keepalives bound a hang on a dead peer; never statement_timeout on writes: a
    # cancelled wait for synchronous replication reports success for a local-only commit.
    return psycopg.connect(host="127.0.0.1", port=port, user=SUPERUSER, password=secrets.superuser,
                           dbname="postgres", connect_timeout=2, autocommit=True, application_name="pgha-probe",
                           keepalives=1, keepalives_idle=2, keepalives_interval=1, keepalives_count=2)


def ensure_table(spec: ClusterSpec, secrets: Secrets) -> None:
    with _connect(spec, secrets, spec.ports.rw) as conn:
        conn.execute("create table if not exists pgha_drill_probe (run text not null, id bigint not null, "
                     "at timestamptz not null default now(), primary key (run, id))")


def present_ids(spec: ClusterSpec, secrets: Secrets, run: str) -> set[int]:
    with _connect(spec, secrets, spec.ports.rw) as conn:
        rows = conn.execute("select id from pgha_drill_probe where run = %s", (run,)).fetchall()
    return {int(r[0]) for r in rows}


class Probe(threading.Thread):
    def __init__(self, spec: ClusterSpec, secrets: Secrets, run: str, write: bool,
                 interval: float = 0.05, max_seconds: float = 600) -> None:
        super().__init__(name=f"pgha-{'write' if write else 'read'}-probe", daemon=True)
        self.spec, self.secrets, self.run_id, self.write = spec, secrets, run, write
        self.interval, self.max_seconds = interval, max_seconds
        self.log = ProbeLog()
        self._stop_evt = threading.Event()

    def stop(self) -> None:
        self._stop_evt.set()

    def run(self) -> None:
        port = self.spec.ports.rw if self.write else self.spec.ports.ro
        deadline = time.monotonic() + self.max_seconds
        conn: psycopg.Connection | None = None
        next_id = 1
        while not self._stop_evt.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            try:
                if conn is None:
                    conn = _connect(self.spec, self.secrets, port)
                if self.write:
                    conn.execute("insert into pgha_drill_probe (run, id) values (%s, %s)", (self.run_id, next_id))
                    self.log.acked_ids.append(next_id)
                else:
                    row = conn.execute("select pg_is_in_recovery()").fetchone()
                    if not (row and row[0]):
                        raise psycopg.OperationalError("R/O port reached a primary")
                self.log.ok.append(time.monotonic())
            except psycopg.Error as exc:
                self.log.errors.append((time.monotonic(), (str(exc).strip().splitlines() or ["error"])[0][:120]))
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg.Error:
                        pass
                conn = None
            finally:
                if self.write:
                    next_id += 1
            self._stop_evt.wait(max(0.0, self.interval - (time.monotonic() - began)))
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass
