"""What a deployment can be given: `scope` and its operation's options, never a spec.

Every entrypoint prefect.yaml deploys is a flow of `flows/deployments.py`; its parameter schema
(what Prefect renders as the run form and what the server validates a run against) names no
spec, image, host, path, socket or engine; closed (`sealed_schema`), it refuses any other
parameter; the deployment names (flow/deployment) the alerts, the docs and the tests use stay.
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import validate

from flows import deployments as entries
from stack.deployed import ENTRY_MODULE, sealed_schema
from stack.spec import ClusterSpec

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]

FULL_NAMES = {  # what the alerts, the docs, the CI how-to and the integration tests call them
    "bootstrap/default", "teardown/default-teardown", "drill/weekly-switchover", "health-audit/default",
    "certs-renew/daily", "backup/weekly-full-backup", "backup/nightly-diff-backup", "dump/nightly-dump",
    "verify-restore/verify-restore", "upgrade/rolling-upgrade", "config-set/config-set", "scale/scale",
    "etcd-replace/etcd-replace", "switchover/switchover", "restart/rolling-restart", "reinit/reinit-replica",
    "pause/pause", "resume/resume", "restore/pitr-into-new-cluster",
}
# A parameter whose name says it chooses one of these could make a Prefect credential host root.
FORBIDDEN = ("spec", "image", "host", "path", "socket", "engine", "file", "dir", "address", "url", "network",
             "volume_name", "mount", "command")
ALLOWED = {
    ("drill", "host"): "one of the stored spec's hosts by name, for the host drills; any other is refused",
    ("drill", "kill_hosts"): "a flag: site-loss kills the stored primary site's own lab hosts, no host is named",
}
# The operation's parameters an entry does not pass on, and why.
NOT_PASSED = {
    "spec": "the stored spec of `scope`",
    "confirm": "teardown: the scope typed in the paused run's form confirms",
    "image": "upgrade: the pending upgrade's target, else pgha's security build of the spec's image",
}


def entry(dep: dict[str, Any]) -> Flow[..., Any]:
    flow: Flow[..., Any] = getattr(entries, dep["entrypoint"].partition(":")[2])
    return flow


def schema(dep: dict[str, Any]) -> dict[str, Any]:
    return parameter_schema(entry(dep)).model_dump_for_openapi()


def property_names(node: Any) -> list[str]:
    """Every property name anywhere in a JSON schema (nested models and definitions included)."""
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                out += list(value)
            out += property_names(value)
    elif isinstance(node, list):
        for item in node:
            out += property_names(item)
    return out


@pytest.mark.parametrize("dep", DEPLOYMENTS, ids=lambda d: d["name"])
def test_every_deployment_enters_through_a_scope_flow(dep: dict[str, Any]) -> None:
    path, _, func = dep["entrypoint"].partition(":")
    assert path == ENTRY_MODULE, dep["entrypoint"]
    params = list(inspect.signature(getattr(entries, func)).parameters)
    assert params[0] == "scope", params


def test_the_default_scope_is_the_spec_s() -> None:
    assert entries.DEFAULT_SCOPE == ClusterSpec().scope


def test_the_deployment_names_stay() -> None:
    loaded = load_flow_from_entrypoint(DEPLOYMENTS[0]["entrypoint"])  # as `prefect deploy` loads one
    assert loaded.name == entry(DEPLOYMENTS[0]).name and loaded.parameters == entry(DEPLOYMENTS[0]).parameters
    assert {f"{entry(d).name}/{d['name']}" for d in DEPLOYMENTS} == FULL_NAMES


@pytest.mark.parametrize("dep", DEPLOYMENTS, ids=lambda d: d["name"])
def test_no_parameter_chooses_what_the_cluster_is_made_of(dep: dict[str, Any]) -> None:
    s = schema(dep)
    flow_name = entry(dep).name
    names = property_names(s)
    bad = [n for n in names if any(word in n.lower() for word in FORBIDDEN) and (flow_name, n) not in ALLOWED]
    assert bad == [], f"{flow_name}/{dep['name']} takes {bad}"
    assert "ClusterSpec" not in str(s)
    assert s["properties"]["scope"]["pattern"] and s["properties"]["scope"]["default"] == "hy-home-db"


@pytest.mark.parametrize("dep", DEPLOYMENTS, ids=lambda d: d["name"])
def test_the_closed_schema_refuses_a_spec_and_a_bad_scope(dep: dict[str, Any]) -> None:
    closed = sealed_schema(schema(dep))
    assert validate({"scope": "pgha-prod", **(dep.get("parameters") or {})}, closed) == []
    assert validate({"scope": "pgha-prod", "spec": {"scope": "pgha-prod", "image": "attacker/root"}}, closed)
    assert validate({"scope": "../../etc"}, closed)  # a scope names a state directory: the pattern holds
    assert validate({"scope": "pgha-prod", "spec": {}}, schema(dep)) == []  # why it is closed: open, it passes


@pytest.mark.parametrize("dep", DEPLOYMENTS, ids=lambda d: d["name"])
def test_an_entry_passes_on_every_option_of_its_operation(dep: dict[str, Any]) -> None:
    # Each entry calls its operation's flow body with the same option names: none dropped.
    func = dep["entrypoint"].partition(":")[2]
    flow = getattr(entries, func)
    module, name = re.findall(r"from (flows\.\w+) import (\w+) as op\n", inspect.getsource(flow.fn))[0]
    op = getattr(importlib.import_module(module), name)
    assert flow.name == op.name
    mine = set(inspect.signature(flow.fn).parameters) - {"scope"}
    theirs = set(inspect.signature(op.fn).parameters) - set(NOT_PASSED)
    if op.name == "health-audit":
        theirs -= {"scope"}  # the entry's scope is that parameter's role
    assert mine == theirs, (op.name, mine ^ theirs)


def test_the_entries_import_no_operation_until_they_run() -> None:
    code = ("import sys, flows.deployments; print(sorted(m for m in sys.modules if m.startswith('flows.') "
            "and m not in ('flows.deployments',)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
