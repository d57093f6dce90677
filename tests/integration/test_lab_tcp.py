"""A cluster whose engines are reached over tcp:// with mutual TLS, in a 2-host lab (`--engine tcp`).

Lab `ittcp` (2 simulated hosts), scope `pgha-it-tcp`: each lab host's dockerd also listens on
2376 with `--tlsverify`, published on 127.0.0.1 only; the spec the lab writes names those
tcp:// engines and pgha's client certificate, and `pgha up` runs the cluster through them.
1 etcd member (on h1) and 2 Patroni nodes, one per host (`allow_unsafe_placement`: surviving a
host is test_lab.py's subject, not this file's). One lab and one cluster for the file; every
test only reads, and the bad-spec test creates nothing.

Ports: 27200-27299 (lab hosts' R/W and R/O on 127.0.0.1, then their engines' TLS ports).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
import yaml
from docker.tls import TLSConfig

from tasks.engine_client import tls_client
from tests.integration.conftest import lab_cluster, lab_connect, pgha

LAB, SCOPE, PORT_BASE = "ittcp", "pgha-it-tcp", 27200
BAD_SCOPE = "pgha-it-tcpbad"
N_HOSTS = 2


@pytest.fixture(scope="module")
def lab(engine: docker.DockerClient, base_env: dict[str, str]) -> Iterator[dict[str, object]]:
    with lab_cluster(engine, base_env, LAB, SCOPE, PORT_BASE, N_HOSTS, lab_engine="tcp") as st:
        yield st
    assert not (Path(base_env["PGHA_STATE_DIR"]) / "labs" / LAB).exists()  # certificates and keys too


def _hosts(lab: dict[str, object]) -> list[dict[str, object]]:
    hosts = lab["hosts"]
    assert isinstance(hosts, list)
    return hosts


def _tcp_client(host: dict[str, object], with_cert: bool = True) -> docker.DockerClient:
    """docker-py over TLS as pgha builds it (`tls_client`: the CA given, never REQUESTS_CA_BUNDLE's)."""
    tls = host["tls"]
    assert isinstance(tls, dict)
    cfg = (TLSConfig(client_cert=(tls["cert"], tls["key"]), ca_cert=tls["ca"], verify=True) if with_cert
           else TLSConfig(ca_cert=tls["ca"], verify=True))
    return tls_client(str(host["docker"]).replace("tcp://", "https://"), cfg, timeout=30)


def test_status_and_spec_name_tcp_engines_with_private_tls_files(lab: dict[str, object], base_env: dict[str, str],
                                                                 engine: docker.DockerClient) -> None:
    r = pgha(base_env, "lab", "status", "--name", LAB, "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["engine"] == "tcp"
    hosts = st["hosts"]
    first_engine_port = PORT_BASE + 2 * N_HOSTS
    assert [h["docker"] for h in hosts] == [f"tcp://127.0.0.1:{first_engine_port + i}" for i in range(N_HOSTS)]
    assert all(h["state"] == "running" for h in hosts)
    spec_hosts = yaml.safe_load(Path(st["spec"]).read_text())["hosts"]
    assert [(h["docker"], h["tls"]) for h in spec_hosts] == [(h["docker"], h["tls"]) for h in hosts]
    for path in hosts[0]["tls"].values():
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600, path
    for h in hosts:
        ct = engine.containers.get(h["container"])
        # The engine's port is published on loopback only; its key is a mounted file, never argv or env.
        assert ct.attrs["HostConfig"]["PortBindings"]["2376/tcp"] == [{"HostIp": "127.0.0.1",
                                                                       "HostPort": str(h["engine_port"])}]
        assert "--tlsverify" in ct.attrs["Config"]["Cmd"]
        blob = json.dumps(ct.attrs["Config"])
        assert "PRIVATE KEY" not in blob and "CERTIFICATE" not in blob
        tls_mounts = [m for m in ct.attrs["Mounts"] if m["Destination"] == "/etc/pgha-lab/tls"]
        assert len(tls_mounts) == 1 and tls_mounts[0]["RW"] is False
        assert sorted(p.name for p in Path(tls_mounts[0]["Source"]).iterdir()) == ["ca.crt", "server.crt",
                                                                                  "server.key"]


def test_write_on_host1_rw_read_back_on_host2_ro(lab: dict[str, object], base_env: dict[str, str]) -> None:
    h1, h2 = _hosts(lab)
    with lab_connect(base_env, SCOPE, h1["rw_port"]) as c:
        c.execute("create table if not exists tcp_t (v text)")
        c.execute("insert into tcp_t values ('through tcp+tls engines')")
    with lab_connect(base_env, SCOPE, h2["ro_port"]) as c:
        row = c.execute("select pg_is_in_recovery(), count(*) from tcp_t where v = 'through tcp+tls engines'").fetchone()
    assert row == (True, 1)


def test_inspect_through_the_tcp_engines_shows_the_members(lab: dict[str, object], base_env: dict[str, str]) -> None:
    for i, h in enumerate(_hosts(lab), start=1):
        client = _tcp_client(h)
        try:
            names = sorted(str(c.name) for c in client.containers.list(filters={"label": f"pgha.cluster={SCOPE}"}))
            pg = client.containers.get(f"{SCOPE}-pg-{i}")
            assert pg.attrs["State"]["Running"] is True and pg.attrs["HostConfig"]["NetworkMode"] == "host"
        finally:
            client.close()
        expect = {f"{SCOPE}-pg-{i}", f"{SCOPE}-haproxy"} | ({f"{SCOPE}-etcd-1"} if i == 1 else set())
        assert set(names) == expect, (h["name"], names)
    # pgha itself reads the cluster through the spec's tcp:// engines
    r = pgha(base_env, "status", "--spec", str(lab["spec"]), "--json", timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    roles = sorted(m["pg_role"] for m in json.loads(r.stdout)["members"] if m["role"] == "patroni")
    assert roles in (["leader", "replica"], ["leader", "sync_standby"]), roles


def test_a_client_without_the_client_certificate_is_refused(lab: dict[str, object]) -> None:
    h1 = _hosts(lab)[0]
    with pytest.raises(docker.errors.DockerException) as exc:
        _tcp_client(h1, with_cert=False).ping()
    assert "certificate required" in str(exc.value).lower(), exc.value  # the engine's TLS 1.3 alert
    with pytest.raises((docker.errors.DockerException, requests.exceptions.RequestException)):
        docker.DockerClient(base_url=str(h1["docker"]), timeout=10).ping()  # plain HTTP to the TLS port
    client = _tcp_client(h1)  # the same engine, with pgha's certificate: answers
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_a_spec_naming_a_missing_client_cert_is_refused_creating_nothing(
        lab: dict[str, object], base_env: dict[str, str], tmp_path: Path) -> None:
    data = yaml.safe_load(Path(str(lab["spec"])).read_text())
    data["scope"] = BAD_SCOPE
    missing = tmp_path / "missing-client.crt"
    data["hosts"][0]["tls"]["cert"] = str(missing)
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(data))
    r = pgha(base_env, "up", "--spec", str(spec), timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [f"pgha: error: host h1: tls.cert {missing}: No such file or directory"], r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    flt = {"label": f"pgha.cluster={BAD_SCOPE}"}
    for h in _hosts(lab):
        client = _tcp_client(h)
        try:
            assert client.containers.list(all=True, filters=flt) == [] and client.volumes.list(filters=flt) == []
        finally:
            client.close()
    assert not (Path(base_env["PGHA_STATE_DIR"]) / BAD_SCOPE).exists()
