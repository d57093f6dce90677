"""Rolling changes on one live 3-node PostgreSQL 15 cluster: a real minor upgrade (bookworm's
main image -> its security image) under a write probe, refusals, a failing upgrade rolled back,
an interrupted upgrade resumed, and `config set` of a restart-requiring parameter.

The two images are built from the same build files by the CLI (`pgha images build`, with
`--updates security` for the second), so a fresh machine builds them too. Their PostgreSQL
versions are read from the images themselves, so the next Debian point release changes nothing
here. Each test starts from the state it needs (`settle`), whatever ran before it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import psycopg
import pytest

from stack.spec import parse_spec
from tasks.host.secrets import load_or_create
from tests.integration.conftest import ROOT, Cluster, pgha, remove_scope, running_cluster, up
from tests.support.traffic import Traffic, measured

SCOPE = "pgha-it-up1"
SPEC = {"scope": SCOPE, "nodes": 3, "etcd_members": 1, "postgres_version": 15,
        "ports": {"rw": 25520, "ro": 25521, "stats": 28520}, "pooler": {"enabled": False}}
CEILING_S = 15.0  # generous: a switchover measures ~1-2 s here (benchmarks/upgrade.py)
TEST_REPO = "pgha-it-up/node"


def build(env: dict[str, str], spec_file: Path, *extra: str) -> str:
    res = pgha(env, "images", "build", "--spec", str(spec_file), *extra, timeout=1800)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip().splitlines()[-1]


def derived(engine: docker.DockerClient, base: str, name: str, body: str) -> str:
    """A small test image FROM a node image (never pushed; removed at the end)."""
    tag = f"{TEST_REPO}:{name}"
    engine.images.build(fileobj=io.BytesIO(f"FROM {base}\n{body}\n".encode()), tag=tag, rm=True, forcerm=True)
    return tag


@pytest.fixture(scope="module")
def images(engine: docker.DockerClient, base_env: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    spec_file = tmp_path_factory.mktemp("upimg") / "spec.yaml"
    spec_file.write_text(json.dumps({"postgres_version": 15}))
    main = build(base_env, spec_file)
    security = build(base_env, spec_file, "--updates", "security")
    assert main != security
    broken = derived(engine, main, "broken", (
        "RUN cd /usr/lib/postgresql/15/bin && mv postgres postgres.real && "
        "printf '#!/bin/sh\\ncase \"$1\" in --version|-V|--describe-config) exec \"$0.real\" \"$@\";; esac\\n"
        "echo broken on purpose >&2; exit 1\\n' > postgres && chmod 0755 postgres"))
    other_major = derived(engine, main, "other-major", "ENV PG_MAJOR=17")
    yield {"main": main, "security": security, "broken": broken, "other_major": other_major}
    for tag in (broken, other_major):
        try:
            engine.images.remove(tag, force=True)
        except docker.errors.APIError:
            pass


def image_version(engine: docker.DockerClient, tag: str) -> int:
    """server_version_num of the PostgreSQL 15 an image carries (`postgres --version`)."""
    out = engine.containers.run(tag, entrypoint=["/usr/lib/postgresql/15/bin/postgres"], command=["--version"],
                                user="postgres", remove=True).decode()
    found = re.search(r"\(PostgreSQL\) (\d+)\.(\d+)", out)
    assert found, out
    return int(found.group(1)) * 10000 + int(found.group(2))


def dotted(num: int) -> str:
    return f"{num // 10000}.{num % 10000}"


@pytest.fixture(scope="module")
def versions(engine: docker.DockerClient, images: dict[str, str]) -> dict[str, int]:
    """PostgreSQL versions of the main and security images: same major, the security one newer."""
    v = {k: image_version(engine, images[k]) for k in ("main", "security")}
    assert v["main"] // 10000 == v["security"] // 10000 == 15, v
    assert v["security"] > v["main"], f"the security image is not newer than the main one: {v}"
    return v


@pytest.fixture(scope="module")
def cluster(engine: docker.DockerClient, base_env: dict[str, str], images: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("up1"), SPEC) as c:
        yield c



def status(c: Cluster) -> tuple[int, dict[str, object]]:
    res = pgha(c.env, "status", "--json", "--scope", c.scope)
    return res.returncode, json.loads(res.stdout)


def node_images(engine: docker.DockerClient, c: Cluster) -> dict[str, str]:
    return {m: engine.containers.get(c.container(m)).attrs["Config"]["Image"] for m in ("pg-1", "pg-2", "pg-3")}


def server_versions(engine: docker.DockerClient, c: Cluster) -> dict[str, int]:
    out = {}
    for m in ("pg-1", "pg-2", "pg-3"):
        r = engine.containers.get(c.container(m)).exec_run(
            ["psql", "-XAtq", "-h", "/var/run/postgresql", "-c", "show server_version_num"], user="postgres")
        assert r.exit_code == 0, r.output
        out[m] = int(r.output.decode().strip())
    return out


def traffic(c: Cluster):  # noqa: ANN201 - a context manager yielding Traffic
    secrets = load_or_create(Path(c.env["PGHA_STATE_DIR"]) / c.scope / "secrets.json", env={})
    return measured(parse_spec(c.spec), secrets)


def settle(engine: docker.DockerClient, c: Cluster, images: dict[str, str], allowed: tuple[str, ...]) -> str:
    """Make the cluster healthy with every node on one of the `allowed` images; return which.

    When an earlier test (or a failed one) left it otherwise, the cluster is made afresh from
    its spec (nodes on the main image), so no test depends on what ran before it.
    """
    assert "main" in allowed  # a fresh cluster runs the main image
    on = set(node_images(engine, c).values())
    pending = (Path(c.env["PGHA_STATE_DIR"]) / c.scope / "upgrade-pending.json").exists()
    key = next((k for k in allowed if on == {images[k]}), None)
    if key is not None and not pending and status(c)[0] == 0:
        return key
    remove_scope(engine, c.scope)
    shutil.rmtree(Path(c.env["PGHA_STATE_DIR"]) / c.scope, ignore_errors=True)
    up(c)
    assert set(node_images(engine, c).values()) == {images["main"]}
    return "main"


@pytest.fixture
def on_main(engine: docker.DockerClient, cluster: Cluster, images: dict[str, str]) -> Cluster:
    """The cluster healthy, every node on the main image."""
    settle(engine, cluster, images, ("main",))
    return cluster


@pytest.fixture
def settled(engine: docker.DockerClient, cluster: Cluster, images: dict[str, str]) -> str:
    """The cluster healthy, every node on the same one of the two images; returns which ("main"/"security")."""
    return settle(engine, cluster, images, ("main", "security"))


def check_traffic(t: Traffic) -> None:
    assert t.lost == [], f"acknowledged writes lost: {t.lost[:10]}"
    assert t.writes_acked > 50
    assert t.write_gap_s < CEILING_S, t
    assert t.min_ro_up >= 1, f"the R/O port lost every replica at some point: {t}"


def test_refusals_change_nothing(engine: docker.DockerClient, on_main: Cluster, images: dict[str, str]) -> None:
    cluster = on_main
    before = node_images(engine, cluster)
    res = pgha(cluster.env, "upgrade", "--scope", cluster.scope, "--image", "pgha/node:does-not-exist")
    assert res.returncode == 3 and "does not exist locally" in res.stderr.strip().splitlines()[-1]
    res = pgha(cluster.env, "upgrade", "--scope", cluster.scope, "--image", images["other_major"])
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 3 and "PostgreSQL 17" in last and "major" in last, last
    res = pgha(cluster.env, "upgrade", "--scope", cluster.scope, "--image", images["main"], "--node-timeout", "1")
    assert res.returncode == 2 and "--node-timeout" in res.stderr
    # A long-running transaction blocks the upgrade (threshold lowered to 1 s for the test).
    strict = cluster.spec_file.with_name("strict.yaml")
    strict.write_text(json.dumps({**SPEC, "upgrade": {"max_transaction_age_s": 1}}))
    secrets = cluster.secrets
    with psycopg.connect(host="127.0.0.1", port=cluster.port("rw"), user="postgres", password=secrets["superuser"],
                         dbname="postgres", connect_timeout=5) as conn:
        conn.execute("select txid_current()")  # a transaction stays open until the block ends
        time.sleep(2)
        res = pgha(cluster.env, "upgrade", "--spec", str(strict), "--image", images["security"])
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 3 and "transaction has been open" in last, last
    # Checked against the server's own pg_settings (syntax errors are unit-tested).
    for bad, why in (("port=6000", "Patroni sets it"), ("max_connections=lots", "integer"),
                     ("no_such_setting=1", "not a PostgreSQL parameter"), ("wal_level=banana", "must be one of")):
        res = pgha(cluster.env, "config", "set", bad, "--scope", cluster.scope)
        assert res.returncode == 2, (bad, res.stderr[-500:])
        assert why in res.stderr.strip().splitlines()[-1], (bad, res.stderr[-500:])
    assert node_images(engine, cluster) == before


def test_failing_upgrade_is_rolled_back_and_cluster_stays_healthy(engine: docker.DockerClient, on_main: Cluster,
                                                                 images: dict[str, str],
                                                                 versions: dict[str, int]) -> None:
    cluster = on_main
    with traffic(cluster) as t:
        res = pgha(cluster.env, "upgrade", "--scope", cluster.scope, "--image", images["broken"],
                   "--node-timeout", "20")
    assert res.returncode == 1, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert "rolled back" in last and images["broken"] in last, last
    check_traffic(t)
    assert set(node_images(engine, cluster).values()) == {images["main"]}
    assert set(server_versions(engine, cluster).values()) == {versions["main"]}
    code, st = status(cluster)
    assert code == 0, st["problems"]
    assert not (Path(cluster.env["PGHA_STATE_DIR"]) / cluster.scope / "upgrade-pending.json").exists()


def test_real_minor_upgrade_without_downtime(engine: docker.DockerClient, on_main: Cluster,
                                             images: dict[str, str], versions: dict[str, int]) -> None:
    cluster = on_main
    assert set(server_versions(engine, cluster).values()) == {versions["main"]}
    with traffic(cluster) as t:
        # --updates security: the CLI resolves (or builds) the spec's security image itself.
        res = pgha(cluster.env, "upgrade", "--scope", cluster.scope, "--updates", "security", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout)
    assert r["target"] == images["security"]
    check_traffic(t)
    after = server_versions(engine, cluster)
    assert set(after.values()) == {versions["security"]}
    assert all(v > versions["main"] for v in after.values()), after  # newer than before, on every node
    assert set(node_images(engine, cluster).values()) == {images["security"]}
    assert {row["version before"] for row in r["rows"]} == {dotted(versions["main"])}
    assert {row["version after"] for row in r["rows"]} == {dotted(versions["security"])}
    assert any("switchover" in s for s in r["steps"])
    code, st = status(cluster)
    assert code == 0, st["problems"]
    stored = (Path(cluster.env["PGHA_STATE_DIR"]) / cluster.scope / "spec.yaml").read_text()
    assert f"node_image: {images['security']}" in stored
    # `pgha up` from the stored spec keeps the upgraded nodes as they are (no downgrade).
    ids = {m: engine.containers.get(cluster.container(m)).id for m in ("pg-1", "pg-2", "pg-3")}
    res = pgha(cluster.env, "up", "--spec", str(Path(cluster.env["PGHA_STATE_DIR"]) / cluster.scope / "spec.yaml"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "nothing changed" in res.stdout
    assert {m: engine.containers.get(cluster.container(m)).id for m in ids} == ids
    # The original spec file (no upgrade.node_image) would put every node back on the main image at
    # once: `up` refuses that and points at `pgha upgrade`.
    res = pgha(cluster.env, "up", "--spec", str(cluster.spec_file))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "never swaps the image" in res.stderr and "pgha upgrade --image" in res.stderr
    assert "Traceback" not in res.stderr
    assert {m: engine.containers.get(cluster.container(m)).id for m in ids} == ids


@pytest.mark.timing_sensitive
def test_interrupted_upgrade_resumes_without_touching_done_nodes(engine: docker.DockerClient, cluster: Cluster,
                                                                 images: dict[str, str], versions: dict[str, int],
                                                                 settled: str) -> None:
    # From whichever image the nodes run to the other one: a minor change either way.
    target_key = "security" if settled == "main" else "main"
    target = images[target_key]
    proc = subprocess.Popen([sys.executable, "-m", "cli", "upgrade", "--scope", cluster.scope, "--image", target],
                            cwd=ROOT, env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first: str | None = None
    try:
        deadline = time.monotonic() + 180
        while first is None:
            assert proc.poll() is None, "the upgrade ended before it could be interrupted"
            assert time.monotonic() < deadline, "no node reached the target image"
            first = next((m for m, img in node_images(engine, cluster).items() if img == target), None)
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its Prefect API, mid-flight
        proc.wait(10)
    first_id = engine.containers.get(cluster.container(first)).id
    assert (Path(cluster.env["PGHA_STATE_DIR"]) / cluster.scope / "upgrade-pending.json").exists()
    with traffic(cluster) as t:
        res = pgha(cluster.env, "upgrade", "--scope", cluster.scope, "--image", target, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout)
    check_traffic(t)
    assert first in r["already"], r
    assert engine.containers.get(cluster.container(first)).id == first_id, "a done node was upgraded twice"
    assert set(node_images(engine, cluster).values()) == {target}
    assert set(server_versions(engine, cluster).values()) == {versions[target_key]}
    code, st = status(cluster)
    assert code == 0, st["problems"]


@pytest.mark.usefixtures("settled")
def test_config_set_restart_parameter_rolls_through_every_member(engine: docker.DockerClient,
                                                                 cluster: Cluster) -> None:
    with traffic(cluster) as t:
        res = pgha(cluster.env, "config", "set", "max_connections=150", "work_mem=8MB", "--scope", cluster.scope,
                   "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout)
    check_traffic(t)
    assert r["needs_restart"] == {"max_connections": True, "work_mem": False}
    assert sorted(r["restarted"]) == ["pg-1", "pg-2", "pg-3"]
    for m in ("pg-1", "pg-2", "pg-3"):
        ct = engine.containers.get(cluster.container(m))
        out = ct.exec_run(["psql", "-XAtq", "-h", "/var/run/postgresql", "-c",
                           "select current_setting('max_connections') || ' ' || current_setting('work_mem')"],
                          user="postgres").output.decode().strip()
        assert out == "150 8MB", (m, out)
        st = json.loads(ct.exec_run(["curl", "-s", "--cacert", "/etc/pgha/tls/ca.crt",
                                     "https://localhost:8008/patroni"]).output)
        assert not st.get("pending_restart"), (m, st)
    stored = (Path(cluster.env["PGHA_STATE_DIR"]) / cluster.scope / "spec.yaml").read_text()
    assert "max_connections: '150'" in stored
