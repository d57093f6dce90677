"""The audit's checks of the pooler, PgBouncer (`pooler.*`): reachable, paused, waiting clients, client and server connections."""

from __future__ import annotations

from stack.audit_checks.check import Check
from stack.pooler import ADMIN_DB, WAIT_CRITICAL_S, WAIT_WARN_S

CHECKS: tuple[Check, ...] = (
    Check(
        name="pooler.reachable",
        component="pooler",
        target="the pooler",
        checks="that PgBouncer's admin console answers on `ports.pool`",
        critical="it does not answer",
        thresholds=("pooler.enabled", "ports.pool"),
        only_when="the pooler runs (`pooler.enabled`; on by default without `hosts`)",
        means="Clients of the pooler cannot connect (the R/W and R/O ports still work).",
        steps=("`docker logs --since 30m <scope>-pooler`.",
               "`pgha up` recreates it."),
        fixes=("pgha up",),
    ),
    Check(
        name="pooler.paused",
        component="pooler",
        target="the pooler",
        checks="that PgBouncer is not left paused",
        critical="paused",
        only_when="the pooler runs (`pooler.enabled`; on by default without `hosts`)",
        means="A switchover pauses the pooler and resumes it; one killed half-way left it paused: "
              "its clients wait and never get an answer.",
        steps=(f"`pgha psql --pool -d {ADMIN_DB} -c RESUME` (the admin console; psql on this machine).",),
        fixes=("pgha psql",),
    ),
    Check(
        name="pooler.waiting",
        component="pooler",
        target="the pooler",
        checks="clients waiting for a server connection, and the oldest one's wait",
        warn=f"clients wait and the oldest has waited ≥ {WAIT_WARN_S:g} s",
        critical=f"≥ {WAIT_CRITICAL_S:g} s",
        thresholds=("pooler.default_pool_size",),
        only_when="the pooler runs (`pooler.enabled`; on by default without `hosts`)",
        means="The pool is too small for the load, or transactions hold their server connections too long.",
        steps=("Long transactions: the `postgres.oldest_transaction` and `postgres.idle_in_transaction` rows.",
               "Raise `pooler.default_pool_size` in the spec and run `pgha up` (mind `max_connections`)."),
        fixes=("pgha up",),
    ),
    Check(
        name="pooler.client_connections",
        component="pooler",
        target="the pooler",
        checks="client connections (active and waiting) against `pooler.max_client_conn`",
        warn="≥ `audit.connections_warn_pct` of `pooler.max_client_conn`",
        critical="≥ `audit.connections_critical_pct`",
        thresholds=("audit.connections_warn_pct", "audit.connections_critical_pct", "pooler.max_client_conn"),
        only_when="the pooler runs (`pooler.enabled`; on by default without `hosts`)",
        means="The pooler will soon refuse new clients.",
        steps=("Raise `pooler.max_client_conn` in the spec and run `pgha up`; or find the client that "
               "opens connections without closing them.",),
        fixes=("pgha up",),
    ),
    Check(
        name="pooler.server_connections",
        component="pooler",
        target="the pooler",
        checks="PgBouncer's server connections to PostgreSQL",
        only_when="the pooler runs (`pooler.enabled`; on by default without `hosts`)",
        means="Informational: how many server connections the pool holds "
              "(`pooler.default_pool_size` per database and user).",
    ),
)
