"""Fencing over several hosts (pure): which hosts get a watcher, its configuration and container."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack import fencing as F
from stack import lab, topology
from stack.audit import check_fencers
from stack.findings import Level
from stack.spec import ClusterSpec, parse_spec
from tasks import fencer_agent

HOSTS = [{"name": f"h{i}", "docker": f"ssh://ops@h{i}", "address": f"10.0.0.1{i}"} for i in (1, 2, 3)]
BASE: dict[str, Any] = {"scope": "many", "ports": {"rw": 5000, "ro": 5001, "stats": 7000},
                        "backup": {"enabled": False}}


def spec(**change: Any) -> ClusterSpec:
    return parse_spec({**BASE, "hosts": HOSTS, **change})


def test_fencing_is_on_by_default_with_hosts_one_watcher_per_nodes_host() -> None:
    s = spec()
    assert s.fencing
    assert s.fencer_hosts() == {"fencer-h1": "h1", "fencer-h2": "h2", "fencer-h3": "h3"}
    assert [m for m, r in s.expected_members() if r == "fencer"] == ["fencer-h1", "fencer-h2", "fencer-h3"]
    assert [s.host_of(m) for m in s.fencer_members()] == ["h1", "h2", "h3"]


def test_a_host_without_a_patroni_node_gets_no_watcher() -> None:
    s = spec(nodes=2, placement={"patroni": {"pg-1": "h3", "pg-2": "h1"}})
    assert s.fencer_members() == ["fencer-h1", "fencer-h3"]  # host order, not node order
    assert s.host_of("fencer-h3") == "h3"
    assert s.host_of("haproxy") == "h1"  # other members keep their host


def test_fencing_off_and_the_single_engine() -> None:
    assert spec(fencing=False).fencer_members() == [] and spec(fencing=False).fencer_hosts() == {}
    assert not [r for _, r in spec(fencing=False).expected_members() if r == "fencer"]
    one = ClusterSpec(scope="lab")
    assert one.fencer_members() == ["fencer"] and one.fencer_hosts() == {}
    assert ClusterSpec(scope="lab", fencing=False).fencer_members() == []


def test_fencer_config_over_hosts_reaches_etcd_at_the_hosts_addresses_over_tls() -> None:
    cfg = topology.fencer_config(spec())
    assert cfg.etcd_urls == ["https://10.0.0.11:2379", "https://10.0.0.12:2379", "https://10.0.0.13:2379"]
    assert cfg.etcd_tls == {"ca": "/run/pgha/tls/ca.crt", "cert": "/run/pgha/tls/gateway.crt",
                            "key": "/run/pgha/tls/gateway.key"}
    assert cfg.docker_url == "unix:///run/pgha/engine/proxy.sock"
    assert F.FencerConfig.from_json(cfg.to_json()) == cfg
    plain = topology.fencer_config(spec(tls={"enabled": False}, insecure=["plaintext-between-hosts"]))
    assert plain.etcd_urls[0] == "http://10.0.0.11:2379" and plain.etcd_tls is None
    # no runtime-API socket over hosts: each watcher sees its own engine, HAProxy's checks decide
    assert cfg.haproxy_sockets == [] and topology.fence_api_volumes(spec()) == {}
    assert "haproxy-fence" not in topology.haproxy(spec(), "img", "/c").files["haproxy.cfg"]
    # the single engine is unchanged: container names on the cluster network, the loopback proxy
    one = topology.fencer_config(ClusterSpec(scope="lab"))
    assert one.etcd_urls[0] == "https://lab-etcd-1:2379" and one.docker_url == "http://127.0.0.1:2375"


def test_fencer_container_over_hosts_host_network_own_socket_unix_proxy() -> None:
    s = spec(hosts=[HOSTS[0], {**HOSTS[1], "engine_socket": "/run/lab/docker.sock"}, HOSTS[2]])
    agent = {"fencer.py": "agent", "fencing.py": "pure"}
    p1 = topology.fencer(s, "img:1", "/conf", agent, "fencer-h1")
    p2 = topology.fencer(s, "img:1", "/conf", agent, "fencer-h2")
    assert p1.container.name == "many-fencer-h1" and p1.container.member == "fencer-h1"
    assert p1.container.host_network and p1.container.ports == {}
    assert p1.container.binds == {"/var/run/docker.sock": "/var/run/docker.sock"}
    assert p2.container.binds == {"/run/lab/docker.sock": "/var/run/docker.sock"}
    proxy = p1.files["sockproxy.cfg"]
    assert "bind /run/pgha/engine/proxy.sock mode 666" in proxy and "127.0.0.1:2375" not in proxy
    assert "install -d -o haproxy -g nogroup -m 0711 /run/pgha/engine" in p1.files["fencer.sh"]
    assert json.loads(p1.files["fencer.json"]) == json.loads(p2.files["fencer.json"])  # one config, each its engine
    single = topology.fencer(ClusterSpec(scope="lab"), "img:1", "/conf", agent)
    assert not single.container.host_network and single.container.name == "lab-fencer"
    assert "bind 127.0.0.1:2375" in single.files["sockproxy.cfg"]


def test_the_unix_proxy_lets_through_only_get_of_events_and_inspection() -> None:
    cfg = topology.render_socket_proxy("lab", unix=True)
    acls = {line.split()[1]: line.split(None, 3)[3] for line in cfg.splitlines() if line.strip().startswith("acl ")}
    assert "mode 666" in cfg  # in the fencer's private tmpfs: the proxy runs as haproxy, the agent as nobody
    assert re.match(acls["allowed_path"], "/containers/lab-pg-1/json") and not re.match(acls["allowed_path"], "/containers/json")


def test_lab_spec_names_the_lab_hosts_engine_socket_and_keeps_fencing_off() -> None:
    hosts = [lab.LabHost(name=n, container=lab.container_name("x", n), docker=f"unix:///s/{n}.sock",
                         address=lab.host_address("10.213.5.0/24", i), rw_port=27500 + 2 * i, ro_port=27501 + 2 * i)
             for i, n in enumerate(lab.host_names(2))]
    data = lab.spec_data("pgha-it-x", hosts)
    s = parse_spec(data)
    assert not s.fencing and s.hosts is not None and {h.engine_socket for h in s.hosts} == {"/run/lab/docker.sock"}
    on = parse_spec({**data, "fencing": True})
    assert on.fencer_members() == ["fencer-h1", "fencer-h2"]


def test_audit_has_a_watcher_row_per_host() -> None:
    s = spec()
    now = 1000.0
    fresh = F.Counters(heartbeat_at=995.0, events=2, by_outcome={"fenced": 1, "skipped: not leader": 1})
    rows = check_fencers({"fencer-h1": (fresh, ""), "fencer-h2": (None, "the fencer many-fencer-h2 is not running"),
                          "fencer-h3": (F.Counters(heartbeat_at=995.0, events=2, by_outcome={"skipped: etcd unreachable": 1}), "")}, s, now)
    by = {(f.check, f.target): f for f in rows}
    assert by[("fencing.watcher", "fencer-h1")].status == Level.OK
    assert "fenced 1" in by[("fencing.watcher", "fencer-h1")].observed
    assert by[("fencing.watcher", "fencer-h2")].status == Level.WARN
    assert "not running" in by[("fencing.watcher", "fencer-h2")].observed
    assert by[("fencing.unconfirmed", "fencer-h3")].status == Level.WARN
    missing = check_fencers({}, s, now, "engine of h2 does not answer")
    assert [(f.target, f.status) for f in missing] == [(m, Level.WARN) for m in s.fencer_members()]
    one = check_fencers({"fencer": (fresh, "")}, ClusterSpec(scope="lab"), now)
    assert [(f.check, f.target) for f in one] == [("fencing.watcher", "lab")]  # the single engine's row as before
    off = check_fencers({}, spec(fencing=False), now)
    assert [(f.target, f.status, f.observed) for f in off] == [("many", Level.OK, "off (spec.fencing: false)")]


@pytest.fixture
def unix_engine(tmp_path: Path) -> Iterator[str]:
    """A tiny HTTP server on a unix socket answering the engine's inspection (the proxy's stand-in)."""
    path = str(tmp_path / "proxy.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                req = conn.recv(4096).decode()
                body = json.dumps({"path": req.split(" ")[1], "State": {"Running": False, "Pid": 0,
                                                                        "Status": "exited", "ExitCode": 137}})
                conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
                             .encode())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path
    srv.close()


def test_agent_reaches_the_engine_through_a_unix_socket(unix_engine: str) -> None:
    got = fencer_agent.get_json(f"unix://{unix_engine}", "/containers/many-pg-1/json", 2.0)
    assert got is not None and got["path"] == "/containers/many-pg-1/json"
    assert F.engine_verdict(got).dead
    assert fencer_agent.get_json("unix:///nonexistent/proxy.sock", "/_ping", 1.0) is None


class _Ct:
    def __init__(self, name: str, member: str) -> None:
        self.name, self.labels = name, {"pgha.member": member, "pgha.role": "fencer"}


class _Eng:
    def __init__(self, cts: list[_Ct], config_volumes: bool = True) -> None:
        self.cts, self.config_volumes = cts, config_volumes
        self.removed: list[str] = []

    def cluster_containers(self, scope: str, role: str | None = None) -> list[_Ct]:
        assert role == "fencer"
        return self.cts

    def remove_container(self, name: str) -> bool:
        self.removed.append(name)
        return True

    def remove_volume(self, name: str) -> bool:
        self.removed.append(name)
        return True


def _ensure(monkeypatch: pytest.MonkeyPatch, s: ClusterSpec, engines: list[_Eng]) -> tuple[dict[str, str], list[str]]:
    from tasks import members

    placed: list[str] = []

    def place(spec: ClusterSpec, role: str, member: str, image: str, subnet: str) -> str:
        assert role == "fencer"
        placed.append(member)
        return "created"

    class _All:
        def all(self) -> list[_Eng]:
            return engines

    monkeypatch.setattr(members, "place_member", place)
    monkeypatch.setattr(members.docker_hosts, "engines", lambda spec: _All())
    return members.ensure_fencer.fn(s, "img:1", ""), placed


def test_ensure_fencer_places_one_per_host_and_removes_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    s = spec(nodes=2, placement={"patroni": {"pg-1": "h1", "pg-2": "h2"}})
    h1 = _Eng([_Ct("many-fencer-h1", "fencer-h1")])
    h3 = _Eng([_Ct("many-fencer-h3", "fencer-h3")])  # h3 held a node before: its watcher goes
    out, placed = _ensure(monkeypatch, s, [h1, _Eng([]), h3])
    assert placed == ["fencer-h1", "fencer-h2"]
    assert out == {"fencer-h1": "created", "fencer-h2": "created", "fencers removed": "removed"}
    assert h1.removed == [] and h3.removed == ["many-fencer-h3", "many-fencer-h3-etc"]  # its files too


def test_ensure_fencer_with_fencing_off_removes_every_watcher(monkeypatch: pytest.MonkeyPatch) -> None:
    engines = [_Eng([_Ct("many-fencer-h1", "fencer-h1")]), _Eng([_Ct("many-fencer-h2", "fencer-h2")])]
    out, placed = _ensure(monkeypatch, spec(fencing=False), engines)
    assert placed == [] and out == {"fencer": "removed"}
    assert [e.removed for e in engines] == [["many-fencer-h1", "many-fencer-h1-etc"],
                                            ["many-fencer-h2", "many-fencer-h2-etc"]]
    local = _Eng([_Ct("lab-fencer", "fencer")], config_volumes=False)  # bind-mounts the state dir: no volume
    out, _ = _ensure(monkeypatch, ClusterSpec(scope="lab", fencing=False), [local])
    assert out == {"fencer": "removed"} and local.removed == ["lab-fencer"]
    out, _ = _ensure(monkeypatch, ClusterSpec(scope="lab", fencing=False), [_Eng([])])
    assert out == {"fencer": "unchanged"}  # the single engine's outcome row, as before
