"""Recovering a table from a delayed replica: what to recover, from where, and why not (pure).

`pgha recover-from-delayed --table SCHEMA.TABLE` pauses replay on a delayed replica (spec
`delayed:`, `stack.render.node_tags`), dumps the table there as it was before the mistake
replayed, restores it into the primary and resumes replay (`flows/recover_delayed.py`). The
refusals live here so they are one line, before anything changes, and tested without Docker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stack.errors import UsageError
from stack.spec import ClusterSpec

# Unquoted PostgreSQL identifiers only: they reach pg_dump's -t pattern and a psql statement, where a
# quote, a dot or a wildcard would change which objects are meant.
IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DATABASE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class TableRef:
    schema: str
    table: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


def parse_table(text: str) -> TableRef:
    """`schema.table` (or `table`, in public) of plain lowercase identifiers; UsageError otherwise."""
    parts = text.strip().split(".")
    if len(parts) == 1:
        parts = ["public", parts[0]]
    if len(parts) != 2 or not all(IDENT_RE.match(p) for p in parts):
        raise UsageError(f"--table {text!r} is not SCHEMA.TABLE of plain lowercase identifiers "
                         "(letters, digits, _; e.g. public.orders)")
    return TableRef(parts[0], parts[1])


def check_database(name: str) -> str:
    if not DATABASE_RE.match(name):
        raise UsageError(f"--db {name!r} is not a database name (letters, digits, _ and -)")
    return name


def choose_source(spec: ClusterSpec, wanted: str | None) -> str:
    """The delayed replica to recover from: `--from`, or the spec's only (first) delayed node."""
    names = spec.delayed_names()
    if not names:
        raise UsageError(f"cluster {spec.scope} has no delayed replica (spec `delayed:`); there is nothing "
                         "to recover from")
    if wanted is None:
        return names[0]
    if wanted not in names:
        raise UsageError(f"--from {wanted} is not a delayed replica of {spec.scope} (delayed: {', '.join(names)})")
    return wanted


def restore_problem(on_primary: bool, on_delayed: bool, ref: TableRef, source: str, delay: str) -> str | None:
    """Why the table cannot be brought back (None: go ahead)."""
    if on_primary:
        return (f"table {ref.qualified} still exists on the primary; recover-from-delayed only brings back a "
                f"table that is gone: rename it first (ALTER TABLE {ref.qualified} RENAME TO ...) and run again")
    if not on_delayed:
        return (f"table {ref.qualified} is not on {source} either: it never existed there, or the mistake is "
                f"older than its delay ({delay}) and has replayed; restore from a backup instead (pgha restore)")
    return None
