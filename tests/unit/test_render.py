"""Rendered configs for several specs: patroni.yml, haproxy.cfg, etcd flags."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stack import render, topology
from stack.secrets import Secrets
from stack.spec import ClusterSpec, Profile, parse_spec

SECRETS = Secrets(superuser="su-pw-123", replication="repl-pw-456", rewind="rw-pw-789", restapi="api-pw-000")
SUBNET = "172.30.0.0/16"
HAPROXY_DATA = Path(__file__).parent / "data" / "haproxy"


def test_patroni_yml_default_spec() -> None:
    spec = ClusterSpec()
    cfg = yaml.safe_load(render.render_patroni_yml(spec, "pg-2", SUBNET, SECRETS))
    assert cfg["scope"] == "hy-home-db" and cfg["name"] == "pg-2"
    assert cfg["restapi"]["connect_address"] == "hy-home-db-pg-2:8008"
    assert cfg["etcd3"]["hosts"] == ["hy-home-db-etcd-1:2379", "hy-home-db-etcd-2:2379", "hy-home-db-etcd-3:2379"]
    dcs = cfg["bootstrap"]["dcs"]
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"], dcs["synchronous_mode"]) == (20, 2, 5, True)
    assert dcs["postgresql"]["parameters"]["password_encryption"] == "scram-sha-256"
    assert "data-checksums" in cfg["bootstrap"]["initdb"]
    assert cfg["postgresql"]["bin_dir"] == "/usr/lib/postgresql/17/bin"
    assert cfg["postgresql"]["authentication"]["superuser"]["password"] == "su-pw-123"
    hba = cfg["postgresql"]["pg_hba"]
    assert f"hostssl all all {SUBNET} scram-sha-256" in hba
    assert not any(line.startswith("host ") for line in hba)  # TLS on by default: plain TCP finds no entry
    assert not any("0.0.0.0/0" in line or " trust" in line or " md5" in line for line in hba)


def test_patroni_yml_other_spec() -> None:
    spec = parse_spec({"scope": "lab", "nodes": 2, "etcd_members": 1, "postgres_version": 15,
                       "profile": "patroni-defaults", "postgres_parameters": {"work_mem": "8MB"}})
    cfg = yaml.safe_load(render.render_patroni_yml(spec, "pg-1", SUBNET, SECRETS))
    assert cfg["etcd3"]["hosts"] == ["lab-etcd-1:2379"]
    assert cfg["postgresql"]["bin_dir"] == "/usr/lib/postgresql/15/bin"
    dcs = cfg["bootstrap"]["dcs"]
    assert (dcs["ttl"], dcs["loop_wait"], dcs["synchronous_mode"]) == (30, 10, False)
    assert dcs["postgresql"]["parameters"]["work_mem"] == "8MB"


def test_haproxy_cfg_routes_by_patroni_endpoints() -> None:
    spec = parse_spec({"scope": "lab", "nodes": 4})
    cfg = render.render_haproxy_cfg(spec)
    primary, replicas = cfg.split("listen primary")[1].split("listen replicas")
    assert "option httpchk OPTIONS /primary" in primary and "bind :5432" in primary
    assert "option httpchk OPTIONS /replica" in replicas and "bind :5433" in replicas
    for part in (primary, replicas):
        assert "on-marked-down shutdown-sessions" in part
        assert "inter 500ms" in part and "rise 1" in part and "fall 2" in part
        assert "check port 8008" in part
        assert [line.split()[1] for line in part.splitlines() if line.strip().startswith("server ")] == [
            "pg-1", "pg-2", "pg-3", "pg-4"]
        assert "lab-pg-4:5432" in part
    assert "prometheus-exporter" in cfg
    assert "timeout check 1000ms" in cfg and "retries 0" in cfg


def test_haproxy_cfg_patroni_defaults_profile() -> None:
    cfg = render.render_haproxy_cfg(ClusterSpec(profile=Profile.PATRONI_DEFAULTS))
    assert "inter 1000ms" in cfg and "rise 2" in cfg and "timeout check 2000ms" in cfg and "retries 3" in cfg


# Captured from the string-building renderer before haproxy.cfg was built from a structure:
# the config a running HAProxy holds must not change with the way it is rendered.
@pytest.mark.parametrize(("name", "raw"), [
    ("default.cfg", {}),
    ("lab-4-nodes-patroni-defaults.cfg", {"scope": "lab", "nodes": 4, "profile": "patroni-defaults"}),
    ("one-node-overrides.cfg", {"scope": "solo", "nodes": 1, "etcd_members": 1,
                                "ports": {"rw": 26432, "ro": 26433, "stats": 26404},
                                "haproxy": {"inter_ms": 250, "check_timeout_ms": 300, "retries": 2,
                                            "fall": 3, "rise": 2}}),
])
def test_haproxy_cfg_is_byte_for_byte_the_captured_rendering(name: str, raw: dict[str, object]) -> None:
    # Captured before TLS existed: with tls off the rendering is unchanged.
    assert render.render_haproxy_cfg(parse_spec({**raw, "tls": {"enabled": False}})) == (HAPROXY_DATA / name).read_text()


def test_haproxy_sections_are_data() -> None:
    sections = render.haproxy_sections(parse_spec({"scope": "lab", "nodes": 2}))
    assert [s.header for s in sections] == ["global", "resolvers docker", "defaults", "frontend stats",
                                            "listen primary", "listen replicas"]
    by_header = {s.header: s.directives for s in sections}
    for listen in ("listen primary", "listen replicas"):
        assert [d for d in by_header[listen] if d.startswith("server ")] == [
            "server pg-1 lab-pg-1:5432", "server pg-2 lab-pg-2:5432"]
    assert render.serialize_haproxy([render.CfgSection("a", ["x 1"]), render.CfgSection("b", [])]) == (
        f"{render.HAPROXY_BANNER}\na\n    x 1\n\nb\n")


def test_etcd_flags() -> None:
    spec = parse_spec({"scope": "lab", "etcd_members": 3, "tls": {"enabled": False}})
    flags = render.etcd_command(spec, "etcd-2")
    assert "--name=etcd-2" in flags
    assert "--advertise-client-urls=http://lab-etcd-2:2379" in flags
    assert ("--initial-cluster=etcd-1=http://lab-etcd-1:2380,etcd-2=http://lab-etcd-2:2380,"
            "etcd-3=http://lab-etcd-3:2380") in flags
    assert "--initial-cluster-token=lab" in flags
    one = render.etcd_command(parse_spec({"etcd_members": 1, "tls": {"enabled": False}}), "etcd-1")
    assert "--initial-cluster=etcd-1=http://hy-home-db-etcd-1:2380" in one
    assert not any("cert" in f for f in one)


def test_topology_keeps_passwords_out_of_container_definitions() -> None:
    spec = ClusterSpec()
    planned = [topology.patroni_node(spec, m, "img:1", SUBNET, SECRETS, "/state/conf") for m in spec.node_names()]
    planned += [topology.etcd_member(spec, m, "img:1") for m in spec.etcd_names()]
    planned.append(topology.haproxy(spec, "img:1", "/state/conf"))
    for p in planned:
        text = repr(p.container)
        for pw in SECRETS.values():
            assert pw not in text
    # ... while the mounted patroni.yml carries them.
    assert SECRETS.superuser in planned[0].files["patroni.yml"]
    hp = planned[-1].container
    assert hp.ports == {5432: 5432, 5433: 5433, 8404: 8404}


def test_config_hash_follows_definition_not_passwords() -> None:
    spec = ClusterSpec()
    a = topology.patroni_node(spec, "pg-1", "img:1", SUBNET, SECRETS, "/state/conf").container.config_hash
    b = topology.patroni_node(spec, "pg-1", "img:2", SUBNET, SECRETS, "/state/conf").container.config_hash
    other = Secrets("other-su-pw", "other-repl-pw", "other-rw-pw", "other-api-pw")
    c = topology.patroni_node(spec, "pg-1", "img:1", SUBNET, other, "/state/conf").container.config_hash
    assert a != b
    assert a == c  # the label is computed with passwords redacted
