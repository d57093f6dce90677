"""`pgha config set` by allowlist on a live cluster, and the confirmation of a destructive verb.

One module-scoped 1 etcd / 2 node cluster, backups off (scope `pgha-it-tc`, ports 29100-29102):
a preload library the image does not carry is refused with nothing changed; a change the
allowlist accepts but after which no session opens (`session_preload_libraries=sepgsql`: the
library exists, and refuses to load outside shared_preload_libraries) is rolled back; while
sessions cannot open `pgha status` says unhealthy and `config reset` repairs it; `reinit`
without --yes changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from stack.spec import load_spec
from stack.wait import wait_for
from tasks import patroni
from tests.integration.conftest import Cluster, pgha, running_cluster

pytestmark = pytest.mark.integration

SCOPE = "pgha-it-tc"
SPEC = {"scope": SCOPE, "nodes": 2, "etcd_members": 1, "backup": {"enabled": False},
        "ports": {"rw": 29100, "ro": 29101, "stats": 29102}}


@pytest.fixture(scope="module")
def cluster(engine: docker.DockerClient, base_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("tc"), SPEC) as c:
        yield c


def _cli(c: Cluster, *args: str) -> tuple[int, str, str]:
    r = pgha(c.env, *args, "--scope", c.scope, timeout=600)
    return r.returncode, r.stdout, r.stderr


def _psql(engine: docker.DockerClient, c: Cluster, sql: str) -> tuple[int, str]:
    r = engine.containers.get(c.container("pg-1")).exec_run(
        ["psql", "-X", "-qAt", "-h", "/var/run/postgresql", "-d", "postgres", "-c", sql], user="postgres")
    return r.exit_code, r.output.decode().strip()


def test_a_library_the_image_does_not_carry_is_refused(cluster: Cluster, engine: docker.DockerClient) -> None:
    code, out, err = _cli(cluster, "config", "set", "local_preload_libraries=x", "--no-restart")
    assert code == 2, out + err
    line = err.strip().splitlines()
    assert len(line) == 1 and "local_preload_libraries=x refused" in line[0] and "$libdir/plugins" in line[0], err
    code, out, err = _cli(cluster, "config", "set", "dynamic_library_path=/tmp")
    assert code == 2 and "any directory" in err, out + err
    code, out, err = _cli(cluster, "config", "set", "myapp.flag=on")
    assert code == 2 and "no library the server preloads" in err, out + err
    assert _psql(engine, cluster, "show local_preload_libraries") == (0, "")


def test_a_change_after_which_no_session_opens_is_rolled_back(cluster: Cluster, engine: docker.DockerClient) -> None:
    code, out, err = _cli(cluster, "config", "set", "session_preload_libraries=sepgsql")
    assert code == 4, out + err
    assert "rolled back" in err and "new session through the R/W port does not open" in err, err
    assert _psql(engine, cluster, "show session_preload_libraries") == (0, "")
    code, out, err = _cli(cluster, "status")
    assert code == 0 and "healthy" in out.lower(), out + err


def test_status_is_unhealthy_while_no_session_opens_and_reset_repairs_it(cluster: Cluster) -> None:
    # Put the cluster in that state behind pgha's back (as `patronictl edit-config` would).
    spec = load_spec(cluster.spec_file)
    patroni.edit_parameters(spec, {"session_preload_libraries": "sepgsql"})
    try:
        st = wait_for("status to see that no session opens", lambda: _cli(cluster, "status"),
                      lambda r: "no new session opens through the R/W port" in r[1] + r[2], timeout=60, interval=1)
        assert st[0] != 0, st
        code, out, err = _cli(cluster, "config", "reset", "session_preload_libraries")
        assert code == 0, out + err
        assert "reset: session_preload_libraries" in out
    finally:
        patroni.edit_parameters(spec, {"session_preload_libraries": None})  # type: ignore[dict-item]
    code, out, err = _cli(cluster, "status")
    assert code == 0, out + err
    assert "session_preload_libraries" not in load_spec(Path(cluster.env["PGHA_STATE_DIR"]) / SCOPE / "spec.yaml"
                                                        ).postgres_parameters


def test_reinit_without_yes_changes_nothing(cluster: Cluster) -> None:
    code, out, err = _cli(cluster, "reinit", "pg-2")
    assert code == 2 and "add --yes" in err, out + err
