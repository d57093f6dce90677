"""One check of the health audit and its runbook entry (the table's row type)."""

from __future__ import annotations

from dataclasses import dataclass

from stack.findings import runbook_anchor


@dataclass(frozen=True)
class Check:
    """One check of the health audit and its runbook entry."""

    name: str  # the finding's `check` column, e.g. "patroni.member"
    component: str  # etcd, Patroni, replication, HAProxy, ...
    target: str  # what a row's target is (one row per ...)
    checks: str  # what it looks at
    warn: str = ""  # when it is a warning ("" = never)
    critical: str = ""  # when it is critical ("" = never)
    thresholds: tuple[str, ...] = ()  # spec fields that set the thresholds or switch the check on
    only_when: str = ""  # the row appears only when ... ("" = always)
    means: str = ""  # what it means when it fires
    steps: tuple[str, ...] = ()  # what to do, in order
    fixes: tuple[str, ...] = ()  # the pgha verbs that fix it (each starts with "pgha ")

    def __post_init__(self) -> None:
        # A one-step tuple written without its comma is a str: caught at import, not in the docs.
        for f in ("thresholds", "steps", "fixes"):
            value = getattr(self, f)
            if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"{self.name}: {f} must be a tuple of str, not {value!r}")
        if bad := [v for v in self.fixes if not v.startswith("pgha ")]:
            raise ValueError(f"{self.name}: fixes are pgha verbs ('pgha up'), not {bad}")
        if (self.warn or self.critical) and not self.steps:
            raise ValueError(f"{self.name}: a check that can fire needs steps (what to do)")

    @property
    def anchor(self) -> str:
        """The runbook entry's anchor, the one a non-ok finding's hint names."""
        return runbook_anchor(self.name)

    @property
    def informational(self) -> bool:
        """A row that is always ok: it reports a figure, it never fires."""
        return not self.warn and not self.critical
