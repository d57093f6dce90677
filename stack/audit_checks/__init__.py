"""The health audit's table of checks: every check the audit can report, and its runbook.

One entry per check name a `Finding` can carry (`stack.audit`, `stack.audit_backup`,
`stack.pooler`, `flows/audit.py`): which component it looks at, when it warns and when it is
critical (and which spec fields set those thresholds), what it means when it fires, what to do
and which pgha verb fixes it. The documentation renders it twice (docs/hooks/gen_audit.py): the
reference table of checks and the runbooks page, one entry per check under the anchor that a
non-ok finding's hint names (`stack.findings.runbook_ref`). `tests/unit/test_audit_checks.py`
fails when the code emits a check that has no entry here, or an entry names no emitted check.

Pure data: text in Markdown (inline code in backticks), thresholds quoted from the code's
constants so they cannot drift. One module per system the checks look at; this one lists
them all in the audit's row order.
"""

from __future__ import annotations

from stack.audit_checks import (
    backups,
    certificates,
    containers,
    disk,
    etcd,
    fencing,
    haproxy,
    patroni,
    pgbouncer,
    postgres,
    replication,
    roles,
    server,
)
from stack.audit_checks.check import Check

__all__ = ["BY_NAME", "CHECKS", "Check", "entry"]

# Every check in the audit's row order, which is also the order the reference and the runbooks list them in.
CHECKS: tuple[Check, ...] = (
    *containers.CHECKS,
    *etcd.CHECKS,
    *patroni.CHECKS,
    *replication.CHECKS,
    *haproxy.CHECKS,
    *postgres.CHECKS,
    *disk.CHECKS,
    *pgbouncer.CHECKS,
    *roles.CHECKS,
    *fencing.CHECKS,
    *certificates.CHECKS,
    *backups.CHECKS,
    *server.CHECKS,
)

BY_NAME: dict[str, Check] = {c.name: c for c in CHECKS}


def entry(check: str) -> Check | None:
    """The table's entry for a finding's check name (None: a check without an entry, a bug)."""
    return BY_NAME.get(check)
