"""The audit's rows for the declared roles and databases: in sync with the spec, or drifted."""

from __future__ import annotations

from stack import appdb
from stack.findings import Finding, Level
from stack.spec import ClusterSpec


def check_apps(cat: appdb.Catalog | None, spec: ClusterSpec, passwords: dict[str, str], error: str = "") -> list[Finding]:
    """`apps.drift`: what the next `pgha up` would change (a role or database altered by hand, one gone)."""
    if not spec.roles and not spec.databases:
        return []
    target = f"{len(spec.roles)} roles, {len(spec.databases)} databases"
    if cat is None:
        return [Finding("apps.drift", target, Level.WARN, f"not observed: {error}", "as declared",
                        "the primary did not answer the catalog query")]
    lines = appdb.drift(spec.roles, spec.databases, cat, passwords, audit=spec.audit_logging.enabled)
    if not lines:
        return [Finding("apps.drift", target, Level.OK, "as declared", "as declared")]
    shown = "; ".join(lines[:5]) + (f"; and {len(lines) - 5} more" if len(lines) > 5 else "")
    return [Finding("apps.drift", target, Level.WARN, shown, "as declared",
                    "`pgha up` restores what the spec declares")]
