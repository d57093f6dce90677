"""The audit's checks of the Prefect server (`server.database`): its database's size."""

from __future__ import annotations

from stack.audit_checks.check import Check

CHECKS: tuple[Check, ...] = (
    Check(
        name="server.database",
        component="server",
        target="the Prefect server of this machine",
        checks="the size of the Prefect server's SQLite database with its `-wal` file "
               "(`$PREFECT_HOME/prefect.db` unless `PREFECT_SERVER_DATABASE_CONNECTION_URL` says otherwise), "
               "read on the machine the audit runs on, and its filesystem's free space; a database this "
               "machine cannot read (a server elsewhere, or one on PostgreSQL) is an ok row that says so",
        warn="≥ `audit.server_db_warn_mb` MiB, or its filesystem has less free space than the database",
        critical="≥ `audit.server_db_critical_mb` MiB",
        thresholds=("audit.server_db_warn_mb", "audit.server_db_critical_mb"),
        means="The server keeps more run history than its retention should allow, or its disk is nearly "
              "full. A server whose disk is full stops scheduling, and with it every audit, backup and "
              "alert.",
        steps=("`pgha server status` shows how many days of flow runs the server keeps; "
               "`PGHA_HISTORY_RETENTION_DAYS` sets it (restart the server to apply).",
               "SQLite reuses the space of deleted runs but does not give it back to the filesystem: "
               "after lowering the retention the file stops growing rather than shrinks.",
               "Free space on the filesystem of `$PREFECT_HOME`."),
        fixes=("pgha server stop", "pgha server start"),
    ),
)
