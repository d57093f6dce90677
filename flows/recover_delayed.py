"""recover-from-delayed: bring a dropped table back from a delayed replica into the primary.

Replay on the delayed replica is paused first, so the mistake (a `DROP TABLE`, a `DELETE`
without `WHERE` followed by a drop) that waits in its WAL never replays while the table is
dumped; then `pg_dump -t` there, `pg_restore` into the primary in one transaction, and replay
resumes. Patroni (PostgreSQL >= 14) resumes a paused replay at its next HA loop unless the
cluster is in maintenance mode, so maintenance mode is on for those seconds (and off again,
unless the operator had it on before). Refused before anything changes: no delayed replica,
an unknown `--from`, a table that still exists on the primary, a table the delayed replica no
longer has.
"""

from __future__ import annotations

import time

from prefect import flow

from flows.steps import preflight_once
from flows.steps.cluster import require_healthy
from flows.steps.ops import current, mutating_flow, note
from stack.delayed import check_database, choose_source, parse_table, restore_problem
from stack.errors import StateError, UsageError
from stack.results import RecoverDelayedResult
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import patroni, pgdump, postgres
from tasks.host.lock import WaitSeconds


def preflight(spec: ClusterSpec, table: str, database: str, source: str | None) -> tuple[str, str]:
    """Refusals before anything changes (one line); (the delayed replica, the primary)."""
    ref = parse_table(table)
    check_database(database)
    member = choose_source(spec, source)
    view = require_healthy(spec, "recovering a table")
    lead = view.leader()
    assert lead is not None  # a healthy cluster has exactly one
    if postgres.table_exists(spec, lead.name, database, ref.qualified):
        delayed = spec.delay_of(member)
        raise UsageError(restore_problem(True, True, ref, member, delayed.delay if delayed else "?") or "")
    return member, lead.name


def _set_maintenance(spec: ClusterSpec, on: bool) -> None:
    patroni.set_paused(spec, on)
    wait_for(f"Patroni to report maintenance mode {'on' if on else 'off'}", lambda: patroni.cluster_view(spec).paused,
             lambda p: p == on, timeout=spec.timing.loop_wait * 3 + 10, interval=0.3)


@flow(name="recover-from-delayed",
      description="Bring a dropped table back from a delayed replica: replay paused, pg_dump -t there, "
                  "pg_restore into the primary, replay resumed.")
@mutating_flow("recover-from-delayed")
def recover_from_delayed(spec: ClusterSpec = ClusterSpec(), table: str = "public.t",  # noqa: B008
                         database: str = "postgres", source: str | None = None,
                         wait_seconds: WaitSeconds = 0) -> RecoverDelayedResult:
    member, primary = preflight_once(preflight, spec, table, database, source)
    ref = parse_table(table)
    delayed = spec.delay_of(member)
    assert delayed is not None  # choose_source returns a delayed node
    was_paused = patroni.cluster_view(spec).paused
    if not was_paused:
        _set_maintenance(spec, True)
        note("maintenance mode on (Patroni would resume a paused replay)")
    paused_at = time.monotonic()
    dump = ""
    try:
        state = postgres.replay_pause(spec, member)
        note(f"replay {state} on {member} (delay {delayed.delay})")
        on_delayed = postgres.table_exists(spec, member, database, ref.qualified)
        if why := restore_problem(False, on_delayed, ref, member, delayed.delay):
            raise StateError(why)
        dump = pgdump.dump_table(spec, member, database, ref.qualified, f"{ref.qualified}-{int(time.time())}.dump")
        note(f"dumped {ref.qualified} on {member}")
        pgdump.copy_dump(spec, member, primary, dump)
        pgdump.restore_table(spec, primary, database, dump)
        rows = postgres.row_count(spec, primary, database, ref.qualified)
        note(f"restored {ref.qualified} into {primary}: {rows} rows")
    finally:
        # Resumed whatever happened: a replica left paused stops following (the audit's delayed.within says so).
        postgres.replay_resume(spec, member)
        paused_s = round(time.monotonic() - paused_at, 1)
        if not was_paused:
            _set_maintenance(spec, False)
        if dump:
            for m in (member, primary):
                pgdump.remove_dump(spec, m, dump)
        note(f"replay resumed on {member} after {paused_s}s" + ("" if was_paused else "; maintenance mode off"))
    return RecoverDelayedResult(scope=spec.scope, table=ref.qualified, database=database, source=member,
                                primary=primary, rows=rows, replay_paused_s=paused_s, maintenance=not was_paused,
                                events=current().events, elapsed_s=current().elapsed())
