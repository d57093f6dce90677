"""Capped logs: the spec's `logs:` section, its refusals, and where the cap reaches a container."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from stack import audit as A
from stack import audit_obs as AO
from stack import findings as AF
from stack import render, topology
from stack.errors import SpecError
from stack.secrets import Secrets
from stack.spec import ClusterSpec, parse_spec
from tasks.engine_client import DEFAULT_LOG_OPTIONS, LOG_DRIVER, log_config

SECRETS = Secrets("su-secret", "repl-secret", "rew-secret", "api-secret")
MIB = 1024 * 1024


def test_the_default_cap_is_five_files_of_20m() -> None:
    logs = ClusterSpec().logs
    assert (logs.max_size, logs.max_files) == ("20m", 5)
    assert logs.cap_bytes == 100 * MIB
    assert logs.driver_options() == {"max-size": "20m", "max-file": "5"} == DEFAULT_LOG_OPTIONS


@pytest.mark.parametrize(("size", "stored", "file_bytes"), [
    ("1m", "1m", MIB), ("1M", "1m", MIB), ("2g", "2g", 2048 * MIB), ("50MB", "50m", 50 * MIB),
    ("1024k", "1024k", MIB),
])
def test_sizes_are_read_as_docker_reads_them(size: str, stored: str, file_bytes: int) -> None:
    logs = parse_spec({"logs": {"max_size": size}}).logs
    assert (logs.max_size, logs.file_bytes) == (stored, file_bytes)


@pytest.mark.parametrize(("logs", "fragment"), [
    ({"max_size": "512k"}, "logs.max_size: 512k is below the 1m floor"),
    ({"max_size": "1023k"}, "is below the 1m floor"),
    ({"max_size": "20"}, "logs.max_size: '20' is not a size: write a whole number and k, m or g"),
    ({"max_size": 20}, "'20' is not a size"),
    ({"max_size": "1.5m"}, "'1.5m' is not a size"),
    ({"max_size": "lots"}, "'lots' is not a size"),
    ({"max_size": "0m"}, "'0m' is not a size"),
    ({"max_files": 0}, "logs.max_files: Input should be greater than or equal to 1"),
    ({"max_file": 3}, "logs.max_file: unknown key"),
])
def test_a_bad_cap_is_refused_in_one_line(logs: dict[str, object], fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"logs": logs}, "x.yaml")
    assert "\n" not in str(info.value) and fragment in str(info.value)


def _members(spec: ClusterSpec) -> list[topology.Planned]:
    return [
        topology.etcd_member(spec, "etcd-1", "img"),
        topology.patroni_node(spec, "pg-1", "img", "10.0.0.0/24", SECRETS, "/c"),
        topology.haproxy(spec, "img", "/c"),
        topology.fencer(spec, "img", "/c", {"agent.py": "print()"}),
    ]


def test_every_member_carries_the_cap_and_its_hash_follows_it() -> None:
    spec = parse_spec({"logs": {"max_size": "5m", "max_files": 2}})
    before = {p.container.name: p.container.config_hash for p in _members(ClusterSpec())}
    for p in _members(spec):
        assert p.container.log_options == {"max-size": "5m", "max-file": "2"}, p.container.name
        # a changed cap recreates the container on the next `up` (the engine sets it at creation only)
        assert p.container.config_hash != before[p.container.name]


def test_the_engine_gets_json_file_with_the_options() -> None:
    assert LOG_DRIVER == "json-file"
    lc = log_config({"max-size": "5m", "max-file": "2"})
    assert (lc.type, lc.config) == ("json-file", {"max-size": "5m", "max-file": "2"})
    assert log_config(None).config == DEFAULT_LOG_OPTIONS  # helpers made without a spec


def test_haproxy_checks_ask_for_the_status_line_only() -> None:
    cfg = render.render_haproxy_cfg(ClusterSpec())
    assert "option httpchk OPTIONS /primary" in cfg and "option httpchk OPTIONS /replica" in cfg
    assert "httpchk GET" not in cfg


def test_the_audit_warns_of_a_container_without_the_specs_cap() -> None:
    spec = parse_spec({"nodes": 2, "etcd_members": 1})
    capped = {"max-size": "20m", "max-file": "5"}
    cs = [AO.ContainerObs(spec.container(m), m, "running", "healthy", f"id-{m}", 0, "json-file", capped)
          for m, _ in spec.expected_members()]
    fs = A.check_log_caps(cs, spec)
    assert len(fs) == len(spec.expected_members()) and AF.worst(fs) == AF.Level.OK
    assert fs[0].observed == "20m x 5 files (json-file)" == fs[0].threshold
    cs[0] = AO.ContainerObs(cs[0].name, cs[0].member, "running", "healthy", "id", 0, "json-file", {})  # an older pgha's
    cs[1] = AO.ContainerObs(cs[1].name, cs[1].member, "running", "healthy", "id", 0, "json-file",
                           {"max-size": "10m", "max-file": "3"})
    fs = A.check_log_caps(cs, spec)
    assert [(f.status, f.observed) for f in fs[:2]] == [(AF.Level.WARN, "no cap (json-file driver)"),
                                                        (AF.Level.WARN, "10m x 3 files (json-file)")]
    assert "`pgha up` recreates" in fs[0].hint
    assert len(A.check_log_caps(cs[1:], spec)) == len(cs) - 1  # a missing container: container.running says so


def test_up_refuses_a_cap_too_small_in_one_line_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path / "state"))
    f = tmp_path / "small.yaml"
    f.write_text("scope: tiny-logs\nlogs:\n  max_size: 512k\n")
    res = CliRunner().invoke(app, ["up", "--spec", str(f)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert lines == [f"pgha: error: invalid spec {f}: logs.max_size: 512k is below the 1m floor: one log file must "
                     "hold a burst of Patroni lines (a failover, a traceback) or the rotation drops the cause"]
    assert not (tmp_path / "state").exists()  # refused before anything is written
