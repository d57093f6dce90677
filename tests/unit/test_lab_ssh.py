"""ssh:// engines: the spec's `ssh:` block, the ssh argv pgha runs, the lab's ssh plan, and the
transport's connection handling against a local stand-in for `docker system dial-stdio` (no Docker)."""

from __future__ import annotations

import stat
import sys
import textwrap
from pathlib import Path
from typing import Any

import docker
import pytest

from stack import lab
from stack.errors import SpecError
from stack.hosts import SSH_CONTROL_PATH_MAX, EngineSSH, ssh_argv, ssh_control_path, ssh_target
from stack.spec import parse_spec

BASE: dict[str, Any] = {"scope": "many", "ports": {"rw": 5000, "ro": 5001, "stats": 7000},
                        "backup": {"enabled": False}, "fencing": False, "etcd_members": 1, "nodes": 2,
                        "allow_unsafe_placement": True}
SSH = {"key": "/s/labs/x/ssh/id_ed25519", "known_hosts": "/s/labs/x/ssh/known_hosts"}
URL = "ssh://root@127.0.0.1:27304"


def _hosts(**first: Any) -> list[dict[str, Any]]:
    return [{"name": "h1", "docker": URL, "address": "10.0.0.11", "ssh": SSH, **first},
            {"name": "h2", "docker": "ssh://root@127.0.0.1:27305", "address": "10.0.0.12", "ssh": SSH}]


def _refused(hosts: list[dict[str, Any]]) -> str:
    with pytest.raises(SpecError) as exc:
        parse_spec({**BASE, "hosts": hosts})
    return str(exc.value)


def test_an_ssh_block_names_files_for_an_ssh_engine() -> None:
    s = parse_spec({**BASE, "hosts": _hosts()})
    assert s.hosts is not None and s.hosts[0].ssh == EngineSSH(**SSH)
    assert s.hosts[0].ssh is not None and s.hosts[0].ssh.multiplex is False  # one login per connection unless asked
    shared = parse_spec({**BASE, "hosts": _hosts(ssh={**SSH, "multiplex": True})})
    assert shared.hosts is not None and shared.hosts[0].ssh is not None and shared.hosts[0].ssh.multiplex
    assert parse_spec({**BASE, "hosts": [{k: v for k, v in h.items() if k != "ssh"} for h in _hosts()]})


@pytest.mark.parametrize(("first", "expect"), [
    ({"docker": "tcp://127.0.0.1:2376"}, "host h1: ssh (key, known_hosts) goes with an ssh:// engine, not tcp://"),
    ({"docker": "unix:///run/x.sock"}, "goes with an ssh:// engine, not unix:///run/x.sock"),
    ({"ssh": {**SSH, "key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl"}}, "give the path of a file"),
    ({"ssh": {**SSH, "known_hosts": "ssh-ed25519 AAAAC3Nz"}}, "give the path of a file"),
    ({"ssh": {"key": "/k"}}, "known_hosts"),
    ({"ssh": {**SSH, "password": "x"}}, "password"),
    ({"docker": "ssh://root@127.0.0.1:27304/path"}, "must be ssh://[user@]host[:port] (no path)"),
    ({"docker": "ssh://root@127.0.0.1:99999"}, "port 99999 is not 1-65535"),
])
def test_bad_ssh_blocks_are_one_line(first: dict[str, Any], expect: str) -> None:
    msg = _refused(_hosts(**first))
    assert expect in msg and "\n" not in msg, msg


def test_ssh_target() -> None:
    assert ssh_target("ssh://root@127.0.0.1:27304") == ("root", "127.0.0.1", 27304)
    assert ssh_target("ssh://db-a") == (None, "db-a", None)
    assert ssh_target("ssh://ops@[::1]:2222") == ("ops", "::1", 2222)


def test_the_ssh_argv_uses_only_the_spec_files_and_checks_the_host_key_strictly() -> None:
    argv = ssh_argv(URL, EngineSSH(**SSH), ["docker", "system", "dial-stdio"])
    assert argv[:5] == ["ssh", "-F", "none", "-i", SSH["key"]]  # no ~/.ssh/config, this key
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    for o in ("IdentitiesOnly=yes", "IdentityAgent=none", "BatchMode=yes", "StrictHostKeyChecking=yes",
              f'UserKnownHostsFile="{SSH["known_hosts"]}"', "GlobalKnownHostsFile=/dev/null",
              "PasswordAuthentication=no", "ControlMaster=no", "ControlPath=none"):
        assert o in opts, o
    assert not any(o.startswith("StrictHostKeyChecking=") and o != "StrictHostKeyChecking=yes" for o in opts)
    assert argv[-7:] == ["-l", "root", "-p", "27304", "--", "127.0.0.1", "docker", "system", "dial-stdio"][-7:]
    assert argv[argv.index("--") - 4:argv.index("--")] == ["-l", "root", "-p", "27304"]
    # %-tokens and spaces in paths reach ssh literally
    odd = ssh_argv("ssh://h", EngineSSH(key="/a b/%k", known_hosts="/a b/k%h"), ["true"])
    assert odd[4] == "/a b/%%k" and 'UserKnownHostsFile="/a b/k%%h"' in odd and odd[-2:] == ["h", "true"]
    assert "-l" not in odd and "-p" not in odd


def test_a_control_master_is_per_engine_and_per_credentials() -> None:
    s = EngineSSH(**SSH)
    path = ssh_control_path("/st/ssh", URL, s)
    assert path is not None and path.startswith("/st/ssh/127.0.0.1-27304-")  # findable by engine
    argv = ssh_argv(URL, s, ["docker", "system", "dial-stdio"], path)
    assert "ControlMaster=auto" in argv and f'ControlPath="{path}"' in argv and "ControlPersist=30" in argv
    # Another key or another known_hosts never rides a master authenticated with these.
    assert ssh_control_path("/st/ssh", URL, EngineSSH(key="/other", known_hosts=SSH["known_hosts"])) != path
    assert ssh_control_path("/st/ssh", URL, EngineSSH(key=SSH["key"], known_hosts="/other")) != path
    assert ssh_control_path("/st/ssh", "ssh://root@127.0.0.1:27305", s) != path
    assert ssh_control_path("/" + "d" * SSH_CONTROL_PATH_MAX, URL, s) is None  # too long for a socket: no master


def test_lab_ssh_ports_urls_and_spec() -> None:
    assert lab.check_engine("ssh") is None
    assert lab.lab_ports(27300, 2, "ssh") == [27300, 27301, 27302, 27303, 27304, 27305, 27306, 27307]
    assert lab.engine_url("ssh", "unix:///s.sock", 27304) == "ssh://root@127.0.0.1:27304"
    login = EngineSSH(**SSH)
    hosts = [lab.LabHost(name=n, container=lab.container_name("x", n), socket=f"unix:///s/{n}.sock",
                         docker=lab.engine_url("ssh", "", port), address=lab.host_address("10.213.5.0/24", i),
                         rw_port=rw, ro_port=ro, engine_port=port, ssh=login)
             for i, (n, (rw, ro), port) in enumerate(zip(lab.host_names(2), lab.client_ports(27300, 2),
                                                          lab.engine_ports(27300, 2), strict=True))]
    s = parse_spec(lab.spec_data("pgha-it-ssh", hosts))
    assert s.hosts is not None
    assert [(h.docker, h.ssh) for h in s.hosts] == [("ssh://root@127.0.0.1:27304", login),
                                                    ("ssh://root@127.0.0.1:27305", login)]
    assert lab.dockerd_args("ssh") == []  # sshd, not a dockerd listener


def test_lab_ssh_keys_and_known_hosts_lines() -> None:
    private, public = lab.ssh_keypair("pgha-lab-x")
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    kind, blob, comment = public.split()
    assert kind == "ssh-ed25519" and comment == "pgha-lab-x" and public.endswith("\n")
    assert lab.known_hosts_line(27304, public) == f"[127.0.0.1]:27304 ssh-ed25519 {blob}\n"
    assert lab.ssh_keypair("y")[1] != public


def test_lab_ssh_files_are_private_and_pin_every_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    from tasks import docker_lab

    hosts = [lab.LabHost(name=n, container=n, docker=lab.engine_url("ssh", "", 27304 + i), address=f"10.0.0.{i}",
                         rw_port=1, ro_port=2, engine_port=27304 + i) for i, n in enumerate(("h1", "h2"))]
    login = docker_lab.ensure_engine_ssh("x", hosts)
    d = tmp_path / "labs" / "x" / "ssh"
    assert login == EngineSSH(key=str(d / "id_ed25519"), known_hosts=str(d / "known_hosts"))
    for f in (d / "id_ed25519", d / "known_hosts", d / "h1" / "ssh_host_ed25519_key", d / "h2" / "authorized_keys"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    lines = (d / "known_hosts").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["[127.0.0.1]:27304", "[127.0.0.1]:27305"]
    assert lines[0].split()[2] == (d / "h1" / "ssh_host_ed25519_key.pub").read_text().split()[1]
    assert (d / "h1" / "authorized_keys").read_text() == (d / "id_ed25519.pub").read_text()
    assert not list((d / "h1").glob("id_*"))  # pgha's private key is never in what a host mounts
    again = docker_lab.ensure_engine_ssh("x", hosts)  # made once: a second `lab up` keeps the keys
    assert again == login and (d / "known_hosts").read_text().splitlines() == lines


def test_missing_ssh_files_are_refused_in_one_line(tmp_path: Path) -> None:
    from tasks.docker_hosts import ssh_files

    key = tmp_path / "id"
    key.write_text("k")
    with pytest.raises(SpecError) as exc:
        ssh_files(EngineSSH(key=str(key), known_hosts=str(tmp_path / "nope")), "h2")
    assert str(exc.value) == f"host h2: ssh.known_hosts {tmp_path / 'nope'}: No such file or directory"
    kh = tmp_path / "kh"
    kh.write_text("")
    assert ssh_files(EngineSSH(key=str(key), known_hosts=str(kh)), "h2").key == str(key)


# A stand-in for `ssh ... docker system dial-stdio`: HTTP/1.1 with keep-alive on stdin/stdout,
# answering docker-py's /_ping; each process start is one line in a log file.
FAKE_DIAL = textwrap.dedent("""
    import sys
    from http.server import BaseHTTPRequestHandler

    open(sys.argv[1], "a").write("start\\n")

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b"OK"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Api-Version", "1.45")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def log_message(self, *a):
            pass

    class Conn:
        pass

    h = H.__new__(H)
    h.rfile, h.wfile = sys.stdin.buffer, sys.stdout.buffer
    h.close_connection = False
    h.server, h.client_address, h.request = None, ("stdio", 0), None
    while not h.close_connection:
        h.handle_one_request()
""")


def _fake_client(tmp_path: Path, keep: bool) -> tuple[docker.DockerClient, Path]:
    from tasks.docker_ssh import ssh_transport_client

    script, log = tmp_path / "dial.py", tmp_path / "starts.log"
    script.write_text(FAKE_DIAL)
    return ssh_transport_client([sys.executable, str(script), str(log)], 10, "1.45", keep=keep), log


def test_the_ssh_transport_keeps_its_connection(tmp_path: Path) -> None:
    client, log = _fake_client(tmp_path, keep=True)
    for _ in range(5):
        assert client.ping() is True
    assert log.read_text().count("start") == 1  # one ssh process for five requests
    client.close()


def test_without_keeping_every_request_is_a_new_ssh_process(tmp_path: Path) -> None:
    client, log = _fake_client(tmp_path, keep=False)
    for _ in range(3):
        assert client.ping() is True
    assert log.read_text().count("start") == 3  # docker-py's own shell-out behaviour
    client.close()


def test_a_dead_ssh_process_is_replaced_and_closed_ones_are_reaped(tmp_path: Path) -> None:
    from tasks.docker_ssh import _SSHSocket

    client, log = _fake_client(tmp_path, keep=True)
    assert client.ping() is True
    pool = client.api.get_adapter("http+docker://ssh/_ping").get_connection("x")
    assert list(client.api.adapters) == ["http+docker://ssh"]  # nothing else to fall back to
    conn = pool.pool.queue[-1]
    assert isinstance(conn.sock, _SSHSocket)
    proc = conn.sock.proc
    proc.kill()
    proc.wait()
    assert client.ping() is True  # the dropped connection is noticed and a new ssh started
    assert log.read_text().count("start") == 2
    live = [c.sock.proc for c in pool.pool.queue if c is not None and c.sock is not None]
    client.close()
    assert live and all(p.poll() is not None for p in live)  # reaped, no zombie left behind


def test_without_an_ssh_block_the_users_setup_decides_but_never_a_prompt_or_an_unknown_host() -> None:
    argv = ssh_argv("ssh://ops@db-a", None, ["docker", "system", "dial-stdio"])
    assert "-F" not in argv and "-i" not in argv and "IdentitiesOnly=yes" not in argv
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert argv[-6:] == ["-l", "ops", "--", "db-a", "docker", "system", "dial-stdio"][-6:]


@pytest.mark.parametrize("multiplex", [False, True])
def test_an_engine_nobody_answers_is_one_line_naming_host_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    multiplex: bool) -> None:
    """The real ssh client (no sshd needed): it accepts every option pgha gives, and its own
    reason ends the one line (27399: this file's integration port range, nothing listens)."""
    from stack.errors import DockerError
    from tasks.docker_ssh import ssh_probe

    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path / "state"))
    key, kh = tmp_path / "id", tmp_path / "known_hosts"
    key.write_text(lab.ssh_keypair("t")[0])
    key.chmod(0o600)
    kh.write_text("")
    url = "ssh://root@127.0.0.1:27399"
    with pytest.raises(DockerError) as exc:
        ssh_probe(url, EngineSSH(key=str(key), known_hosts=str(kh)), "h9", multiplex=multiplex)
    msg = str(exc.value)
    assert msg.startswith(f"no Docker engine answers at {url} (host h9): ssh with key {key} and known_hosts {kh}: ")
    assert msg.endswith("Connection refused") and "\n" not in msg, msg
    if multiplex:
        control = tmp_path / "state" / "ssh"
        assert stat.S_IMODE(control.stat().st_mode) == 0o700 and list(control.iterdir()) == []


def test_ending_an_engines_masters_touches_no_other_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.docker_ssh import ssh_control_dir, ssh_end_masters

    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    d = ssh_control_dir()
    stale = d / "127.0.0.1-27304-0123456789ab"  # a master that is gone: its socket file is removed
    other = d / "127.0.0.1-27305-0123456789ab"
    stale.write_text("")
    other.write_text("")
    assert ssh_end_masters(URL) == 0
    assert not stale.exists() and other.exists()


def test_ssh_files_resolve_the_paths_and_keep_multiplex(tmp_path: Path) -> None:
    from tasks.docker_hosts import ssh_files

    key, kh = tmp_path / "k", tmp_path / "kh"
    key.write_text("x")
    kh.write_text("y")
    got = ssh_files(EngineSSH(key=str(key), known_hosts=str(kh), multiplex=True), "h1")
    assert (got.key, got.known_hosts, got.multiplex) == (str(key.resolve()), str(kh.resolve()), True)
    kh.unlink()
    with pytest.raises(SpecError, match=r"^host h1: ssh.known_hosts .*kh: No such file or directory$"):
        ssh_files(EngineSSH(key=str(key), known_hosts=str(kh)), "h1")
