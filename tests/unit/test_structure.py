"""The house rules, checked: flows only sequence, adapters parse once, no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flows.steps.preflight import forget_preflight, preflight_once
from stack.cluster import ClusterView, Member, MemberRole, back_since, led_by
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
    st = {"state": "streaming", "postmaster_start_time": "2026-11-26 17:00:00.000+00:00"}
    assert back_since(st, 0) and not back_since(st, 4_000_000_000)
    assert not back_since({"state": "starting", "postmaster_start_time": "2026-11-26 17:00:00+00:00"}, 0)
    assert not back_since({"state": "streaming"}, 0)


# docker-py belongs to the Docker adapter (the engine, its ssh transport, the exec transport,
# which engine runs which member). The other modules listed still call it directly and are to move
# behind tasks/docker_engine.py; no module may join them (lazy imports included).
DOCKER_ADAPTER = {"tasks/docker_engine.py", "tasks/docker_ssh.py", "tasks/node_exec.py", "tasks/docker_hosts.py"}
DOCKER_PY_TO_MOVE = {"tasks/images.py", "tasks/docker_lab.py", "tasks/docker_scratch.py", "tasks/control_image.py",
                     "tasks/control_plane.py"}


def test_docker_py_only_in_the_docker_adapter() -> None:
    users = set()
    for pkg in ("cli", "flows", "tasks", "stack"):
        for p in (ROOT / pkg).rglob("*.py"):
            if any(module.split(".")[0] == "docker" for module, _ in _imports(p)):
                users.add(str(p.relative_to(ROOT)))
    assert users - DOCKER_ADAPTER - DOCKER_PY_TO_MOVE == set(), "docker-py outside the Docker adapter"
    assert DOCKER_PY_TO_MOVE <= users, f"moved behind the adapter, take it off the list: {DOCKER_PY_TO_MOVE - users}"
