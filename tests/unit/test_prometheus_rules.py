"""The shipped Prometheus alert rules: valid (`promtool check rules`), and each alert fires on the
series that should fire it and stays quiet on a healthy cluster (`promtool test rules`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from stack import metrics as M
from stack.fencing import Counters

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deployments" / "prometheus"


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: `make prometheus` (Debian's prometheus package) installs it"
    return subprocess.run([exe, *args], cwd=RULES, input=stdin, capture_output=True, text=True, timeout=60,
                          check=False)


def test_promtool_checks_the_rules() -> None:
    r = promtool("check", "rules", "pgha-rules.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_tests_the_rules() -> None:
    r = promtool("test", "rules", "pgha-rules.test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_is_tested_and_reads_only_metrics_pgha_serves() -> None:
    rules = yaml.safe_load((RULES / "pgha-rules.yml").read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((RULES / "pgha-rules.test.yml").read_text())["tests"]
    tested = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t.get("exp_alerts")}
    names = {r["alert"] for r in rules}
    assert names == tested, f"alerts without a firing test: {sorted(names - tested)}"
    rendered = M.render(M.Snapshot("x", 0, 1, (M.MemberSample("pg-1", True, "leader", "running", 1, 0, 0.0, 1.0),),
                                   audit=M.audit_sample(0, [("c", "t", "ok")], 0, 0, {"f": Counters(events=1, by_outcome={"fenced": 0})})), 0)
    served = {ln.split()[2] for ln in rendered.splitlines() if ln.startswith("# TYPE ")} | {"up"}
    for r in rules:
        used = {w for w in _words(r["expr"]) if w.startswith("pgha_") or w == "up"}
        assert used <= served, f"{r['alert']} reads {sorted(used - served)}, which the exporter does not serve"
        assert r["labels"]["severity"] in ("info", "warning", "critical") and r["annotations"]["summary"]


def _words(expr: str) -> set[str]:
    return set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
