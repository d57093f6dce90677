"""The pgBackRest repository host (backup.repo_host): spec checks, rendered configs, its container,
the certificate's names (pure, no Docker)."""

from __future__ import annotations

import configparser
import ipaddress
from typing import Any

import pytest
from cryptography import x509

from stack import backup as bk
from stack import backup_decisions as bkd
from stack import layout
from stack.backup_tls import make_certificates, server_names
from stack.errors import SpecError
from stack.spec import ClusterSpec, Role, parse_spec
from stack.topology import READ_ONLY_ROOT, repo_host

HOSTS = [{"name": f"h{i}", "docker": f"unix:///run/h{i}.sock", "address": f"10.0.0.1{i}"} for i in (1, 2)]
BASE: dict[str, Any] = {"scope": "rh", "ports": {"rw": 5000, "ro": 5001, "stats": 7000}, "fencing": False,
                        "nodes": 2, "etcd_members": 1, "allow_unsafe_placement": True}


def spec(**backup: Any) -> ClusterSpec:
    return parse_spec({**BASE, "hosts": HOSTS, "backup": {"repo_host": "h2", **backup}})


def ini(text: str) -> configparser.ConfigParser:
    c = configparser.ConfigParser(interpolation=None)
    c.read_string(text)
    return c


@pytest.mark.parametrize(("data", "expect"), [
    ({"backup": {"repo_host": "h2"}}, "backup.repo_host 'h2' needs hosts:"),
    ({"hosts": HOSTS, "backup": {"repo_host": "h9"}}, "backup.repo_host names unknown host 'h9' (hosts: h1, h2)"),
    ({"hosts": HOSTS, "backup": {"repo_host": "h2", "s3": {"bucket": "bkt", "endpoint": "s3.local"}}},
     "backup.repo_host and backup.s3 are two repositories; choose one"),
    ({"hosts": HOSTS, "backup": {"repo_host": "h2", "enabled": False}}, "backup.enabled is false"),
    ({"hosts": HOSTS, "backup": {"enabled": True}}, "needs backup.s3 or backup.repo_host"),
    ({"hosts": HOSTS, "backup": {"repo_host": "h2"}, "ports": {"rw": 8433, "ro": 5001, "stats": 7000}},
     "ports.rw 8433 is the pgBackRest repository host's server's port"),
])
def test_bad_repo_host_is_one_line(data: dict[str, Any], expect: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec({**BASE, **data})
    msg = str(exc.value)
    assert expect in msg and "\n" not in msg


def test_repo_host_placement_and_address() -> None:
    s = spec()
    assert s.host_of(s.repo_member) == "h2" and s.address(s.repo_member) == "10.0.0.12"
    assert s.container(s.repo_member) == "rh-repo"
    assert bk.uses_repo_host(s) and not bk.uses_repo_host(ClusterSpec())
    # without a repository host, "repo" is no member of any host's own
    plain = parse_spec({**BASE, "hosts": HOSTS, "backup": {"enabled": False}})
    assert plain.host_of(plain.repo_member) == "h1"


def test_node_conf_points_at_the_repository_host_over_tls_with_the_cipher_and_no_path() -> None:
    c = ini(bk.render_node_conf(spec(), None, "secret-pass-phrase"))
    g = c["global"]
    assert g["repo1-host"] == "10.0.0.12" and g["repo1-host-type"] == "tls"
    assert g["repo1-host-port"] == str(layout.PGBACKREST_REPO_PORT) == "8433"
    assert g["repo1-host-cert-file"].endswith("/client.crt") and g["repo1-host-ca-file"].endswith("/ca.crt")
    assert "repo1-path" not in g
    # The command encrypts/decrypts on its own side of the TLS protocol: the node needs the passphrase.
    assert g["repo1-cipher-type"] == bk.CIPHER_TYPE and g["repo1-cipher-pass"] == "secret-pass-phrase"
    assert "cipher" not in bk.render_node_conf(spec(), None, None)
    assert g["tls-server-port"] == "8432"  # the node's own server, for the backups the repository host runs
    assert c["rh"]["pg1-path"] == layout.PGDATA


def test_repo_conf_holds_repository_cipher_server_and_every_node_by_address() -> None:
    c = ini(bk.render_repo_conf(spec(encrypt=True), "secret-pass-phrase"))
    g, st = c["global"], c["rh"]
    assert g["repo1-path"] == layout.REPO_MOUNT
    assert g["repo1-cipher-type"] == bk.CIPHER_TYPE and g["repo1-cipher-pass"] == "secret-pass-phrase"
    assert g["tls-server-port"] == "8433" and g["tls-server-auth"] == f"{bk.CLIENT_CN}=rh"
    assert [st["pg1-host"], st["pg2-host"]] == ["10.0.0.11", "10.0.0.12"]
    assert st["pg1-host-type"] == "tls" and st["pg1-host-port"] == "8432"
    assert "pg3-host" not in st
    assert bk.render_repo_conf(spec(), None).count("cipher") == 0


def test_backup_source_is_a_command_line_choice_only_on_a_repository_host() -> None:
    assert bk.backup_standby_args(spec(), True) == ["--backup-standby=y"]
    assert bk.backup_standby_args(spec(), False) == ["--backup-standby=n"]
    assert bk.backup_standby_args(ClusterSpec(), True) == []


def test_single_engine_backup_conf_still_names_containers() -> None:
    c = ini(bk.render_backup_conf(parse_spec({"scope": "one", "nodes": 2}), True))
    assert c["one"]["pg1-host"] == "one-pg-1" and c["one"]["pg2-host"] == "one-pg-2"


def test_server_certificate_names_the_repository_and_host_addresses_as_ip_sans() -> None:
    s = spec()
    names = server_names(s)
    assert "rh-repo" in names and "10.0.0.11" in names and "rh-pg-9" in names
    cert = x509.load_pem_x509_certificate(make_certificates(s)["server.crt"].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.12") in san.get_values_for_type(x509.IPAddress)
    assert "rh-repo" in san.get_values_for_type(x509.DNSName)
    assert server_names(ClusterSpec(scope="solo"))[-1] == "solo-repo"  # single engine: no addresses


def test_repo_container_is_hardened_host_networked_and_hides_the_passphrase() -> None:
    s = spec()
    certs = {n: f"--{n}--" for n in bk.CERT_FILES}
    conf = bk.render_repo_conf(s, "secret-pass-phrase")
    p = repo_host(s, "img:1", "/state/rh/config/repo", conf, certs, "secret-pass-phrase")
    c = p.container
    assert (c.role, c.member, c.name) == (Role.REPO.value, "repo", "rh-repo")
    assert c.host_network and c.volumes == {"rh-pgbackrest": layout.REPO_MOUNT}
    assert c.entrypoint == ["/bin/sh", f"/etc/pgha/{layout.REPO_START}"]
    assert c.hardening is not None and c.hardening.read_only and Role.REPO.value in READ_ONLY_ROOT
    assert c.hardening.cap_drop == ("ALL",) and "DAC_OVERRIDE" not in c.hardening.cap_add
    assert c.hardening.memory_bytes == s.resources.repo.memory_mib * 1024 * 1024
    assert "server-ping" in (c.healthcheck or []) and "--tls-server-port=8433" in (c.healthcheck or [])
    assert p.files["pgbackrest/backup.conf"] == conf and p.files["pgbackrest/server.key"] == "--server.key--"
    assert "server" in p.files[layout.REPO_START] and "setpriv --reuid=postgres" in p.files[layout.REPO_START]
    other = repo_host(s, "img:1", "/d", bk.render_repo_conf(s, "other-pass-phrase"), certs, "other-pass-phrase")
    assert other.container.config_hash == c.config_hash  # the passphrase is redacted before hashing
    changed = repo_host(s, "img:2", "/d", conf, certs, "secret-pass-phrase")
    assert changed.container.config_hash != c.config_hash


def test_repository_engine_and_where_repository_commands_run() -> None:
    from tasks import pgbackrest as pbr
    from tasks.docker_hosts import engines

    s = spec()
    eng = engines(s)
    assert eng.repository() is eng.on_host("h2") and eng.of(s.repo_member) is eng.on_host("h2")
    assert eng.of("pg-1") is eng.on_host("h1")
    assert pbr.runner_for(s, "pg-2") == "repo" and pbr.reader(s) == "repo"
    single = ClusterSpec(scope="solo")
    assert pbr.runner_for(single, "pg-2") == "pg-2"
    assert engines(single).repository() is engines(single).default


def test_restore_into_a_new_scope_and_dump_refuse_a_repository_host_before_any_io() -> None:
    from flows.backup import dump_preflight
    from flows.restore import preflight as restore_preflight
    from stack.errors import UsageError

    into = parse_spec({**BASE, "scope": "rh2", "hosts": HOSTS, "backup": {"repo_host": "h2"}})
    with pytest.raises(UsageError, match="restores in place only"):
        restore_preflight(spec(), "2026-11-25 21:03:00+00", into, False)
    with pytest.raises(UsageError, match="with backup.repo_host they mount none"):
        dump_preflight(spec())


def test_a_restore_box_reads_the_repository_host_over_tls_and_mounts_no_repository() -> None:
    """The in-place restore's scratch box is one more TLS client of the repository host."""
    g = ini(bk.render_scratch_conf(spec(), 2, None, "secret-pass-phrase", "/etc", "/d/pgdata.restored"))["global"]
    assert g["repo1-host"] == "10.0.0.12" and g["repo1-host-type"] == "tls" and "repo1-path" not in g
    assert g["repo1-host-key-file"] == f"{layout.PGBACKREST_RUN_DIR}/client.key"
    assert g["repo1-cipher-pass"] == "secret-pass-phrase" and g["archive-mode"] == "off"


def test_nodes_mount_no_repository_with_a_repository_host() -> None:
    from stack.secrets import Secrets
    from stack.topology import patroni_node

    secrets = Secrets(superuser="s1", replication="s2", rewind="s3", restapi="s4")
    node = patroni_node(spec(), "pg-1", "img", "", secrets, "/conf").container
    assert layout.REPO_MOUNT not in node.volumes.values() and list(node.volumes) == ["rh-pg-1-data"]
    one = patroni_node(parse_spec({"scope": "one"}), "pg-1", "img", "10.1.0.0/24", secrets, "/conf").container
    assert one.volumes["one-pgbackrest"] == layout.REPO_MOUNT


def test_missing_names_of_an_older_certificate() -> None:
    from stack.backup_tls import missing_names

    s = spec()
    new = make_certificates(s)["server.crt"]
    assert missing_names(new, ["rh-repo", "10.0.0.11", "10.0.0.12"]) == []
    old = make_certificates(parse_spec({"scope": "rh"}))["server.crt"]  # single engine: names no address
    assert missing_names(old, ["rh-repo", "10.0.0.11"]) == ["10.0.0.11"]


def test_restore_into_a_cluster_on_the_same_hosts_is_refused() -> None:
    from flows.restore import target_spec
    from stack.errors import UsageError

    s3 = {"s3": {"bucket": "bkt", "endpoint": "s3.local"}}
    source = parse_spec({**BASE, "hosts": HOSTS, "backup": s3})
    with pytest.raises(UsageError, match=r"would run on the hosts of rh \(10.0.0.11, 10.0.0.12\).*--in-place --yes"):
        target_spec(source, "rh2", None)
    elsewhere = [{**h, "name": f"o{i}", "address": f"10.0.1.{i}"} for i, h in enumerate(HOSTS, start=1)]
    other = parse_spec({**BASE, "scope": "rh2", "hosts": elsewhere, "backup": s3})
    assert target_spec(source, None, other).scope == "rh2"
    assert bkd.shared_hosts_problem(ClusterSpec(scope="solo"), ClusterSpec(scope="solo2")) is None
