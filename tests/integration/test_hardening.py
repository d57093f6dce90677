"""Hardening of containers, destructive operations and configuration, on one 1-etcd / 2-node cluster.

The node limit is 1 GiB here (the seed's 2 GiB is the default) so the derived PostgreSQL
memory settings are seen to follow the spec. The down test destroys the cluster; the
`hardened` fixture brings it back when a later test needs it, so no test depends on order.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

from stack.audit import check_resources
from stack.findings import Level
from stack.spec import load_spec
from tasks.docker_engine import Engine
from tests.integration.conftest import Cluster, make_cluster, pgha, remove_scope, up

SCOPE = "pgha-it-c1"
MIB = 1024 * 1024
SPEC = {"scope": SCOPE, "nodes": 2, "etcd_members": 1,
        "ports": {"rw": 26710, "ro": 26711, "stats": 26712, "pool": 26713},
        "pooler": {"enabled": True},
        "resources": {"patroni": {"cpus": 1, "memory_mib": 1024}}}
LIMITS = {"pg-1": (1_000_000_000, 1024 * MIB), "pg-2": (1_000_000_000, 1024 * MIB),
          "etcd-1": (500_000_000, 512 * MIB), "haproxy": (200_000_000, 256 * MIB),
          "pooler": (500_000_000, 256 * MIB), "fencer": (200_000_000, 128 * MIB)}
READ_ONLY = {"etcd-1", "haproxy", "pooler", "fencer"}


@pytest.fixture(scope="module")
def made(engine: docker.DockerClient, base_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = make_cluster(engine, base_env, tmp_path_factory.mktemp("c1"), SPEC)
    try:
        yield c
    finally:
        flt = {"label": f"pgha.cluster={SCOPE}"}
        if engine.containers.list(all=True, filters=flt) or engine.volumes.list(filters=flt):
            pgha(c.env, "down", "--volumes", "--yes", "--purge-backups", "--spec", str(c.spec_file))
        remove_scope(engine, SCOPE)


@pytest.fixture
def hardened(made: Cluster, engine: docker.DockerClient) -> Cluster:
    """The cluster, running (brought up again if an earlier test removed it)."""
    if len(engine.containers.list(filters={"label": f"pgha.cluster={SCOPE}"})) < len(LIMITS):
        up(made)
    return made


def state(c: Cluster) -> Path:
    return Path(c.env["PGHA_STATE_DIR"])


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    """A refusal before anything runs: exactly one line on stderr, a non-zero exit."""
    err = res.stderr.strip()
    assert res.returncode != 0 and "Traceback" not in err and len(err.splitlines()) == 1, err[-2000:]
    return err


def last_error_line(res: subprocess.CompletedProcess[str]) -> str:
    """A failure inside a flow (Prefect logs the run's traceback): the CLI's own last line."""
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode != 0 and last.startswith("pgha: error: "), res.stderr[-2000:]
    return last


def sh(engine: docker.DockerClient, c: Cluster, member: str, cmd: str, user: str = "root") -> str:
    r = engine.containers.get(c.container(member)).exec_run(["sh", "-c", cmd], user=user)
    assert r.exit_code == 0, r.output.decode()
    return str(r.output.decode().strip())


def dcs_parameters(engine: docker.DockerClient, c: Cluster) -> dict[str, str]:
    return dict(json.loads(sh(engine, c, "pg-1", "curl -sS --cacert /run/pgha/tls/ca.crt https://localhost:8008/config"))["postgresql"]["parameters"])


def stored_parameters(c: Cluster) -> dict[str, str]:
    return dict(yaml.safe_load((state(c) / SCOPE / "spec.yaml").read_text()).get("postgres_parameters") or {})


def test_containers_run_with_limits_dropped_capabilities_and_no_new_privileges(
        hardened: Cluster, engine: docker.DockerClient) -> None:
    for member, (cpus, memory) in LIMITS.items():
        hc = engine.containers.get(hardened.container(member)).attrs["HostConfig"]
        assert (hc["NanoCpus"], hc["Memory"]) == (cpus, memory), member
        assert hc["CapDrop"] == ["ALL"] and "NET_BIND_SERVICE" not in (hc["CapAdd"] or []), member
        assert "no-new-privileges:true" in hc["SecurityOpt"], member
        assert hc["ReadonlyRootfs"] == (member in READ_ONLY), member
    assert engine.containers.get(hardened.container("pg-1")).attrs["HostConfig"]["ShmSize"] == 256 * MIB
    # HAProxy runs as its own user; PgBouncer and PostgreSQL as postgres.
    assert sh(engine, hardened, "haproxy", "id -un $(awk '/^Uid:/{print $2}' /proc/1/status)") == "haproxy"
    # PostgreSQL's memory follows the 1 GiB limit (25 % / 75 % / 1/16), unless the spec says otherwise.
    shown = sh(engine, hardened, "pg-1", "psql -XAtq -h /var/run/postgresql -c 'show shared_buffers' "
                                         "-c 'show effective_cache_size' -c 'show maintenance_work_mem'", "postgres")
    assert shown.split() == ["256MB", "768MB", "64MB"]


def test_no_secret_in_a_containers_writable_layer(hardened: Cluster, engine: docker.DockerClient) -> None:
    secrets = list(hardened.secrets.values())
    for member in ("pg-1", "haproxy", "pooler", "fencer"):
        ct = engine.containers.get(hardened.container(member))
        changed = [row["Path"] for row in ct.diff() or []]
        assert not [p for p in changed if p.startswith("/run/pgha/")], (member, changed)
        for path in changed:  # every file the layer gained: none holds a password
            out = ct.exec_run(["sh", "-c", f'test -f "{path}" && cat "{path}" || true'], user="root").output
            assert not any(s.encode() in out for s in secrets), (member, path)
    # The secrets are there, on a tmpfs: Patroni's config (passwords) and pgBackRest's keys.
    mounts = sh(engine, hardened, "pg-1", "grep ' /run/pgha ' /proc/mounts")
    assert mounts.startswith("tmpfs /run/pgha tmpfs")
    assert {"patroni.yml", "pgbackrest"} <= set(sh(engine, hardened, "pg-1", "ls /run/pgha").split())


def test_config_set_refuses_owned_parameters_and_memory_beyond_the_limit(
        hardened: Cluster, engine: docker.DockerClient) -> None:
    before = dcs_parameters(engine, hardened)
    err = one_line_error(pgha(hardened.env, "config", "set", "archive_command=/bin/true", "ssl=off", "--scope", SCOPE))
    assert "archive_command cannot be changed" in err and "backup" in err and "(and 1 more)" in err
    err = one_line_error(pgha(hardened.env, "config", "set", "shared_buffers=200GB", "--scope", SCOPE))
    assert "shared_buffers=200GB is more than 50% of the node's memory limit (1024 MiB" in err
    assert dcs_parameters(engine, hardened) == before
    # The spec's own postgres_parameters are checked the same way, before anything changes.
    bad = hardened.spec_file.with_name("bad.yaml")
    bad.write_text(yaml.safe_dump({**SPEC, "postgres_parameters": {"archive_mode": "off"}}))
    err = one_line_error(pgha(hardened.env, "up", "--spec", str(bad)))
    assert "postgres_parameters.archive_mode cannot be set here" in err


def test_config_set_rolls_back_a_member_that_does_not_come_back(
        hardened: Cluster, engine: docker.DockerClient) -> None:
    # Allowed (a library the image lacks is refused before anything changes), but the postmaster
    # refuses to start with more reserved connections than max_connections.
    res = pgha(hardened.env, "config", "set", "superuser_reserved_connections=100000", "--scope", SCOPE)
    err = last_error_line(res)
    assert res.returncode == 4 and err.startswith("pgha: error: rolled back:"), err
    assert str(dcs_parameters(engine, hardened).get("superuser_reserved_connections", "3")) == "3"
    assert "superuser_reserved_connections" not in stored_parameters(hardened)
    st = pgha(hardened.env, "status", "--json", "--scope", SCOPE)
    assert st.returncode == 0 and json.loads(st.stdout)["healthy"], st.stdout


def test_memory_pressure_is_read_from_the_engine(hardened: Cluster) -> None:
    """The audit's `resource.*` rows from the real engine's stats (the adapter and the decision;
    the whole audit flow is exercised by the audit's own tests)."""
    rows = Engine().memory_pressure(SCOPE, time.time() - 3600)
    assert {r.member for r in rows} == set(LIMITS)
    for r in rows:
        assert r.limit_bytes == LIMITS[r.member][1] and r.used_bytes is not None and 0 < r.used_bytes < r.limit_bytes, r
        assert not r.oom_killed and r.oom_events == 0
    spec = load_spec(hardened.spec_file)
    findings = check_resources(rows, spec, spec.audit)
    assert {f.status for f in findings} == {Level.OK}, [f.line() for f in findings]


def test_down_volumes_needs_yes_and_keeps_the_repository_and_its_secrets(
        hardened: Cluster, engine: docker.DockerClient) -> None:
    flt = {"label": f"pgha.cluster={SCOPE}"}
    volumes = sorted(v.name for v in engine.volumes.list(filters=flt))
    containers = sorted(str(c.name) for c in engine.containers.list(all=True, filters=flt))
    err = one_line_error(pgha(hardened.env, "down", "--volumes", "--spec", str(hardened.spec_file)))
    assert "--yes" in err and "nothing was removed" in err
    assert sorted(v.name for v in engine.volumes.list(filters=flt)) == volumes
    assert sorted(str(c.name) for c in engine.containers.list(all=True, filters=flt)) == containers
    assert (state(hardened) / SCOPE / "secrets.json").exists()

    res = pgha(hardened.env, "down", "--volumes", "--yes", "--spec", str(hardened.spec_file))
    assert res.returncode == 0, res.stderr
    assert engine.containers.list(all=True, filters=flt) == []
    assert [v.name for v in engine.volumes.list(filters=flt)] == [f"{SCOPE}-pgbackrest"]
    assert not (state(hardened) / SCOPE).exists()
    aside = sorted(state(hardened).glob(f"{SCOPE}.removed-*"))
    assert len(aside) == 1 and (aside[0] / "secrets.json").exists(), aside
    assert f"moved to {aside[0]}" in res.stdout

    # A new cluster over the kept repository is refused, clearly, before anything is created.
    err = last_error_line(pgha(hardened.env, "up", "--spec", str(hardened.spec_file)))
    assert f"{SCOPE}-pgbackrest" in err and str(aside[0]) in err
    assert engine.containers.list(all=True, filters=flt) == []

    res = pgha(hardened.env, "down", "--volumes", "--purge-backups", "--yes", "--spec", str(hardened.spec_file))
    assert res.returncode == 0, res.stderr
    assert engine.volumes.list(filters=flt) == []
    assert not list(state(hardened).glob(f"{SCOPE}*"))
