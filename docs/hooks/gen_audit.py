"""Generated reference: the audit checks (one table) and the runbooks (one entry per check).

Both come from the audit's own table of checks, `stack.audit_checks.CHECKS`. A runbook entry's
anchor is the one a non-ok finding's hint names (`runbook: runbooks.md#<anchor>`,
`stack.findings.runbook_ref`); the reference page lives one folder down and links to it.
"""

from __future__ import annotations

from pydantic import BaseModel

from stack.audit_checks import CHECKS, Check
from stack.findings import RUNBOOK_PAGE
from stack.spec import ClusterSpec

# Component -> the title of its group on the runbooks page. The titles' slugs must not equal a
# check's anchor (`replication` is a check): hence "Streaming replication".
GROUPS: dict[str, str] = {
    "containers": "Containers",
    "resources": "Memory",
    "etcd": "etcd",
    "Patroni": "Patroni",
    "replication": "Streaming replication",
    "HAProxy": "HAProxy",
    "PostgreSQL": "PostgreSQL",
    "disk": "Disk",
    "pooler": "Connection pooler",
    "roles and databases": "Roles and databases",
    "fencing": "Fencing",
    "TLS": "Certificates",
    "backup": "Backups",
    "server": "Prefect server",
}


def spec_default(path: str) -> str | None:
    """The default of a spec field given by its dotted path (`audit.lag_warn_s` -> "10"); None for a
    block (`resources`) or a field without a fixed default. KeyError for a path the spec lacks."""
    model: type[BaseModel] = ClusterSpec
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            raise KeyError(f"{path}: the spec has no field {'.'.join(parts[: i + 1])}")
        field = model.model_fields[part]
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if i == len(parts) - 1:
                return None
            model = ann
            continue
        if i != len(parts) - 1:
            raise KeyError(f"{path}: {'.'.join(parts[: i + 1])} is not a block of the spec")
        value = field.get_default(call_default_factory=True)
        if value is None or isinstance(value, (dict, list)):
            return None
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float):
            return f"{value:g}"
        return str(getattr(value, "value", value))
    return None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "—"


def _thresholds(c: Check) -> str:
    out = []
    for path in c.thresholds:
        default = spec_default(path)
        out.append(f"`{path}`" + (f" ({default})" if default is not None else ""))
    return ", ".join(out)


def _target(c: Check) -> str:
    return c.target + (f"; only with {c.only_when}" if c.only_when else "")


def render_checks() -> str:
    """The reference page: one table of every check, each linking its runbook entry."""
    lines = [
        "| check | component | one row for | warn when | critical when | spec fields (default) | runbook |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in CHECKS:
        warn = c.warn or ("never (informational)" if c.informational else "never")
        crit = c.critical or ("never (informational)" if c.informational else "never")
        lines.append("| " + " | ".join(_cell(x) for x in (
            f"`{c.name}`", c.component, _target(c), warn, crit, _thresholds(c),
            f"[{c.anchor}](../{RUNBOOK_PAGE}#{c.anchor})")) + " |")
    return "\n".join(lines) + "\n"


def _entry(c: Check) -> list[str]:
    out = [f"### `{c.name}` {{ #{c.anchor} }}", ""]
    out.append(f"- **Checks:** {c.checks}")
    out.append(f"- **One row for:** {_target(c)}")
    if c.informational:
        out += ["", f"This row is always ok. {c.means}", ""]
        return out
    out.append("- **Warning:** " + (c.warn or "never"))
    out.append("- **Critical:** " + (c.critical or "never"))
    if c.thresholds:
        out.append("- **Spec fields (default):** " + _thresholds(c))
    out += ["", f"**What it means.** {c.means}", "", "**What to do.**", ""]
    out += [f"{i}. {step}" for i, step in enumerate(c.steps, 1)]
    out.append("")
    fixes = ", ".join(f"`{v}`" for v in c.fixes) if c.fixes else "no single verb: follow the steps above"
    out += [f"**Fixed by:** {fixes}.", ""]
    return out


def render_runbooks() -> str:
    """The runbooks page: one entry per check, grouped by component, under the hint's anchor."""
    out: list[str] = []
    for component, title in GROUPS.items():
        group = [c for c in CHECKS if c.component == component]
        if not group:
            continue
        out += [f"## {title}", ""]
        for c in group:
            out += _entry(c)
    missing = sorted({c.component for c in CHECKS} - set(GROUPS))
    if missing:  # a new component without a group title: still rendered, never dropped
        out += ["## Other checks", ""]
        for c in CHECKS:
            if c.component in missing:
                out += _entry(c)
    return "\n".join(out)
