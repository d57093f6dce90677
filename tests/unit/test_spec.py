"""Spec validation: every bad spec is refused with one readable line."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack.errors import SpecError
from stack.spec import ClusterSpec, Profile, load_spec, parse_spec


def test_defaults_are_the_seed_stack() -> None:
    s = ClusterSpec()
    assert (s.scope, s.nodes, s.etcd_members, s.ports.rw, s.ports.ro, s.postgres_version) == (
        "hy-home-db", 3, 3, 5432, 5433, 17)
    assert s.node_names() == ["pg-1", "pg-2", "pg-3"]
    assert s.etcd_names() == ["etcd-1", "etcd-2", "etcd-3"]
    assert s.container("pg-2") == "hy-home-db-pg-2"
    assert s.volume("pg-2") == "hy-home-db-pg-2-data"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"nodes": 0}, "nodes: Input should be greater than or equal to 1"),
        ({"etcd_members": 2}, "etcd_members: must be odd"),
        ({"etcd_members": 0}, "etcd_members: Input should be greater than or equal to 1"),
        ({"ports": {"rw": 6000, "ro": 6000}}, "ports.ro and ports.rw are both 6000"),
        ({"ports": {"rw": 80}}, "ports.rw: Input should be greater than or equal to 1024"),
        ({"scope": "Bad_Scope"}, "scope: 'Bad_Scope' is not a valid scope"),
        ({"scope": "ends-with-"}, "is not a valid scope"),
        ({"scope": "x" * 41}, "is not a valid scope"),
        ({"nodse": 3}, "nodse: unknown key"),
        ({"ports": {"rw": 6000, "admin": 1}}, "ports.admin: unknown key"),
        ({"postgres_version": 16}, "PostgreSQL 16 is not packaged"),
        ({"profile": "turbo"}, "profile: Input should be 'fast' or 'patroni-defaults'"),
        ({"patroni": {"ttl": 10}}, "patroni.ttl: Input should be greater than or equal to 20"),
        ({"patroni": {"loop_wait": 10, "retry_timeout": 10, "ttl": 20}}, "loop_wait + 2*retry_timeout <= ttl"),
    ],
)
def test_bad_specs_are_refused_with_one_line(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "test.yaml")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("invalid spec test.yaml: ")
    assert fragment in msg


def test_non_mapping_is_refused() -> None:
    with pytest.raises(SpecError, match="expected a mapping"):
        parse_spec(["scope"], "x.yaml")


def test_load_spec_from_yaml(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("scope: lab\nnodes: 2\netcd_members: 1\nports: {rw: 7432, ro: 7433, stats: 7404}\n")
    s = load_spec(f)
    assert (s.scope, s.nodes, s.etcd_members, s.ports.stats) == ("lab", 2, 1, 7404)


def test_load_spec_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("scope: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(f)
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "nope.yaml")


def test_empty_yaml_is_the_default_cluster(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("")
    assert load_spec(f) == ClusterSpec()


def test_profiles_and_overrides() -> None:
    fast = ClusterSpec().timing
    assert (fast.ttl, fast.loop_wait, fast.retry_timeout, fast.synchronous_mode) == (20, 2, 5, True)
    assert fast.loop_wait + 2 * fast.retry_timeout <= fast.ttl
    default = ClusterSpec(profile=Profile.PATRONI_DEFAULTS).timing
    assert (default.ttl, default.loop_wait, default.retry_timeout, default.synchronous_mode) == (30, 10, 10, False)
    tuned = parse_spec({"patroni": {"ttl": 25, "synchronous_mode": False}, "haproxy": {"rise": 2}}).timing
    assert (tuned.ttl, tuned.loop_wait, tuned.synchronous_mode, tuned.rise) == (25, 2, False, 2)


def test_expected_members_follow_the_spec() -> None:
    base = parse_spec({"scope": "pgha-unit-em", "nodes": 2, "etcd_members": 1, "fencing": False,
                       "pooler": {"enabled": False}}, "(unit)")
    assert base.expected_members() == [("etcd-1", "etcd"), ("pg-1", "patroni"), ("pg-2", "patroni"),
                                       ("haproxy", "haproxy")]
    full = parse_spec({"scope": "pgha-unit-em", "nodes": 2, "etcd_members": 1, "fencing": True,
                       "pooler": {"enabled": True}}, "(unit)")
    assert [r for _, r in full.expected_members()][-2:] == ["pooler", "fencer"]
