"""The house rules, checked: flows only sequence, adapters parse once, no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flows.steps.preflight import forget_preflight, preflight_once
from stack.cluster import ClusterView, Member, MemberRole, MemberStatus, back_since, led_by
from stack.rolling import NodeFacts, switchover_candidate
from stack.spec import parse_spec
from tasks.patroni import _parse_reply

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_CLIENTS = ("docker", "psycopg", "httpx", "subprocess", "urllib", "requests")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "flows").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_flows_touch_no_system_and_no_private_name(path: Path) -> None:
    for module, names in _imports(path):
        assert module.split(".")[0] not in SYSTEM_CLIENTS, f"{path.name} imports {module}: talk through tasks/"
        assert not [n for n in names if n.startswith("_") and n != "__future__"], f"{path.name}: private {names}"
    text = path.read_text()
    if path.name == "deployments.py":
        # Each deployment entry runs its operation's flow body (`op.fn`) in the deployment's own run.
        text = text.replace("op.fn(", "")
    assert "exec_run" not in text and ".fn(" not in text, f"{path.name} bypasses an adapter or a task wrapper"


def test_no_import_cycle_in_shipped_packages() -> None:
    mods: dict[str, Path] = {}
    for pkg in ("cli", "flows", "tasks", "stack"):
        for p in (ROOT / pkg).rglob("*.py"):
            mods[".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = p
    graph: dict[str, set[str]] = {}
    for m, p in mods.items():
        deps = set()
        for module, names in _imports(p):
            deps |= {f"{module}.{n}" if f"{module}.{n}" in mods else module for n in names or [""]}
        graph[m] = {d for d in deps if d in mods and d != m}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            assert state.get(d) != 1, f"import cycle: {' -> '.join([*trail, m, d])}"
            if d not in state:
                visit(d, [*trail, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


# The floors, lowest first: a module imports only from its own floor or below, lazy imports
# (inside functions) included: stack (pure) < tasks (adapters, retryable tasks) < flows < cli.
FLOORS = {"stack": 0, "tasks": 1, "flows": 2, "cli": 3}


def test_no_module_imports_from_a_floor_above_it() -> None:
    upward = []
    for pkg, floor in FLOORS.items():
        for p in (ROOT / pkg).rglob("*.py"):
            for module, _ in _imports(p):
                top = module.split(".")[0]
                if FLOORS.get(top, -1) > floor:
                    upward.append(f"{p.relative_to(ROOT)} imports {module}")
    assert not upward, "an import runs upward: " + "; ".join(upward)


def test_stack_is_pure() -> None:
    for p in (ROOT / "stack").rglob("*.py"):
        if p.parent.name == "control":  # the control image's build files: they run in its containers
            continue
        for module, _ in _imports(p):
            top = module.split(".")[0]
            assert top not in (*SYSTEM_CLIENTS, "tasks", "flows", "cli"), f"{p.name} imports {module}"


def test_preflight_runs_once_per_process_then_again() -> None:
    calls: list[str] = []

    def check(scope: str) -> str:
        calls.append(scope)
        return f"ok {scope}"

    assert preflight_once(check, "a") == "ok a"  # the CLI's call
    assert preflight_once(check, "a") == "ok a"  # the flow's call reuses it
    assert calls == ["a"]
    assert preflight_once(check, "a") == "ok a"  # a later operation checks again
    assert calls == ["a", "a"]
    forget_preflight(check, "a")
    preflight_once(check, "b")
    assert calls == ["a", "a", "b"]


def test_patroni_reply_parsing() -> None:
    r = _parse_reply('{"role": "primary"}\n200')
    assert r.ok and r.body == {"role": "primary"}
    r = _parse_reply("candidate name does not match with sync_standby\n412")
    assert not r.ok and r.status == 412 and "sync_standby" in r.message()
    r = _parse_reply("\n000")  # curl could not connect
    assert r.status == 0 and not r.ok


def test_switchover_candidate_waits_for_the_sync_standby_in_synchronous_mode() -> None:
    nodes = [NodeFacts("pg-1", "new", is_leader=True, is_sync=False), NodeFacts("pg-2", "new", False, False)]
    assert switchover_candidate(nodes, "new") == "pg-2"
    # Right after a restart Patroni has no sync standby yet: in synchronous mode it refuses pg-2.
    assert switchover_candidate(nodes, "new", synchronous=True) is None
    nodes[1] = NodeFacts("pg-2", "new", False, True)
    assert switchover_candidate(nodes, "new", synchronous=True) == "pg-2"


def test_led_by_needs_the_leader_and_a_whole_cluster() -> None:
    spec = parse_spec({"nodes": 2, "etcd_members": 1}, "unit")
    whole = ClusterView([Member("pg-1", MemberRole.SYNC_STANDBY, "streaming", 2, 0),
                         Member("pg-2", MemberRole.LEADER, "running", 2)])
    assert led_by(whole, spec, "pg-2") and not led_by(whole, spec, "pg-1")
    lagging = ClusterView([Member("pg-1", MemberRole.REPLICA, "starting", None, None),
                           Member("pg-2", MemberRole.LEADER, "running", 2)])
    assert not led_by(lagging, spec, "pg-2")
    assert whole.max_replica_lag() == 0 and lagging.max_replica_lag() is None


def test_back_since() -> None:
    st = MemberStatus(state="streaming", postmaster_start_time="2026-11-26 17:00:00.000+00:00")
    assert back_since(st, 0) and not back_since(st, 4_000_000_000)
    assert not back_since(MemberStatus(state="starting", postmaster_start_time="2026-11-26 17:00:00+00:00"), 0)
    assert not back_since(MemberStatus(state="streaming"), 0)


# docker-py belongs to the Docker adapter, split by job: the engine (containers, networks, volumes),
# reaching it (the client, TLS), files in and out of containers, config pushes, read-only queries
# (logs, ports, the audit's container states), its ssh transport, the exec transport, which engine
# runs which member, images (builds, pulls, copies between engines), the lab's resources and the
# control plane's containers. No other module may import it (lazy imports included).
DOCKER_ADAPTER = {"tasks/docker_engine.py", "tasks/engine_client.py", "tasks/engine_files.py",
                  "tasks/engine_config.py", "tasks/engine_inspect.py", "tasks/docker_ssh.py", "tasks/node_exec.py",
                  "tasks/docker_hosts.py", "tasks/docker_images.py", "tasks/docker_lab_hosts.py",
                  "tasks/docker_control.py"}


def test_docker_py_only_in_the_docker_adapter() -> None:
    users = set()
    for pkg in ("cli", "flows", "tasks", "stack"):
        for p in (ROOT / pkg).rglob("*.py"):
            if any(module.split(".")[0] == "docker" for module, _ in _imports(p)):
                users.add(str(p.relative_to(ROOT)))
    assert users - DOCKER_ADAPTER == set(), "docker-py outside the Docker adapter"


def _module_level_effects(path: Path) -> list[str]:
    """Module-level statements that change state when the module is imported: a call on its own line,
    or an assignment into another object (`x[k] = v`, `x.y = v`). Definitions, imports, plain names and
    the Typer sub-apps a CLI module registers on the shared app are not effects."""
    found = []
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            f = node.value.func
            if isinstance(f, ast.Attribute) and f.attr == "add_typer" and path.parts[-2] == "cli":
                continue
            found.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, (ast.Subscript, ast.Attribute)) for t in targets):
                found.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_no_import_has_side_effects() -> None:
    """Importing a module of cli, flows, tasks or stack changes no shared state (no environment, no other
    module's tables); what a process needs set is set by its entry point (`cli.app.main`)."""
    effects = []
    for pkg in ("cli", "flows", "tasks", "stack"):
        for p in sorted((ROOT / pkg).rglob("*.py")):
            if p.name == "__main__.py" or "control" in p.relative_to(ROOT).parts[1:-1]:
                continue  # an entry point runs on purpose; the control image's files run in its containers
            effects += [f"{p.relative_to(ROOT)} {e}" for e in _module_level_effects(p)]
    assert not effects, "a module changes state on import: " + "; ".join(effects)


def _is_task_decorator(d: ast.expr) -> bool:
    """`@task`, `@task(...)`, `@prefect.task`, `@prefect.task(...)`."""
    target = d.func if isinstance(d, ast.Call) else d
    return (isinstance(target, ast.Name) and target.id == "task") or (
        isinstance(target, ast.Attribute) and target.attr == "task")


def test_prefect_tasks_are_defined_in_tasks_never_in_flows() -> None:
    """Prefect tasks live in tasks/; flows (and flows/steps) only compose them. No flow module
    defines a task, nor imports Prefect's `task` to make one."""
    found = []
    for p in sorted((ROOT / "flows").rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    _is_task_decorator(d) for d in node.decorator_list):
                found.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}")
            elif isinstance(node, ast.ImportFrom) and node.module in ("prefect", "tasks._prefect") and any(
                    a.name == "task" for a in node.names):
                found.append(f"{p.relative_to(ROOT)}:{node.lineno} imports task from {node.module}")
    assert not found, (
        "@task definitions in flows/: " + "; ".join(found)
        + "; define the task in the tasks/ module of the system it acts on, and import it in the flow")


def test_every_import_lazy_ones_included_names_something_that_exists() -> None:
    """A lazy import (inside a function) is checked only when it runs; a name moved by one change and
    still imported by another would fail at that moment in a user's hands. Every `from pgha-module
    import name` in the shipped packages, the tests and the benchmarks must resolve now."""
    import importlib

    missing = []
    for pkg in ("cli", "flows", "tasks", "stack", "tests", "benchmarks"):
        for p in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(p.read_text())):
                if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                        and node.module.split(".")[0] in FLOORS):
                    continue
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if alias.name != "*" and not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            missing.append(f"{p.relative_to(ROOT)}: from {node.module} import {alias.name}")
    assert not missing, "imports of names that do not exist: " + "; ".join(missing)


# Adapters parse what a system says once, into a typed model: a function of tasks/ that hands back
# `dict[str, Any]` (bare, in a list, a tuple or a union) leaks the system's raw shape to its callers.
# These modules still have some, and how many; the list may only shrink: a count that falls must be
# lowered here, a module that reaches none must leave the list, and no other module may gain one.
# (Left: Patroni's dynamic configuration, its raw GETs and a member's /patroni answer, the fencer
# agent's etcd answers and its decision records (it runs alone in its container, on the standard
# library), the journal's entries: open shapes, each operation writing its own fields.)
DICT_RETURNS_IN_TASKS = {
    "tasks/fencer_agent.py": 4,
    "tasks/host/journal.py": 1,
    "tasks/patroni.py": 3,
}


def test_adapters_hand_back_typed_models_and_the_rest_only_shrinks() -> None:
    found = {}
    for p in sorted((ROOT / "tasks").rglob("*.py")):
        n = sum(1 for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None
                and "dict[str, Any]" in ast.unparse(node.returns))
        if n:
            found[str(p.relative_to(ROOT))] = n
    assert found == DICT_RETURNS_IN_TASKS, (
        f"functions of tasks/ returning dict[str, Any]: {found}; return a typed model, and lower the list when one goes")
