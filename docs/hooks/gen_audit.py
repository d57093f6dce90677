"""Generated reference: the audit checks and their runbooks (filled in by the runbook work)."""


def render_checks() -> str:
    return "_(generated audit checks go here)_\n"


def render_runbooks() -> str:
    return "_(generated runbooks go here)_\n"
