"""The audit's rows: a finding's level, the row itself with its runbook reference, and grading.

Every check (`stack.audit`, `stack.audit_backup`, `stack.pooler`, ...) reports `Finding`s; a row that
is not ok names its runbook entry (`stack.audit_checks`, rendered into docs/runbooks.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    CRITICAL = "critical"


_RANK = {Level.OK: 0, Level.WARN: 1, Level.CRITICAL: 2}


RUNBOOK_PAGE = "runbooks.md"  # the runbooks page of the documentation site (docs/runbooks.md)


def runbook_anchor(check: str) -> str:
    """The anchor of a check's runbook entry: `patroni.pending_restart` -> `patroni-pending-restart`."""
    return check.replace(".", "-").replace("_", "-")


def runbook_ref(check: str) -> str:
    """How a hint names its runbook entry: `runbook: runbooks.md#patroni-member`."""
    return f"runbook: {RUNBOOK_PAGE}#{runbook_anchor(check)}"


@dataclass(frozen=True)
class Finding:
    """One row of the audit table.

    A row that is not ok has its runbook entry appended to its hint, here, for every check at
    once: the entries are `stack.audit_checks.CHECKS`, rendered into docs/runbooks.md.
    """

    check: str
    target: str
    status: Level
    observed: str
    threshold: str = ""
    hint: str = ""

    def __post_init__(self) -> None:
        if self.status == Level.OK:
            return
        ref = runbook_ref(self.check)
        if ref not in self.hint:  # a row rebuilt from another (dataclasses.replace) keeps its one
            object.__setattr__(self, "hint", f"{self.hint} ({ref})" if self.hint else ref)

    def to_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    def line(self) -> str:
        return f"{self.check} {self.target}: {self.observed}" + (f" (threshold {self.threshold})" if self.threshold else "")


def grade(value: float, warn: float, critical: float) -> Level:
    """Higher is worse: critical at or above `critical`, warn at or above `warn`."""
    if value >= critical:
        return Level.CRITICAL
    if value >= warn:
        return Level.WARN
    return Level.OK


def worst(findings: list[Finding]) -> Level:
    return max((f.status for f in findings), key=_RANK.__getitem__, default=Level.OK)
