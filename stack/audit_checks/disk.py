"""The audit's checks of disk (`disk.*`): the data volume and the WAL."""

from __future__ import annotations

from stack.audit_checks.check import Check

CHECKS: tuple[Check, ...] = (
    Check(
        name="disk.data_volume",
        component="disk",
        target="each running Patroni node",
        checks="use of the node's data volume",
        warn="≥ `audit.disk_warn_pct` used",
        critical="≥ `audit.disk_critical_pct`",
        thresholds=("audit.disk_warn_pct", "audit.disk_critical_pct"),
        means="A full data volume stops PostgreSQL on that node (a primary that cannot write WAL shuts "
              "down).",
        steps=("What grows: WAL held by an inactive slot (`postgres.inactive_slot`) or by failed archiving "
               "(`backup.archiving`), table bloat, or the data itself.",
               "Size per database: `pgha psql -c \"select datname, pg_size_pretty(pg_database_size(datname)) "
               "from pg_database\"`.",
               "Free space on the Docker host's volume storage, or move the data to a larger one."),
    ),
    Check(
        name="disk.wal",
        component="disk",
        target="each running Patroni node",
        checks="the size of `pg_wal` on the node's data volume (`du`), against what checkpoints keep: "
               "`max_wal_size` + `wal_keep_size` as the spec sets them (PostgreSQL's 1 GB `max_wal_size` "
               "unless `postgres_parameters` changes it), and the volume's free space",
        warn="≥ `audit.wal_warn_ratio` × that size, or the volume has less free space than that size",
        critical="≥ `audit.wal_critical_ratio` × that size",
        thresholds=("audit.wal_warn_ratio", "audit.wal_critical_ratio", "postgres_parameters"),
        means="PostgreSQL keeps WAL it would normally recycle: an inactive replication slot holds it, "
              "archiving fails (every segment waits for `archive-push`), or checkpoints cannot finish. "
              "`pg_wal` grows until the data volume is full and PostgreSQL stops on that node.",
        steps=("Look at the same audit's `postgres.inactive_slot` and `backup.archiving` rows: they name "
               "the usual cause, and their runbooks fix it.",
               "On a replica, WAL waits for replay: its `replication.lag_bytes` row.",
               "The node's log names a checkpoint that does not finish: `pgha logs pg-N`.",
               "A volume with less free space than `max_wal_size`: free space on the Docker host, or set a "
               "smaller `max_wal_size` in `postgres_parameters`."),
        fixes=("pgha backup", "pgha config"),
    ),
)
