"""The audit's table of checks (stack/audit_checks/) against the code that emits findings.

Every check name a `Finding(...)` in the sources can carry has an entry, every entry is emitted
somewhere, and a non-ok finding's hint names its runbook entry, whose anchor the generated
runbooks page has. The check names are read from the sources (AST), not from a list kept by
hand: a new audit row without a table entry fails here, with what to add where.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import sys
from collections import defaultdict
from itertools import product
from pathlib import Path

import pytest
import typer.main

from stack.audit_checks import BY_NAME, CHECKS
from stack.findings import Finding, Level, runbook_anchor, runbook_ref
from stack.spec import AuditThresholds

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "flows", "tasks", "stack")
sys.path.insert(0, str(ROOT / "docs" / "hooks"))

import gen_audit  # noqa: E402 - docs/hooks is not a package

TABLE = "stack/audit_checks/"


class Unresolved(Exception):
    """A check name the scanner cannot reduce to string literals."""


class Source:
    """The parsed sources: Finding(...) calls with every check name each can carry."""

    def __init__(self, root: Path) -> None:
        self.modules: dict[str, ast.Module] = {}
        self.enclosing: dict[ast.AST, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        for pkg in PACKAGES:
            for path in sorted((root / pkg).rglob("*.py")):
                rel = str(path.relative_to(root))
                tree = ast.parse(path.read_text(), rel)
                self.modules[rel] = tree
                # ast.walk is breadth-first: an inner function's nodes are reassigned to it later.
                for fn in ast.walk(tree):
                    if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                        for node in ast.walk(fn):
                            self.enclosing[node] = fn

    def finding_calls(self) -> list[tuple[str, ast.Call]]:
        out = []
        for rel, tree in self.modules.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and _called_name(node) == "Finding":
                    out.append((rel, node))
        return out

    def values(self, expr: ast.expr | None, at: ast.AST, where: str) -> set[str]:
        """Every string `expr` can be: literals, f-strings over names bound to literals, and names
        bound by a `for` over literal tuples, an assignment, or a parameter of a function whose
        callers pass literals."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return {expr.value}
        if isinstance(expr, ast.JoinedStr):
            parts: list[set[str]] = []
            for v in expr.values:
                if isinstance(v, ast.Constant):
                    parts.append({str(v.value)})
                elif isinstance(v, ast.FormattedValue):
                    parts.append(self.values(v.value, at, where))
            return {"".join(p) for p in product(*parts)}
        if isinstance(expr, ast.IfExp):
            return self.values(expr.body, at, where) | self.values(expr.orelse, at, where)
        if isinstance(expr, ast.Name):
            return self._name(expr.id, at, where)
        raise Unresolved(f"{where}: {ast.unparse(expr) if expr else '(no check argument)'}")

    def _name(self, name: str, at: ast.AST, where: str) -> set[str]:
        fn = self.enclosing.get(at)
        if fn is None:
            raise Unresolved(f"{where}: {name} outside a function")
        found: set[str] = set()
        for node in ast.walk(fn):
            if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple | ast.List):
                if isinstance(node.target, ast.Name) and node.target.id == name:
                    for elt in node.iter.elts:
                        found |= self.values(elt, node, where)
                elif isinstance(node.target, ast.Tuple):
                    idx = [i for i, t in enumerate(node.target.elts) if isinstance(t, ast.Name) and t.id == name]
                    for elt in node.iter.elts:
                        if idx and isinstance(elt, ast.Tuple | ast.List):
                            found |= self.values(elt.elts[idx[0]], node, where)
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                found |= self.values(node.value, node, where)
        params = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
        if name in params:
            pos = params.index(name)
            for rel, tree in self.modules.items():
                for call in ast.walk(tree):
                    if not (isinstance(call, ast.Call) and _called_name(call) == fn.name):
                        continue
                    arg = next((k.value for k in call.keywords if k.arg == name), None)
                    if arg is None and pos < len(call.args):
                        arg = call.args[pos]
                    if arg is not None:
                        found |= self.values(arg, call, f"{rel}:{call.lineno}")
        if not found:
            raise Unresolved(f"{where}: `{name}`")
        return found


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _levels(expr: ast.expr | None) -> set[str]:
    """The Level members a status expression names literally (`Level.WARN`, `A.Level.OK if x else ...`)."""
    if expr is None:
        return set()
    return {n.attr for n in ast.walk(expr) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name | ast.Attribute)
            and (getattr(n.value, "id", None) == "Level" or getattr(n.value, "attr", None) == "Level")}


def _arg(call: ast.Call, pos: int, name: str) -> ast.expr | None:
    kw = next((k.value for k in call.keywords if k.arg == name), None)
    return kw if kw is not None else (call.args[pos] if pos < len(call.args) else None)


@pytest.fixture(scope="module")
def emitted() -> dict[str, list[tuple[str, set[str]]]]:
    """check name -> [(file:line, Level members the call names literally)] over the sources."""
    src = Source(ROOT)
    out: dict[str, list[tuple[str, set[str]]]] = defaultdict(list)
    unresolved = []
    for rel, call in src.finding_calls():
        where = f"{rel}:{call.lineno}"
        try:
            names = src.values(_arg(call, 0, "check"), call, where)
        except Unresolved as exc:
            unresolved.append(str(exc))
            continue
        for n in names:
            out[n].append((where, _levels(_arg(call, 2, "status"))))
    assert not unresolved, (
        "cannot tell which check names these Finding(...) calls emit; pass the check name as a string "
        "literal, an f-string over names bound by a `for` over literal tuples, or a parameter whose "
        "callers pass literals:\n  " + "\n  ".join(unresolved))
    return dict(out)


def test_the_scan_finds_the_known_checks(emitted: dict[str, list[tuple[str, set[str]]]]) -> None:
    # The scanner itself: literals, the f-string over ("liveness", "readiness"), the loop over
    # tuples in check_postgres and the helper's parameter in audit_backup are all expanded.
    for name in ("etcd.member", "patroni.liveness", "patroni.readiness", "postgres.oldest_transaction",
                 "postgres.idle_in_transaction", "backup.full_age", "backup.diff_age", "container.list"):
        assert name in emitted
    assert not any("{" in n for n in emitted)


def test_every_emitted_check_has_an_entry(emitted: dict[str, list[tuple[str, set[str]]]]) -> None:
    missing = sorted(set(emitted) - set(BY_NAME))
    assert not missing, "\n".join(
        f"the audit emits check {n!r} ({', '.join(w for w, _ in emitted[n])}) but {TABLE} has no entry for it: "
        f"add Check(name={n!r}, component=..., target=..., checks=..., warn=..., critical=..., thresholds=(...), "
        f"means=..., steps=(...), fixes=(...)) to CHECKS there. It becomes a row of "
        f"docs/reference/audit-checks.md and the runbook entry docs/runbooks.md#{runbook_anchor(n)}, which the "
        f"finding's hint names." for n in missing)


def test_every_entry_is_emitted(emitted: dict[str, list[tuple[str, set[str]]]]) -> None:
    stale = sorted(set(BY_NAME) - set(emitted))
    assert not stale, (f"{TABLE} has entries for checks no Finding(...) emits: {', '.join(stale)}; "
                       "remove them, or fix the name to the one the code emits")


def test_entries_say_when_the_code_warns_and_is_critical(emitted: dict[str, list[tuple[str, set[str]]]]) -> None:
    wrong = []
    for name, sites in emitted.items():
        c = BY_NAME.get(name)
        if c is None:
            continue
        for where, levels in sites:
            if "WARN" in levels and not c.warn:
                wrong.append(f"{where} emits {name} as warn, but its entry's `warn` is empty (never)")
            if "CRITICAL" in levels and not c.critical:
                wrong.append(f"{where} emits {name} as critical, but its entry's `critical` is empty (never)")
    assert not wrong, f"fix the entries in {TABLE}:\n  " + "\n  ".join(wrong)


def test_names_and_anchors_are_unique() -> None:
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))
    anchors = [c.anchor for c in CHECKS]
    assert len(anchors) == len(set(anchors)), "two checks map to one runbook anchor"
    # A group title's slug must not take a check's anchor on the runbooks page.
    slugs = {re.sub(r"[^a-z0-9]+", "-", t.lower()).strip("-") for t in gen_audit.GROUPS.values()}
    assert not slugs & set(anchors)


def test_every_component_has_a_group_on_the_runbooks_page() -> None:
    missing = sorted({c.component for c in CHECKS} - set(gen_audit.GROUPS))
    assert not missing, f"add a title for component(s) {missing} to GROUPS in docs/hooks/gen_audit.py"


def test_thresholds_are_spec_fields() -> None:
    for c in CHECKS:
        for path in c.thresholds:
            gen_audit.spec_default(path)  # KeyError for a field the spec does not have
    assert gen_audit.spec_default("audit.lag_warn_s") == "10"
    assert gen_audit.spec_default("tls.expiry_warn_days") == "30"
    assert gen_audit.spec_default("resources") is None


def test_every_audit_threshold_is_named_by_a_check() -> None:
    named = {p for c in CHECKS for p in c.thresholds}
    missing = sorted(f"audit.{f}" for f in AuditThresholds.model_fields if f"audit.{f}" not in named)
    assert not missing, f"spec thresholds no check names: {missing}; add them to the `thresholds` of their entry in {TABLE}"


def test_fixes_are_pgha_verbs() -> None:
    group = typer.main.get_command(__import__("cli.app", fromlist=["app"]).app)

    def exists(words: list[str]) -> bool:
        cmd = group
        for w in words:
            sub = getattr(cmd, "commands", {}).get(w)
            if sub is None:
                return cmd is not group and not hasattr(cmd, "commands")  # an argument of a leaf command
            cmd = sub
        return True

    bad = [f"{c.name}: {v}" for c in CHECKS for v in c.fixes if not exists(v.split()[1:])]
    assert not bad, f"not pgha verbs: {bad}"


def test_a_non_ok_finding_names_its_runbook_entry() -> None:
    anchors = set(re.findall(r"\{ #([a-z0-9-]+) \}", gen_audit.render_runbooks()))
    for c in CHECKS:
        assert c.anchor in anchors, f"{c.name}: no runbook entry #{c.anchor} on the rendered page"
        for level in (Level.WARN, Level.CRITICAL):
            bare = Finding(c.name, "t", level, "o")
            assert bare.hint == runbook_ref(c.name) == f"runbook: runbooks.md#{c.anchor}"
            hinted = Finding(c.name, "t", level, "o", "", "`pgha status`")
            assert hinted.hint == f"`pgha status` (runbook: runbooks.md#{c.anchor})"
            assert dataclasses.replace(hinted, observed="p").hint == hinted.hint  # appended once
    ok = Finding("patroni.member", "pg-1", Level.OK, "leader running", "running/streaming", "")
    assert ok.hint == ""


def test_the_reference_links_every_runbook_entry() -> None:
    table = gen_audit.render_checks()
    for c in CHECKS:
        assert f"(../runbooks.md#{c.anchor})" in table
        assert f"| `{c.name}` |" in table
