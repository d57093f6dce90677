"""`pgha config set` by allowlist on a live cluster, and the confirmation of a destructive verb.

One module-scoped 1 etcd / 2 node cluster with the pooler, backups off (scope `pgha-it-tc`,
ports 29100-29103): pgha's own connections require the server to prove SCRAM (`require_auth`),
through HAProxy (TLS verify-full too) and to the pooler;
a preload library the image does not carry is refused with nothing changed; a change the
allowlist accepts but after which no session opens (`session_preload_libraries=sepgsql`: the
library exists, and refuses to load outside shared_preload_libraries) is rolled back; while
sessions cannot open `pgha status` says unhealthy and `config reset` repairs it; `reinit`
without --yes changes nothing. (A deployment run handed a spec: `test_prefect_hardening.py`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from flows.config import validate
from stack.errors import UsageError
from stack.spec import load_spec
from stack.wait import wait_for
from tasks import patroni, postgres
from tasks.cluster_health import cluster_status
from tasks.host.secrets import cluster_secrets
from tests.integration.conftest import Cluster, pgha, running_cluster

pytestmark = pytest.mark.integration

SCOPE = "pgha-it-tc"
SPEC = {"scope": SCOPE, "nodes": 2, "etcd_members": 1, "backup": {"enabled": False}, "pooler": {"enabled": True},
        "ports": {"rw": 29100, "ro": 29101, "stats": 29102, "pool": 29103}}


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
    # The same check the CLI and the flow make, in-process (no CLI start-up per case).
    spec = load_spec(cluster.spec_file)
    for assignment, needle in (({"dynamic_library_path": "/tmp"}, "any directory"),
                               ({"myapp.flag": "on"}, "no library the server preloads"),
                               ({"log_directory": "/tmp"}, "wherever the postgres user can write"),
                               ({"shared_preload_libraries": "/tmp/evil"}, "not a bare library name"),
                               ({"zero_damaged_pages": "on"}, "developer options")):
        with pytest.raises(UsageError, match=needle):
            validate(spec, assignment)
    assert validate(spec, {"session_preload_libraries": "auto_explain", "work_mem": "8MB"}) == {
        "session_preload_libraries": False, "work_mem": False}
    assert _psql(engine, cluster, "show local_preload_libraries") == (0, "")


def test_a_change_after_which_no_session_opens_is_rolled_back(cluster: Cluster, engine: docker.DockerClient) -> None:
    # sepgsql is in the image and passes the allowlist, but refuses to load in a session.
    code, out, err = _cli(cluster, "config", "set", "session_preload_libraries=sepgsql")
    assert code == 4, out + err
    assert "rolled back" in err and "new session through the R/W port does not open" in err, err
    assert _psql(engine, cluster, "show session_preload_libraries") == (0, "")
    assert cluster_status(load_spec(cluster.spec_file)).healthy


def test_status_is_unhealthy_while_no_session_opens_and_reset_repairs_it(cluster: Cluster) -> None:
    # Put the cluster in that state behind pgha's back (as `patronictl edit-config` would).
    spec = load_spec(cluster.spec_file)
    patroni.edit_parameters(spec, {"session_preload_libraries": "sepgsql"})
    try:
        wait_for("status to see that no session opens", lambda: cluster_status(spec),
                 lambda st: any("no new session opens through the R/W port" in p for p in st.problems),
                 timeout=60, interval=1)
        code, out, err = _cli(cluster, "status")
        assert code == 1 and "no new session opens through the R/W port" in out + err, out + err
        code, out, err = _cli(cluster, "config", "reset", "session_preload_libraries")
        assert code == 0, out + err
        assert "reset: session_preload_libraries" in out
    finally:
        patroni.edit_parameters(spec, {"session_preload_libraries": None})  # type: ignore[dict-item]
    assert cluster_status(spec).healthy
    assert "session_preload_libraries" not in load_spec(Path(cluster.env["PGHA_STATE_DIR"]) / SCOPE / "spec.yaml"
                                                        ).postgres_parameters


def test_pgha_s_connections_require_the_server_to_prove_scram(cluster: Cluster) -> None:
    spec = load_spec(cluster.spec_file)
    secrets = cluster_secrets(spec.scope)
    for pooled in (False, True):
        with postgres.connect(spec, secrets, pooled=pooled) as conn:
            assert "require_auth=scram-sha-256" in conn.info.dsn, conn.info.dsn
            assert conn.execute("select 1").fetchone() == (1,)
    assert "pooler" in cluster_status(spec).endpoints  # the admin console answered (require_auth too)


def test_reinit_without_yes_changes_nothing(cluster: Cluster) -> None:
    view = patroni.cluster_view(load_spec(cluster.spec_file))  # a replica: earlier tests may have moved the leader
    replica = next(m.name for m in view.members if m.name != (view.leader().name if view.leader() else None))
    code, out, err = _cli(cluster, "reinit", replica)
    assert code == 2 and "add --yes" in err, out + err
