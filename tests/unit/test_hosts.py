"""Many hosts: spec validation, placement, rendered configs and the lab's plan (pure, no Docker)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stack import lab
from stack.drill import DrillKind, host_target, members_on_host, spec_host_target
from stack.errors import SpecError
from stack.hosts import multi_host_uri, place, unsafe_reason
from stack.render import etcd_command, patroni_config, render_haproxy_cfg
from stack.secrets import Secrets
from stack.spec import ClusterSpec, parse_spec
from stack.topology import etcd_member, haproxy

HOSTS = [{"name": f"h{i}", "docker": f"ssh://ops@h{i}", "address": f"10.0.0.1{i}"} for i in (1, 2, 3)]
BASE: dict[str, Any] = {"scope": "many", "ports": {"rw": 5000, "ro": 5001, "stats": 7000},
                        "backup": {"enabled": False}, "fencing": False}
SECRETS = Secrets(superuser="s1", replication="s2", rewind="s3", restapi="s4")


def spec(**change: Any) -> ClusterSpec:
    return parse_spec({**BASE, "hosts": HOSTS, **change})


def refused(**change: Any) -> str:
    with pytest.raises(SpecError) as exc:
        parse_spec({**BASE, **change})
    return str(exc.value)


def test_absent_hosts_is_the_single_local_engine() -> None:
    s = ClusterSpec()
    assert not s.multi_host and s.host_of("pg-1") is None
    assert s.address("pg-1") == "hy-home-db-pg-1"
    assert s.client_endpoints() == [("127.0.0.1", 5432)]
    assert "resolvers docker" in render_haproxy_cfg(s)


def test_spread_puts_one_member_per_host_and_haproxy_on_the_first() -> None:
    s = spec()
    assert [s.host_of(m) for m in ("etcd-1", "etcd-2", "etcd-3", "pg-1", "pg-2", "pg-3")] == ["h1", "h2", "h3"] * 2
    assert s.address("etcd-2") == "10.0.0.12"


def test_configs_use_host_addresses() -> None:
    s = spec()
    cmd = etcd_command(s, "etcd-1")
    assert "--initial-advertise-peer-urls=https://10.0.0.11:2380" in cmd
    assert "--initial-cluster=etcd-1=https://10.0.0.11:2380,etcd-2=https://10.0.0.12:2380,etcd-3=https://10.0.0.13:2380" in cmd
    cfg = patroni_config(s, "pg-2", "", SECRETS)
    assert cfg["postgresql"]["connect_address"] == "10.0.0.12:5432"
    assert cfg["restapi"]["connect_address"] == "10.0.0.12:8008"
    assert cfg["etcd3"]["hosts"] == ["10.0.0.11:2379", "10.0.0.12:2379", "10.0.0.13:2379"]
    assert "hostssl all all 10.0.0.13/32 scram-sha-256" in cfg["postgresql"]["pg_hba"]
    text = render_haproxy_cfg(s)
    assert "server pg-3 10.0.0.13:5432" in text and "resolvers" not in text and "bind :5000" in text


def test_members_use_host_networking_and_haproxy_publishes_nothing() -> None:
    s = spec()
    assert etcd_member(s, "etcd-1", "img").container.host_network
    h = haproxy(s, "img", "/conf").container
    assert h.host_network and h.ports == {}
    assert not haproxy(ClusterSpec(), "img", "/conf").container.host_network


@pytest.mark.parametrize(("change", "expect"), [
    ({"hosts": HOSTS[:2]}, "unsafe placement: losing host h1 (it holds 2 of 3 etcd members) leaves 1, below etcd's "
                           "quorum of 2; add hosts or set allow_unsafe_placement: true"),
    ({"hosts": [*HOSTS[:2], {**HOSTS[2], "name": "h1"}]}, "two hosts have the same name 'h1'"),
    ({"hosts": [*HOSTS[:2], {**HOSTS[2], "address": "10.0.0.11"}]}, "two hosts have the same address '10.0.0.11'"),
    ({"hosts": HOSTS[:2], "allow_unsafe_placement": True}, "etcd-1 and etcd-3 are both on host h1"),
    ({"hosts": HOSTS, "ports": {"rw": 5432, "ro": 5001, "stats": 7000}}, "ports.rw 5432 is PostgreSQL's port"),
    ({"hosts": HOSTS, "backup": {"enabled": True}}, "backup over several hosts needs backup.s3"),
    ({"hosts": [{**HOSTS[0], "engine_socket": "run/docker.sock"}, *HOSTS[1:]]}, "must be an absolute path"),
    ({"hosts": [{**HOSTS[0], "docker": "http://h1:2375"}]}, "must start with one of unix://, tcp://, ssh://"),
    ({"hosts": HOSTS, "placement": {"etcd": {"etcd-1": "h1", "etcd-2": "h9", "etcd-3": "h3"}}}, "unknown host h9"),
    ({"hosts": [{**HOSTS[0], "tls": {"ca": "a", "cert": "b", "key": "-----BEGIN PRIVATE KEY-----"}}, *HOSTS[1:]]},
     "give the path of a file"),
    ({"hosts": []}, "hosts is empty"),
])
def test_bad_hosts_specs_are_one_line(change: dict[str, Any], expect: str) -> None:
    msg = refused(**change)
    assert expect in msg and "\n" not in msg


def test_one_node_is_unsafe_unless_accepted() -> None:
    assert "loses every Patroni node" in refused(hosts=HOSTS, nodes=1)
    assert spec(nodes=1, allow_unsafe_placement=True).nodes == 1


def test_explicit_placement_map() -> None:
    s = spec(placement={"patroni": {"pg-1": "h3", "pg-2": "h1", "pg-3": "h2"}})
    assert s.host_of("pg-1") == "h3" and s.address("pg-1") == "10.0.0.13"


def test_unsafe_reason_and_place() -> None:
    on = place(["etcd-1", "etcd-2", "etcd-3"], ["a", "b", "c"], "spread", "etcd")  # type: ignore[arg-type]
    assert unsafe_reason(on, {"pg-1": "a", "pg-2": "b"}, ["a", "b", "c"]) is None
    assert "etcd" in str(unsafe_reason({"e1": "a", "e2": "a", "e3": "b"}, {"p": "b", "q": "a"}, ["a", "b"]))


def test_multi_host_uri_and_client_endpoints() -> None:
    hosts = [{**h, "client_address": "127.0.0.1", "rw_port": 26400 + 2 * i, "ro_port": 26401 + 2 * i}
             for i, h in enumerate(HOSTS)]
    s = spec(hosts=hosts)
    assert s.client_endpoints() == [("127.0.0.1", 26400), ("127.0.0.1", 26402), ("127.0.0.1", 26404)]
    assert multi_host_uri("postgres", s.client_endpoints(), "postgres", False) == (
        "postgresql://postgres@127.0.0.1:26400,127.0.0.1:26402,127.0.0.1:26404/postgres?target_session_attrs=read-write")
    assert multi_host_uri("postgres", s.client_endpoints(True), "db", True).endswith("/db?target_session_attrs=prefer-standby")


def test_host_target() -> None:
    t = host_target("h2", ["h1", "h2", "h3"], ["pg-2", "etcd-2"], ["pg-1", "pg-2", "pg-3"])
    assert t.member == "pg-2" and t.also == ("etcd-2",)
    with pytest.raises(ValueError, match="not one of the spec's hosts"):
        host_target("h9", ["h1"], [], [])
    with pytest.raises(ValueError, match="host drills need a spec with hosts"):
        host_target("h1", [], [], [])


def test_spec_host_target_from_the_spec_alone() -> None:
    s = spec()
    t = spec_host_target(s, DrillKind.HOST_LOSS, "h3")
    assert t is not None and t.member == "pg-3" and t.also == ("etcd-3",)
    assert spec_host_target(s, DrillKind.HARD_KILL, None) is None
    with pytest.raises(ValueError, match="--host only applies to host-loss and host-partition, not hard-kill"):
        spec_host_target(s, DrillKind.HARD_KILL, "h1")
    with pytest.raises(ValueError, match="host-partition needs --host"):
        spec_host_target(s, DrillKind.HOST_PARTITION, None)
    with pytest.raises(ValueError, match=r"--host h9 is not one of the spec's hosts \(h1, h2, h3\)"):
        spec_host_target(s, DrillKind.HOST_LOSS, "h9")
    # A 4th host holds only HAProxy (3 nodes and 3 etcd members spread over h1..h3).
    four = spec(hosts=[*HOSTS, {"name": "h4", "docker": "ssh://ops@h4", "address": "10.0.0.14"}])
    assert members_on_host(four, "h4") == [] and members_on_host(four, "h1") == ["pg-1", "etcd-1"]
    with pytest.raises(ValueError, match="host h4 runs no member of the cluster but HAProxy"):
        spec_host_target(four, DrillKind.HOST_LOSS, "h4")
    with pytest.raises(ValueError, match="host drills need a spec with hosts"):
        spec_host_target(parse_spec({"scope": "one"}), DrillKind.HOST_LOSS, "h1")


def test_lab_plan_writes_a_valid_spec() -> None:
    hosts = [lab.LabHost(name=n, container=lab.container_name("x", n), docker=f"unix:///s/{n}.sock",
                         address=lab.host_address("10.213.5.0/24", i), rw_port=rw, ro_port=ro)
             for i, (n, (rw, ro)) in enumerate(zip(lab.host_names(3), lab.client_ports(26400, 3), strict=True))]
    assert [h.address for h in hosts] == ["10.213.5.11", "10.213.5.12", "10.213.5.13"]
    s = parse_spec(lab.spec_data("pgha-it-lab", hosts))
    assert s.nodes == 3 and s.etcd_members == 3 and not s.allow_unsafe_placement
    assert s.client_endpoints(True)[1] == ("127.0.0.1", 26403)
    two = parse_spec(lab.spec_data("pgha-it-lab", hosts[:2]))
    assert two.etcd_members == 1 and two.allow_unsafe_placement
    assert lab.check_name("Bad_Name") and lab.check_hosts(0) and lab.check_name("itlab") is None


def test_lab_fan_out_feeds_every_sink_the_same_stream() -> None:
    from tasks.docker_images import fan_out

    data = [bytes([i]) * 10 for i in range(200)]  # far more chunks than a queue holds
    got: list[list[bytes]] = [[], [], []]

    def sink(i: int) -> Callable[[Iterator[bytes]], None]:
        return lambda chunks: got[i].extend(chunks)

    assert fan_out(lambda: iter(data), [sink(i) for i in range(3)], depth=4) == [None, None, None, None]
    assert got == [data, data, data]


def test_lab_fan_out_a_failed_sink_or_source_blocks_nothing() -> None:
    from tasks.docker_images import fan_out

    data = [b"x"] * 100
    got: list[bytes] = []

    def broken(chunks: Iterator[bytes]) -> None:
        next(chunks)
        raise RuntimeError("load refused")

    errors = fan_out(lambda: iter(data), [broken, got.extend], depth=2)
    assert errors[0] is None and isinstance(errors[1], RuntimeError) and errors[2] is None
    assert got == data  # the healthy sink got everything although the broken one stopped reading

    def failing_source() -> Iterator[bytes]:
        yield b"a"
        raise OSError("save failed")

    seen: list[bytes] = []
    errors = fan_out(failing_source, [seen.extend], depth=2)
    assert isinstance(errors[0], OSError) and errors[1] is None and seen == [b"a"]
