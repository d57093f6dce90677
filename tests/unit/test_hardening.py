"""Hardening decisions: budgets, derived memory settings, owned parameters, teardown, audit rows."""

from __future__ import annotations

import pytest

from stack import topology
from stack.audit import check_resources
from stack.audit_obs import PressureObs
from stack.errors import SpecError
from stack.findings import Level
from stack.render import dcs_config
from stack.resources import check_memory, derive_memory_parameters, owned_reason, parse_memory
from stack.rolling import Setting, check_parameter
from stack.secrets import Secrets
from stack.spec import ClusterSpec, parse_spec
from stack.teardown import StateFate, confirm_refusal, kept_repository_refusal, state_fate

SECRETS = Secrets("su-secret", "repl-secret", "rew-secret", "api-secret")
MIB = 1024 * 1024


def test_seed_budgets_are_the_defaults() -> None:
    r = ClusterSpec().resources
    assert (r.patroni.cpus, r.patroni.memory_mib) == (1, 2048)
    assert (r.etcd.cpus, r.etcd.memory_mib) == (0.5, 512)
    assert (r.haproxy.cpus, r.haproxy.memory_mib) == (0.2, 256)


@pytest.mark.parametrize(("limit", "conns", "want"), [
    (2048, 100, {"shared_buffers": "512MB", "effective_cache_size": "1536MB", "work_mem": "5MB",
                 "maintenance_work_mem": "128MB"}),
    (1024, 100, {"shared_buffers": "256MB", "effective_cache_size": "768MB", "work_mem": "4MB",
                 "maintenance_work_mem": "64MB"}),
    (65536, 100, {"shared_buffers": "16384MB", "effective_cache_size": "49152MB", "work_mem": "64MB",
                  "maintenance_work_mem": "2048MB"}),
    (8192, 500, {"shared_buffers": "2048MB", "effective_cache_size": "6144MB", "work_mem": "4MB",
                 "maintenance_work_mem": "512MB"}),
])
def test_memory_parameters_follow_the_limit(limit: int, conns: int, want: dict[str, str]) -> None:
    assert derive_memory_parameters(limit, conns) == want


def test_spec_values_win_over_derived_ones() -> None:
    spec = parse_spec({"resources": {"patroni": {"cpus": 2, "memory_mib": 4096}},
                       "postgres_parameters": {"work_mem": "32MB"}})
    p = dcs_config(spec)["postgresql"]["parameters"]
    assert p["shared_buffers"] == "1024MB" and p["effective_cache_size"] == "3072MB" and p["work_mem"] == "32MB"


def test_parse_memory_units() -> None:
    assert parse_memory("shared_buffers", "200GB") == 200 * 1024 * MIB
    assert parse_memory("shared_buffers", "16384") == 16384 * 8192  # 8 kB pages
    assert parse_memory("work_mem", "4096") == 4096 * 1024  # kB
    assert parse_memory("work_mem", "-1") is None and parse_memory("max_connections", "100") is None


def test_memory_settings_checked_against_the_limit() -> None:
    assert check_memory("shared_buffers", "1GB", 2048) is None
    err = check_memory("shared_buffers", "200GB", 2048)
    assert err and "200GB" in err and "2048 MiB" in err and "at most 1024MB" in err
    assert check_memory("effective_cache_size", "200GB", 2048) is None  # a planner hint: allocates nothing
    assert check_memory("work_mem", "1GB", 2048) is not None


@pytest.mark.parametrize("name", ["archive_command", "archive_mode", "restore_command", "ssl", "ssl_cert_file",
                                  "password_encryption", "listen_addresses", "port", "hba_file", "ident_file",
                                  "data_directory"])
def test_owned_parameters_are_refused_with_the_reason(name: str) -> None:
    assert owned_reason(name)
    err = check_parameter(name, "x", Setting(name, "sighup", "string"))
    assert err and err.startswith(f"{name} cannot be changed")
    with pytest.raises(SpecError, match=f"postgres_parameters.*{name} cannot be set here"):
        parse_spec({"postgres_parameters": {name: "x"}})


def test_free_parameters_pass() -> None:
    assert owned_reason("work_mem") is None and owned_reason("shared_preload_libraries") is None
    assert check_parameter("shared_buffers", "200GB", Setting("shared_buffers", "postmaster", "integer",
                                                                          category="Resource Usage / Memory"), 2048)
    assert check_parameter("shared_buffers", "600MB", Setting("shared_buffers", "postmaster", "integer",
                                                                          category="Resource Usage / Memory"), 2048) is None
    with pytest.raises(SpecError, match="postgres_parameters.shared_buffers=200GB is more than 50%"):
        parse_spec({"postgres_parameters": {"shared_buffers": "200GB"}})
    parse_spec({"postgres_parameters": {"wal_level": "logical"}})  # the major upgrade's green sets it


def test_containers_get_limits_dropped_capabilities_and_tmpfs() -> None:
    spec = ClusterSpec()
    node = topology.patroni_node(spec, "pg-1", "img", "10.0.0.0/24", SECRETS, "/c").container.hardening
    assert node is not None
    assert (node.nano_cpus, node.memory_bytes, node.shm_bytes) == (1_000_000_000, 2048 * MIB, 256 * MIB)
    assert node.cap_drop == ("ALL",) and "NET_BIND_SERVICE" not in node.cap_add
    assert node.security_opt == ("no-new-privileges:true",) and not node.read_only
    assert ("/run/pgha", "rw,nosuid,nodev,noexec,size=16m,mode=0700") in node.tmpfs
    hap = topology.haproxy(spec, "img", "/c").container.hardening
    assert hap is not None and hap.read_only and hap.nano_cpus == 200_000_000 and hap.memory_bytes == 256 * MIB
    assert "DAC_OVERRIDE" not in hap.cap_add
    etcd = topology.etcd_member(spec, "etcd-1", "img").container.hardening
    assert etcd is not None and etcd.read_only and etcd.memory_bytes == 512 * MIB


def test_a_changed_limit_changes_the_config_hash() -> None:
    a = topology.etcd_member(ClusterSpec(), "etcd-1", "img").container.config_hash
    b = topology.etcd_member(parse_spec({"resources": {"etcd": {"cpus": 1, "memory_mib": 512}}}), "etcd-1",
                             "img").container.config_hash
    assert a != b


def test_shm_cannot_exceed_half_the_node() -> None:
    with pytest.raises(SpecError, match="shm_mib"):
        parse_spec({"resources": {"patroni": {"cpus": 1, "memory_mib": 256}, "shm_mib": 256}})


def test_destroying_data_needs_the_scope_as_confirmation() -> None:
    assert confirm_refusal("s", False, False, "") is None
    assert "needs an explicit confirmation" in (confirm_refusal("s", True, False, "") or "")
    assert confirm_refusal("s", True, False, "other") is not None
    assert confirm_refusal("s", True, False, "s") is None
    assert "needs volumes" in (confirm_refusal("s", False, True, "s") or "")


def test_secrets_are_deleted_only_when_no_repository_needs_them() -> None:
    assert state_fate(False, False, True) == StateFate.KEEP
    assert state_fate(True, False, True) == StateFate.MOVE_ASIDE
    assert state_fate(True, True, True) == StateFate.MOVE_ASIDE  # S3: purging cannot delete the bucket
    assert state_fate(True, True, False) == StateFate.DELETE
    assert state_fate(True, False, False) == StateFate.DELETE  # no repository at all (backups off)
    msg = kept_repository_refusal("s", "s-pgbackrest", "/st/s.removed-1")
    assert "s-pgbackrest" in msg and "/st/s.removed-1" in msg and "--purge-backups --yes" in msg


def test_resource_pressure_rows() -> None:
    th = ClusterSpec().audit
    rows = check_resources([
        PressureObs("pg-1", 100 * MIB, 2048 * MIB),
        PressureObs("pg-2", 1800 * MIB, 2048 * MIB),
        PressureObs("etcd-1", 500 * MIB, 512 * MIB),
        PressureObs("haproxy", 10 * MIB, 256 * MIB, oom_killed=True),
        PressureObs("fencer", 10 * MIB, 0),
    ], ClusterSpec(), th)
    by = {(f.check, f.target): f for f in rows}
    assert by[("resource.memory", "pg-1")].status == Level.OK
    assert by[("resource.memory", "pg-2")].status == Level.WARN  # 88 %
    assert by[("resource.memory", "etcd-1")].status == Level.CRITICAL
    assert "resources.etcd.memory_mib" in by[("resource.memory", "etcd-1")].hint
    assert by[("resource.oom", "haproxy")].status == Level.CRITICAL
    assert by[("resource.oom", "pg-1")].status == Level.OK
    assert by[("resource.memory", "fencer")].status == Level.WARN  # no limit
