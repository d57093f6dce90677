"""MkDocs hook: replace `<!-- pgha:generate NAME -->` markers with references built from the code.

The CLI, spec, deployments and audit-check references (and the runbooks) are rendered at build
time from the Typer app, the ClusterSpec's JSON schema, prefect.yaml and the audit's table of
checks, so they cannot drift from the code. Each generator is a `render() -> str` function in a
`gen_*.py` module beside this file; `tests/unit/test_docs_reference.py` and `tests/unit/test_audit_checks.py` call the same functions.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

MARKER = re.compile(r"^<!-- pgha:generate ([a-z_]+) -->$", re.MULTILINE)

# marker name -> module:function
GENERATORS: dict[str, str] = {
    "cli": "gen_cli:render",
    "spec": "gen_spec:render",
    "deployments": "gen_deployments:render",
    "audit_checks": "gen_audit:render_checks",
    "runbooks": "gen_audit:render_runbooks",
}


def generate(name: str) -> str:
    """The markdown for one marker; an unknown name is an error (a strict build fails)."""
    if name not in GENERATORS:
        raise KeyError(f"unknown generated section {name!r}; known: {', '.join(sorted(GENERATORS))}")
    # MkDocs loads this hook by path with its own sys.path: put the checkout (its cli, stack, ...
    # first, also over an editable install of another checkout) and this folder on it here.
    for p in (str(HERE), str(ROOT)):
        if p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)
    module, func = GENERATORS[name].split(":")
    return str(getattr(importlib.import_module(module), func)())


def expand(markdown: str) -> str:
    return MARKER.sub(lambda m: generate(m.group(1)), markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 (MkDocs hook signature)
    return expand(markdown)
