"""The audit's checks of PostgreSQL (`postgres.*`): connecting, connections, old and idle transactions, slots, XID age, checksums."""

from __future__ import annotations

from stack.audit_checks.check import Check
from stack.major import FORWARD_SUB, REVERSE_SUB

CHECKS: tuple[Check, ...] = (
    Check(
        name="postgres.connect",
        component="PostgreSQL",
        target="the R/W port",
        checks="that the audit connects to the primary through the R/W port",
        critical="no connection",
        thresholds=("ports.rw",),
        means="Clients cannot connect either: no leader, HAProxy down, every connection slot taken, "
              "or the stored password no longer matches.",
        steps=("The `patroni.leader`, `haproxy.rw_port` and `postgres.connections` rows narrow it down; "
               "the observed error says which.",
               "`pgha status`; `pgha psql -c 'select 1'` tries the same path."),
        fixes=("pgha up",),
    ),
    Check(
        name="postgres.connections",
        component="PostgreSQL",
        target="the primary",
        checks="client connections against `max_connections`",
        warn="≥ `audit.connections_warn_pct` of `max_connections`",
        critical="≥ `audit.connections_critical_pct`",
        thresholds=("audit.connections_warn_pct", "audit.connections_critical_pct"),
        means="New connections will soon be refused (`too many clients`).",
        steps=("Who holds them: `pgha psql -c \"select usename, application_name, state, count(*) from "
               "pg_stat_activity group by 1, 2, 3 order by 4 desc\"`.",
               "Put clients behind the pooler (on by default without `hosts`; clients on `pgha dsn --pool`).",
               "Or raise the limit: `pgha config set max_connections=200` (a rolling restart)."),
        fixes=("pgha config set", "pgha up"),
    ),
    Check(
        name="postgres.oldest_transaction",
        component="PostgreSQL",
        target="the primary",
        checks="age of the oldest open transaction of a client",
        warn="≥ `audit.transaction_warn_s`",
        critical="≥ `audit.transaction_critical_s`",
        thresholds=("audit.transaction_warn_s", "audit.transaction_critical_s"),
        means="A long transaction holds back vacuum (tables and indexes bloat) and its locks may block "
              "others; a switchover has to wait for it or cut it.",
        steps=("Find it: `pgha psql -c \"select pid, usename, application_name, now() - xact_start as age, "
               "state, query from pg_stat_activity where xact_start is not null order by xact_start "
               "limit 5\"`.",
               "Ask its owner; if it must go: `pgha psql -c 'select pg_terminate_backend(PID)'`."),
    ),
    Check(
        name="postgres.idle_in_transaction",
        component="PostgreSQL",
        target="the primary",
        checks="how long the oldest session has been `idle in transaction`",
        warn="≥ `audit.idle_in_transaction_warn_s`",
        critical="≥ `audit.idle_in_transaction_critical_s`",
        thresholds=("audit.idle_in_transaction_warn_s", "audit.idle_in_transaction_critical_s"),
        means="A client opened a transaction and went quiet: it holds its locks and holds back vacuum.",
        steps=("Find it: `pgha psql -c \"select pid, usename, application_name, now() - state_change as idle "
               "from pg_stat_activity where state like 'idle in transaction%' order by state_change\"`.",
               "`pgha psql -c 'select pg_terminate_backend(PID)'`; fix the client (a missing commit).",
               "To have PostgreSQL do it: `pgha config set idle_in_transaction_session_timeout=10min`."),
        fixes=("pgha config set",),
    ),
    Check(
        name="postgres.inactive_slots",
        component="PostgreSQL",
        target="the primary",
        checks="that no inactive replication slot exists (the row shown when there is none; each "
               "inactive slot gets a `postgres.inactive_slot` row)",
        means="Informational: no inactive slot retains WAL.",
    ),
    Check(
        name="postgres.inactive_slot",
        component="PostgreSQL",
        target="each inactive replication slot",
        checks="WAL retained on the primary by a slot no consumer is attached to",
        warn="≥ `audit.slot_retained_warn_bytes`",
        critical="≥ `audit.slot_retained_critical_bytes`",
        thresholds=("audit.slot_retained_warn_bytes", "audit.slot_retained_critical_bytes"),
        means="The primary keeps every WAL segment since the slot's position: `pg_wal` grows until the "
              "data volume is full (see `disk.data_volume`), and then the primary stops.",
        steps=("A slot named after a node (`pg_N`) belongs to a replica that is down: start it "
               "(`pgha up`), or remove the node for good (`pgha scale --nodes N`); Patroni drops the slot "
               "of a member that left.",
               f"`{FORWARD_SUB}` / `{REVERSE_SUB}`: a major upgrade in progress; finish it "
               "(`pgha upgrade --major --finish --yes`) or roll it back (`pgha upgrade --major --rollback`).",
               "Any other slot whose consumer is gone: `pgha psql -c \"select "
               "pg_drop_replication_slot('NAME')\"`."),
        fixes=("pgha up", "pgha scale", "pgha upgrade"),
    ),
    Check(
        name="postgres.xid_age",
        component="PostgreSQL",
        target="the primary",
        checks="the oldest database's transaction-ID age (`age(datfrozenxid)`; wraparound at about 2.1 billion)",
        warn="≥ `audit.xid_age_warn`",
        critical="≥ `audit.xid_age_critical`",
        thresholds=("audit.xid_age_warn", "audit.xid_age_critical"),
        means="Vacuum does not freeze old rows fast enough. Near wraparound PostgreSQL refuses new "
              "transactions to protect the data.",
        steps=("Long transactions and inactive slots hold vacuum back: look at `postgres.oldest_transaction`, "
               "`postgres.idle_in_transaction` and `postgres.inactive_slot` first.",
               "Find the database: `pgha psql -c \"select datname, age(datfrozenxid) from pg_database "
               "order by 2 desc\"`.",
               "Freeze it: `pgha psql -d DBNAME -c 'VACUUM (FREEZE, VERBOSE)'`."),
    ),
    Check(
        name="postgres.data_checksums",
        component="PostgreSQL",
        target="the primary",
        checks="`data_checksums` of the cluster",
        warn="off",
        means="Silent corruption of data pages goes unnoticed. Clusters pgha creates have checksums "
              "(initdb `--data-checksums`); this one was created otherwise.",
        steps=("Checksums can be turned on only offline (`pg_checksums --enable` on a stopped data "
               "directory, each node in turn); pgha has no verb for that, and a restored copy keeps "
               "the setting.",
               "The next major upgrade (`pgha upgrade --major`) copies the data logically into a new "
               "cluster that pgha initialises with checksums: after it, the row is ok."),
        fixes=("pgha upgrade",),
    ),
)
