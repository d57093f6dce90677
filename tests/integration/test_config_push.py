"""Many hosts' config push on the real engine, without a lab: a one-host spec whose host is this
machine's engine socket (so its `Engine` is a host's: `config_volumes`), one hardened sleeping
container standing in for its node pg-1.

What the lab files prove end to end (a cluster over hosts whose members get their files only
this way), this file proves at the level of the engine: the files land root-owned 0600 in a
volume mounted read-only, an unchanged push creates no helper, a changed one reaches the running
container and removes what was removed, no helper container is left, and `down` (without
--volumes) removes the config volume. `sync_config(spec, member)` is the entry point used, as
the flows use it. Scope `pgha-it-push`, ports 27100-27102 (in the spec, never bound).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from stack.spec import ClusterSpec, parse_spec
from stack.topology import ContainerDef, hardening
from tasks import config_volume as cv
from tasks import images
from tasks.docker_engine import Engine, Outcome
from tasks.docker_hosts import engines, sync_config
from tasks.host.state import config_dir, write_private
from tests.integration.conftest import remove_scope

SCOPE = "pgha-it-push"
NAME = f"{SCOPE}-pg-1"
SECRET = "pw-" + "x" * 20
SPEC = parse_spec({"scope": SCOPE, "nodes": 1, "etcd_members": 1, "allow_unsafe_placement": True,
                   "backup": {"enabled": False}, "fencing": False, "ports": {"rw": 27100, "ro": 27101, "stats": 27102},
                   "hosts": [{"name": "h1", "docker": "unix:///var/run/docker.sock", "address": "127.0.0.1"}]},
                  "test_config_push")


@pytest.fixture(scope="module")
def host(engine: docker.DockerClient, base_env: dict[str, str]) -> Iterator[Engine]:
    remove_scope(engine, SCOPE)
    try:
        e = engines(SPEC).of("pg-1")
        assert e.config_volumes and e.name == "h1"
        yield e
    finally:
        remove_scope(engine, SCOPE)


def _member(conf: Path, image: str) -> ContainerDef:
    spec = ClusterSpec(scope=SCOPE)
    return ContainerDef(scope=SCOPE, role="patroni", member="pg-1", name=NAME, image=image, network=f"{SCOPE}-net",
                        command=["600"], entrypoint=["sleep"], config_hash="h1", config_dir=str(conf),
                        hardening=hardening(spec, "patroni"))  # cap_drop ALL, read-only root: as a member


def _sh(engine: docker.DockerClient, script: str) -> tuple[int, str]:
    r = engine.containers.get(NAME).exec_run(["sh", "-c", script], user="root")
    return r.exit_code, r.output.decode()


def _helpers_created(engine: docker.DockerClient, since: float) -> int:
    evs = engine.events(since=int(since), until=int(time.time()) + 1, decode=True,
                        filters={"event": "create", "label": f"{cv.LABEL_ETC}={NAME}", "type": "container"})
    return sum(1 for _ in evs)


def test_files_are_pushed_into_a_read_only_volume_and_synced(host: Engine, engine: docker.DockerClient) -> None:
    image, _ = images.ensure_image(ClusterSpec())
    conf = config_dir(SCOPE, "pg-1")
    assert NAME == SPEC.container("pg-1")
    write_private(conf / "patroni.yml", f"password: {SECRET}\n")
    write_private(conf / "tls" / "ca.crt", "CA\n")
    write_private(conf / "pgbackrest" / "backup.conf", "[global]\n")
    host.ensure_network(SCOPE, f"{SCOPE}-net")
    d = _member(conf, image)
    t0 = time.time()
    assert host.ensure_container(d) == Outcome.CREATED

    # Root-owned 0600 files and 0700 directories, the state dir's layout, in a read-only volume.
    code, out = _sh(engine, "touch /etc/pgha/x")
    assert code != 0 and "Read-only file system" in out, out
    code, out = _sh(engine, "stat -c '%U:%G %a %n' /etc/pgha/patroni.yml /etc/pgha/tls /etc/pgha/tls/ca.crt "
                            "/etc/pgha/pgbackrest/backup.conf; cat /etc/pgha/patroni.yml")
    assert code == 0 and out.splitlines() == ["root:root 600 /etc/pgha/patroni.yml", "root:root 700 /etc/pgha/tls",
                                    "root:root 600 /etc/pgha/tls/ca.crt",
                                    "root:root 600 /etc/pgha/pgbackrest/backup.conf", f"password: {SECRET}"], out
    mounts = engine.containers.get(NAME).attrs["Mounts"]
    etc = [m for m in mounts if m["Destination"] == "/etc/pgha"]
    assert [(m["Type"], m["Name"], m["RW"]) for m in etc] == [("volume", cv.volume_name(NAME), False)]
    vol = engine.volumes.get(cv.volume_name(NAME))
    assert vol.attrs["Labels"] == {"pgha.cluster": SCOPE, "pgha.role": "patroni", "pgha.member": "pg-1",
                                   cv.LABEL_ETC: NAME}
    # The helper made the push and is gone; the secret is in no container's definition.
    assert _helpers_created(engine, t0) == 1
    assert not engine.containers.list(all=True, filters={"label": cv.LABEL_ETC})
    assert SECRET not in str(engine.api.inspect_container(NAME))

    # Unchanged: read the manifest through the member's mount, no helper.
    t1 = time.time()
    assert host.ensure_container(d) == Outcome.UNCHANGED
    assert sync_config(SPEC, "pg-1") == []
    assert _helpers_created(engine, t1) == 0

    # A changed file reaches the running member, a removed one goes from the volume.
    write_private(conf / "patroni.yml", "password: rotated\n")
    (conf / "pgbackrest" / "backup.conf").unlink()
    t2 = time.time()
    assert sync_config(SPEC, "pg-1") == ["h1"]
    code, out = _sh(engine, "cat /etc/pgha/patroni.yml; ls /etc/pgha/pgbackrest")
    assert (code, out) == (0, "password: rotated\n"), out
    assert _helpers_created(engine, t2) == 1
    assert not engine.containers.list(all=True, filters={"label": cv.LABEL_ETC})

    # `down` without --volumes still removes the config volume (no data in it), not other volumes.
    engine.volumes.create(f"{SCOPE}-data", labels={"pgha.cluster": SCOPE, "pgha.role": "patroni",
                                                   "pgha.member": "pg-1"})
    removed = host.remove_labelled(SCOPE)
    assert removed["containers"] == [NAME] and removed["volumes"] == [cv.volume_name(NAME)]
    assert [v.name for v in engine.volumes.list(filters={"label": f"pgha.cluster={SCOPE}"})] == [f"{SCOPE}-data"]
    assert sync_config(SPEC, "pg-1") == []  # no container: nothing to sync (ensure_container fills it)
