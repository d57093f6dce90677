"""Bad specs and states are refused in one line, before anything is created."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import assert_refused, pgha

SCOPE = "pgha-it-bad"
PORTS = {"rw": 25452, "ro": 25453, "stats": 28424}


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"nodes": 0}, "nodes: Input should be greater than or equal to 1"),
        ({"etcd_members": 2}, "etcd_members: must be odd"),
        ({"etcd_members": 0}, "etcd_members: Input should be greater than or equal to 1"),
        ({"ports": {"rw": 25452, "ro": 25452, "stats": 28424}}, "are both 25452"),
        ({"scope": "Not_A_Name"}, "is not a valid scope"),
        ({"replicas": 2}, "replicas: unknown key"),
        ({"image": "pgha/does-not-exist:0"}, "image pgha/does-not-exist:0 (spec key image) does not exist"),
        ({"backup": {"s3": {"bucket": "b-1", "endpoint": "minio:9000\nrepo1-cipher-type=none"}}},
         "backup.s3.endpoint holds the control character U+000A"),
        ({"hosts": [{"name": f"h{i}", "docker": f"ssh://ops@h{i}", "address": f"10.0.0.1{i}"} for i in (1, 2, 3)],
          "nodes": 3, "etcd_members": 3, "backup": {"enabled": False}, "tls": {"enabled": False}},
         "add 'plaintext-between-hosts' to insecure:"),
    ],
)
def test_bad_spec_creates_nothing(patch: dict[str, object], fragment: str, base_env: dict[str, str],
                                  tmp_path: Path, engine: docker.DockerClient) -> None:
    spec = {"scope": SCOPE, "nodes": 1, "etcd_members": 1, "ports": PORTS, **patch, "pooler": {"enabled": False}}
    assert_refused(base_env, tmp_path, engine, spec, fragment)


def test_port_in_use_on_host_creates_nothing(busy_port: int, base_env: dict[str, str], tmp_path: Path,
                                             engine: docker.DockerClient) -> None:
    spec = {"scope": SCOPE, "nodes": 1, "etcd_members": 1, "ports": {**PORTS, "ro": busy_port}, "pooler": {"enabled": False}}
    assert_refused(base_env, tmp_path, engine, spec, f"port {busy_port} (ports.ro) is already in use")


def test_missing_spec_file(base_env: dict[str, str], tmp_path: Path) -> None:
    res = pgha(base_env, "up", "--spec", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2
    assert res.stderr.strip().startswith("pgha: error: cannot read spec")
