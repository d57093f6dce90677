"""Rolling changes over several hosts (pure parts, no Docker): the spec a scale leads to and where
its new node lands, the major upgrade refused with `hosts:`, and HAProxy's switchover routing on
every host's HAProxy at the candidate's host address (fake HAProxy containers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import cli.core as cli_app
from cli.app import app
from stack.errors import HaproxyError, UsageError
from stack.major import hosts_refusal
from stack.scale import new_node_hosts, scaled_spec
from stack.spec import ClusterSpec, parse_spec
from tasks import haproxy
from tasks.node_exec import ExecResult

HOSTS = [{"name": f"h{i}", "docker": f"unix:///run/lab/h{i}.sock", "address": f"10.0.0.1{i}"} for i in (1, 2, 3)]
BASE: dict[str, Any] = {"scope": "ops", "nodes": 2, "etcd_members": 3, "ports": {"rw": 5000, "ro": 5001, "stats": 7000},
                        "backup": {"enabled": False}, "fencing": False, "hosts": HOSTS}


def spec(**change: Any) -> ClusterSpec:
    return parse_spec({**BASE, **change})


# ---- scale: the validated spec and where the new node lands ----


def test_scale_up_lands_the_new_node_on_the_next_host() -> None:
    two = spec()
    three = scaled_spec(two, 3)
    assert three.nodes == 3 and three.host_of("pg-3") == "h3" and three.address("pg-3") == "10.0.0.13"
    assert new_node_hosts(two, three) == {"pg-3": "h3"}
    assert new_node_hosts(three, scaled_spec(three, 2)) == {}


@pytest.mark.parametrize(("change", "nodes", "expect"), [
    ({}, 4, "cannot scale ops to 4 nodes: pg-1 and pg-4 are both on host h1: with hosts, each host runs at most one "
            "Patroni node (members use host networking and the same ports)"),
    ({}, 1, "cannot scale ops to 1 node: unsafe placement: losing host h1 loses every Patroni node (1 of 1); "
            "add hosts or set allow_unsafe_placement: true"),
    ({"placement": {"patroni": {"pg-1": "h1", "pg-2": "h2"}}}, 3,
     "cannot scale ops to 3 nodes: placement.patroni must name exactly pg-1, pg-2, pg-3 (missing pg-3)"),
    ({}, 0, "nodes must be between 1 and 9, not 0"),
])
def test_scale_to_a_count_the_hosts_cannot_hold_is_one_line(change: dict[str, Any], nodes: int, expect: str) -> None:
    with pytest.raises(UsageError) as exc:
        scaled_spec(spec(**change), nodes)
    assert str(exc.value) == expect


def test_scale_without_hosts_is_unchanged() -> None:
    one_engine = parse_spec({"scope": "solo", "nodes": 3})
    assert scaled_spec(one_engine, 5).nodes == 5
    assert new_node_hosts(one_engine, scaled_spec(one_engine, 5)) == {"pg-4": "", "pg-5": ""}


# ---- the major upgrade over hosts: refused before anything ----


def test_major_upgrade_refuses_hosts_in_one_line() -> None:
    assert hosts_refusal(parse_spec({"scope": "solo"})) is None
    why = hosts_refusal(spec())
    assert why is not None and "\n" not in why
    assert why.startswith("the major upgrade is not built for a cluster over several hosts (hosts:)")
    assert "5432, 8008, 2379 and 2380" in why


class _Api:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def wait_ready(self) -> None:
        self.calls.append("ready")

    def stop(self) -> None:
        self.calls.append("stop")


@pytest.mark.parametrize(("args", "line"), [
    (["upgrade", "--major", "17"], "pgha: error: the major upgrade is not built for a cluster over several hosts"),
    (["upgrade", "--major", "17", "--rollback"], "pgha: error: the major upgrade is not built"),
    (["scale", "--nodes", "4"], "pgha: error: cannot scale ops to 4 nodes: pg-1 and pg-4 are both on host h1"),
])
def test_cli_refuses_over_hosts_before_anything_starts(args: list[str], line: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    api = _Api()
    monkeypatch.setattr(cli_app, "API", api)
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path / "state"))
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump(BASE))
    res = CliRunner().invoke(app, [*args, "--spec", str(f)])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith(line), res.output
    assert "start" not in api.calls  # no Prefect API started, no engine asked
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


# ---- switchover routing: every host's HAProxy, the candidate at its host's address ----


class _FakeEngine:
    def __init__(self, name: str) -> None:
        self.name = name


class _FakeHaproxy:
    """A HAProxy container: the route script answers `code` (3: the candidate does not lead yet)."""

    def __init__(self, host: str, codes: list[int]) -> None:
        self.engine = _FakeEngine(host)
        self.codes = codes
        self.ran: list[list[str]] = []

    def run(self, cmd: list[str], user: str | None = None, timeout: int = 10, retries_if_lost: int = 0) -> ExecResult:
        self.ran.append(cmd)
        code = self.codes.pop(0) if self.codes else 0
        return ExecResult(code=code, out="", err="refused" if code not in (0, 3) else "")


def _route(monkeypatch: pytest.MonkeyPatch, s: ClusterSpec, proxies: list[_FakeHaproxy],
           timeout: float = 30) -> float:
    monkeypatch.setattr(haproxy, "_haproxies", lambda _spec: proxies)
    monkeypatch.setattr(haproxy, "backend_states",
                        lambda _spec: {"primary": {m: "UP" for m in s.node_names()}, "replicas": {}})
    return haproxy.route_primary(s, "pg-2", ["pg-1", "pg-3"], timeout)


def test_route_primary_polls_the_candidate_at_its_host_address_on_every_host(monkeypatch: pytest.MonkeyPatch) -> None:
    s = spec(nodes=3)
    proxies = [_FakeHaproxy(h, [3, 0]) for h in ("h1", "h2", "h3")]
    _route(monkeypatch, s, proxies)
    for p in proxies:
        assert len(p.ran) == 2  # one slice waiting for the lock, one that routed
        # $1 of the script: 10.0.0.12 (pg-2's host), never the container name no other host resolves
        assert p.ran[-1][4] == "10.0.0.12"
        assert p.ran[-1][6] == ("set server primary/pg-2 health up;set server primary/pg-1 health down;"
                                "set server primary/pg-3 health down")


def test_route_primary_on_one_engine_still_uses_the_container_name(monkeypatch: pytest.MonkeyPatch) -> None:
    s = parse_spec({"scope": "solo", "nodes": 3})
    proxy = _FakeHaproxy("local", [0])
    _route(monkeypatch, s, [proxy])
    assert proxy.ran[0][4] == "solo-pg-2"


def test_route_primary_fails_when_one_host_cannot_route(monkeypatch: pytest.MonkeyPatch) -> None:
    s = spec(nodes=3)
    proxies = [_FakeHaproxy("h1", [0]), _FakeHaproxy("h2", [1]), _FakeHaproxy("h3", [0])]
    with pytest.raises(HaproxyError, match="routing pg-2 through HAProxy's runtime API failed"):
        _route(monkeypatch, s, proxies)


def test_backend_states_each_asks_every_hosts_haproxy(monkeypatch: pytest.MonkeyPatch) -> None:
    csv_text = ("# pxname,svname,status,\nprimary,FRONTEND,OPEN,\nprimary,pg-1,UP,\nprimary,pg-2,DOWN,\n"
                "replicas,pg-2,UP,\nreplicas,BACKEND,UP,\n")

    class _Stats(_FakeHaproxy):
        def run(self, cmd: list[str], user: str | None = None, timeout: int = 10,
                retries_if_lost: int = 0) -> ExecResult:
            self.ran.append(cmd)
            return ExecResult(code=self.codes[0], out=csv_text if self.codes[0] == 0 else "", err="")

    proxies = [_Stats("h1", [0]), _Stats("h2", [7])]
    monkeypatch.setattr(haproxy, "_haproxies", lambda _spec: proxies)
    got = haproxy.backend_states_each(spec())
    assert got == {"h1": {"primary": {"pg-1": "UP", "pg-2": "DOWN"}, "replicas": {"pg-2": "UP"}}, "h2": {}}
    assert proxies[0].ran[0][-1] == "http://localhost:7000/;csv"


def test_haproxy_reload_sends_the_signal_again_when_the_engine_cut_its_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy host's engine may cut an exec's output (no exit mark): the reload asks again instead of failing."""
    from tasks.node_exec import NodeExec

    ran: list[str] = []
    monkeypatch.setattr(haproxy, "sync_config", lambda _spec, _member: [])
    monkeypatch.setattr(haproxy, "engines", lambda _spec: type("E", (), {"placed": lambda self, m: [_FakeEngine("h1")]})())

    def once(self: NodeExec, cmd: list[str], user: str | None, timeout: int) -> ExecResult:
        ran.append(cmd[0])
        if cmd[0] == "kill" and ran.count("kill") == 1:
            return ExecResult(254, "", "(the engine cut this command's output short)", lost=True)
        return ExecResult(0, "", "")

    monkeypatch.setattr(NodeExec, "_run_once", once)
    haproxy.reload(spec())
    assert ran == ["haproxy", "install", "kill", "kill"]
