"""A cluster whose engines are reached over ssh://, in a 2-host lab (`--engine ssh`).

Lab `itssh` (2 simulated hosts), scope `pgha-it-ssh`: each lab host also runs sshd (key-only,
root), published on 127.0.0.1 only; pgha made an ed25519 key pair and a host key per lab host,
pinned in the lab's known_hosts. The spec the lab writes names the ssh:// engines and those two
files, and `pgha up` runs the cluster through them (the system ssh running `docker system
dial-stdio` on each lab host). 1 etcd member (on h1) and 2 Patroni nodes, one per host. One lab
and one cluster for the file; every test only reads, and the refused specs create nothing.

Ports: 27300-27399 (lab hosts' R/W and R/O on 127.0.0.1, then their sshd ports).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

from stack import lab as plan
from stack.hosts import EngineSSH
from tasks.docker_ssh import ssh_client
from tests.integration.conftest import lab_cluster, lab_connect, pgha

LAB, SCOPE, PORT_BASE = "itssh", "pgha-it-ssh", 27300
BAD_SCOPE = "pgha-it-sshbad"
N_HOSTS = 2


def _lab_dir(env: dict[str, str]) -> Path:
    return Path(env["PGHA_STATE_DIR"]) / "labs" / LAB


def _ssh_processes(needle: str) -> list[str]:
    """Command lines of running processes that mention `needle` (this machine's /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if needle in cmd:
                out.append(cmd)
    return out


@pytest.fixture(scope="module")
def lab(engine: docker.DockerClient, base_env: dict[str, str]) -> Iterator[dict[str, object]]:
    with lab_cluster(engine, base_env, LAB, SCOPE, PORT_BASE, N_HOSTS, lab_engine="ssh") as st:
        key = str(st["hosts"][0]["ssh"]["key"])
        yield st
    assert not _lab_dir(base_env).exists()  # keys and known_hosts too
    # `lab down` ended the ControlPersist masters (titled `ssh: <control path> [mux]`): no ssh
    # of pgha's for this lab is left.
    assert _ssh_processes(key) == [] and _ssh_processes(str(Path(base_env["PGHA_STATE_DIR"]) / "ssh")) == []


def _hosts(lab: dict[str, object]) -> list[dict[str, object]]:
    hosts = lab["hosts"]
    assert isinstance(hosts, list)
    return hosts


def _ssh(host: dict[str, object]) -> EngineSSH:
    return EngineSSH.model_validate(host["ssh"])


def test_status_and_spec_name_ssh_engines_with_private_key_files(lab: dict[str, object], base_env: dict[str, str],
                                                                 engine: docker.DockerClient) -> None:
    r = pgha(base_env, "lab", "status", "--name", LAB, "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["engine"] == "ssh"
    hosts = st["hosts"]
    first = PORT_BASE + 2 * N_HOSTS
    assert [h["docker"] for h in hosts] == [f"ssh://root@127.0.0.1:{first + i}" for i in range(N_HOSTS)]
    assert all(h["state"] == "running" for h in hosts)
    spec_hosts = yaml.safe_load(Path(st["spec"]).read_text())["hosts"]
    assert [(h["docker"], h["ssh"]) for h in spec_hosts] == [(h["docker"], h["ssh"]) for h in hosts]
    assert hosts[0]["ssh"]["multiplex"] is False  # one ssh login per connection (kept), no master
    for path in (hosts[0]["ssh"]["key"], hosts[0]["ssh"]["known_hosts"]):
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600, path
    pinned = Path(hosts[0]["ssh"]["known_hosts"]).read_text().splitlines()
    assert [ln.split()[0] for ln in pinned] == [f"[127.0.0.1]:{first + i}" for i in range(N_HOSTS)]
    for h in hosts:
        ct = engine.containers.get(h["container"])
        # sshd is published on loopback only; pgha's private key is in no argv, env, label or mount.
        assert ct.attrs["HostConfig"]["PortBindings"]["22/tcp"] == [{"HostIp": "127.0.0.1",
                                                                     "HostPort": str(h["engine_port"])}]
        blob = json.dumps(ct.attrs["Config"])
        assert "PRIVATE KEY" not in blob and "id_ed25519" not in blob
        mounts = [m for m in ct.attrs["Mounts"] if m["Destination"] == plan.ENGINE_SSH_IN_HOST]
        assert len(mounts) == 1 and mounts[0]["RW"] is False
        assert sorted(p.name for p in Path(mounts[0]["Source"]).iterdir()) == [
            "authorized_keys", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
        # Key-only login: what sshd actually runs with.
        res = ct.exec_run(["sshd", "-T", "-f", "/etc/ssh/pgha_sshd_config"])
        effective = set(res.output.decode().splitlines())
        assert res.exit_code == 0, res.output
        assert {"passwordauthentication no", "kbdinteractiveauthentication no", "pubkeyauthentication yes",
                "permitrootlogin without-password"} <= effective, effective


def test_write_on_host1_rw_read_back_on_host2_ro(lab: dict[str, object], base_env: dict[str, str]) -> None:
    h1, h2 = _hosts(lab)
    with lab_connect(base_env, SCOPE, h1["rw_port"]) as c:
        c.execute("create table if not exists ssh_t (v text)")
        c.execute("insert into ssh_t values ('through ssh engines')")
    with lab_connect(base_env, SCOPE, h2["ro_port"]) as c:
        row = c.execute("select pg_is_in_recovery(), count(*) from ssh_t where v = 'through ssh engines'").fetchone()
    assert row == (True, 1)


def test_status_through_the_ssh_engines_sees_both_members(lab: dict[str, object], base_env: dict[str, str]) -> None:
    for i, h in enumerate(_hosts(lab), start=1):
        client = ssh_client(str(h["docker"]), _ssh(h), str(h["name"]), timeout=30)
        try:
            names = sorted(str(c.name) for c in client.containers.list(filters={"label": f"pgha.cluster={SCOPE}"}))
            pg = client.containers.get(f"{SCOPE}-pg-{i}")
            assert pg.attrs["State"]["Running"] is True and pg.attrs["HostConfig"]["NetworkMode"] == "host"
            assert pg.exec_run(["true"]).exit_code == 0  # a hijacked stream over ssh
        finally:
            client.close()
        expect = {f"{SCOPE}-pg-{i}", f"{SCOPE}-haproxy"} | ({f"{SCOPE}-etcd-1"} if i == 1 else set())
        assert set(names) == expect, (h["name"], names)
    r = pgha(base_env, "status", "--spec", str(lab["spec"]), "--json", timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    members = [m for m in json.loads(r.stdout)["members"] if m["role"] == "patroni"]
    assert sorted(m["pg_role"] for m in members) in (["leader", "replica"], ["leader", "sync_standby"]), members
    # pgha's connections ended with it (a bounded ControlPersist master may remain; `lab down` ends it).
    key = str(_hosts(lab)[0]["ssh"]["key"])  # type: ignore[index]
    assert [c for c in _ssh_processes(key) if "dial-stdio" in c and "[mux]" not in c] == []


def _nothing_created(lab: dict[str, object], env: dict[str, str]) -> None:
    flt = {"label": f"pgha.cluster={BAD_SCOPE}"}
    for h in _hosts(lab):  # through the lab's own sockets, not the ssh being tested
        client = docker.DockerClient(base_url=f"unix://{_lab_dir(env) / str(h['name']) / 'docker.sock'}", timeout=30)
        try:
            assert client.containers.list(all=True, filters=flt) == [] and client.volumes.list(filters=flt) == []
        finally:
            client.close()
    assert not (Path(env["PGHA_STATE_DIR"]) / BAD_SCOPE).exists()


@pytest.mark.parametrize("case", ["refused-key", "host-key-mismatch"])
def test_a_wrong_key_or_host_key_is_refused_creating_nothing(lab: dict[str, object], base_env: dict[str, str],
                                                              tmp_path: Path, case: str) -> None:
    data = yaml.safe_load(Path(str(lab["spec"])).read_text())
    data["scope"] = BAD_SCOPE
    if case == "refused-key":  # a well-formed key that no lab host's authorized_keys holds
        other = tmp_path / "id_other"
        other.write_text(plan.ssh_keypair("not-the-lab")[0])
        other.chmod(0o600)
        data["hosts"][0]["ssh"]["key"] = str(other)
        host, expect = "h1", "Permission denied (publickey)."
    else:  # h2 pinned to another host key: an impostor, as far as pgha can tell
        h2 = _hosts(lab)[1]
        lines = Path(str(data["hosts"][1]["ssh"]["known_hosts"])).read_text().splitlines()
        fake = plan.known_hosts_line(int(str(h2["engine_port"])), plan.ssh_keypair("impostor")[1])
        kh = tmp_path / "known_hosts"
        kh.write_text("\n".join(fake.strip() if f"]:{h2['engine_port']} " in ln else ln for ln in lines) + "\n")
        data["hosts"][1]["ssh"]["known_hosts"] = str(kh)
        host, expect = "h2", "Host key verification failed."
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(data))
    r = pgha(base_env, "up", "--spec", str(spec), timeout=300)
    assert r.returncode != 0, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stdout + r.stderr, r.stderr
    url = data["hosts"][int(host[1]) - 1]["docker"]
    assert f"no Docker engine answers at {url} (host {host}): ssh with key" in lines[0], lines[0]
    assert lines[0].endswith(expect), lines[0]
    _nothing_created(lab, base_env)
