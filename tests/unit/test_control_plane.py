"""The control plane's container definitions (pure: no engine) and the control image's inputs."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from tasks import control_image as ci
from tasks import control_plane as cp
from tasks import prefect_server as ps

SECRET = "pgha:" + "s3cr3t-" * 6


@pytest.fixture
def plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> cp.ControlPlane:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PGHA_SERVER_PORT", "24999")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", SECRET)  # in the caller's environment: must not travel
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", SECRET)
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS", "3")
    monkeypatch.setenv("PGHA_HEARTBEAT_URL", "https://hc-ping.com/uuid")
    monkeypatch.setenv("PGHA_ALERT_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/x")
    return ps.plane("pgha/control:test")  # type: ignore[no-any-return]


def test_no_secret_in_any_container_definition(plane: cp.ControlPlane) -> None:
    for d in (plane.server_def(), plane.worker_def()):
        text = json.dumps(asdict(d)) + json.dumps(plane.labels(d.role))
        assert "s3cr3t" not in text and "hooks.slack.com" not in text
        assert ("bind", str(plane.auth_file), cp.AUTH_IN_CONTAINER, True) in d.mounts  # read-only mount


def test_server_and_worker_definitions(plane: cp.ControlPlane) -> None:
    server, worker = plane.server_def(), plane.worker_def()
    assert server.environment["PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS"] == "3"
    assert server.environment["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"] == "events,flow_runs"
    assert ("volume", plane.volume, cp.DB_IN_CONTAINER, False) in server.mounts
    assert "--port" in server.command and "24999" in server.command
    env = worker.environment
    assert env["PGHA_HEARTBEAT_URL"] == "https://hc-ping.com/uuid"
    assert env["PGHA_HOME"] == str(ps.ROOT) and env["PGHA_STATE_DIR"] == str(plane.state_dir)
    targets = {m[2]: m[1] for m in worker.mounts}
    assert targets[str(plane.state_dir)] == str(plane.state_dir) and targets[str(ps.ROOT)] == str(ps.ROOT)
    assert cp.DOCKER_SOCKET in targets
    assert plane.labels(cp.SERVER_ROLE)[cp.LABEL_PORT] == "24999"


def test_two_state_dirs_or_ports_never_share_a_container(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    keys = {cp.key(a, 4200), cp.key(b, 4200), cp.key(a, 4201)}
    assert len(keys) == 3


def test_engine_socket_follows_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/other/docker.sock")
    assert cp.engine_socket() == "/tmp/other/docker.sock"
    monkeypatch.delenv("DOCKER_HOST")
    assert cp.engine_socket() == "/var/run/docker.sock"


def test_config_hash_changes_with_the_definition(plane: cp.ControlPlane) -> None:
    d = plane.server_def()
    assert cp.config_hash(d) == cp.config_hash(plane.server_def())
    d.environment["X"] = "1"
    assert cp.config_hash(d) != cp.config_hash(plane.server_def())


def test_control_image_closure_is_pinned_and_excludes_pgha() -> None:
    dists, missing = ci.closure()
    names = {d.metadata["Name"].lower() for d in dists}
    assert "prefect" in names and "docker" in names and "pgha" not in names
    tag = ci.control_tag("pgha/base:bookworm", ci._pins(dists, missing))
    assert tag.startswith(ci.REPO + ":py") and tag == ci.control_tag("pgha/base:bookworm", ci._pins(dists, missing))
    assert tag != ci.control_tag("pgha/base:bookworm", ci._pins(dists, [*missing, "extra==1"]))
