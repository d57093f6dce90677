"""The cluster TLS material and its rendering (no Docker)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from stack import render, tls, topology
from stack.errors import SpecError
from stack.pooler import render_pgbouncer_ini
from stack.secrets import Secrets
from stack.spec import ClusterSpec, parse_spec

SUBNET = "172.30.0.0/16"
SECRETS = Secrets(superuser="su", replication="re", rewind="rw", restapi="ra")


def test_leaves_signed_by_the_ca_cover_every_name_and_127_0_0_1() -> None:
    spec = parse_spec({"scope": "lab", "tls": {"days": 365}})
    ca = tls.make_ca(spec)
    leaves = tls.make_leaves(spec, ca)
    ca_cert = x509.load_pem_x509_certificate(ca["ca.crt"].encode())
    member = x509.load_pem_x509_certificate(leaves["member.crt"].encode())
    member.verify_directly_issued_by(ca_cert)
    sans = member.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = sans.get_values_for_type(x509.DNSName)
    assert {"lab-pg-1", "lab-pg-9", "lab-etcd-1", "lab-haproxy", "lab-pooler", "localhost"} <= set(dns)
    assert "127.0.0.1" in {str(i) for i in sans.get_values_for_type(x509.IPAddress)}
    days = (member.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
    assert 363 <= days <= 365
    # a rotation issues new leaves from the same CA
    again = tls.make_leaves(spec, ca)
    assert again["member.crt"] != leaves["member.crt"]
    x509.load_pem_x509_certificate(again["member.crt"].encode()).verify_directly_issued_by(ca_cert)


def test_expiry_outcome_warns_30_days_before() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    far = tls.CertInfo("member.crt", now + dt.timedelta(days=200), 1)
    near = tls.CertInfo("client.crt", now + dt.timedelta(days=20), 2)
    gone = tls.CertInfo("client.crt", now - dt.timedelta(days=1), 3)
    assert tls.expiry_outcome([far], now, 30)[0] == "ok"
    level, detail = tls.expiry_outcome([far, near], now, 30)
    assert level == "warning" and "client.crt" in detail and "pgha certs renew" in detail
    assert tls.expiry_outcome([far, gone], now, 30)[0] == "critical"
    assert tls.expiry_outcome([], now, 30)[0] == "critical"
    ca_soon = tls.CertInfo("ca.crt", now + dt.timedelta(days=10), 4)
    assert tls.expiry_outcome([far, ca_soon], now, 30)[0] == "ok"  # the CA has its own row


def test_renewal_is_due_for_the_leaves_within_the_window() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    ca = tls.CertInfo("ca.crt", now + dt.timedelta(days=3), 9)  # never renewed: not what decides
    two_days = tls.CertInfo("member.crt", now + dt.timedelta(days=2), 1)
    year = tls.CertInfo("client.crt", now + dt.timedelta(days=365), 2)
    due, detail = tls.renewal_due([ca, two_days, year], now, 45)
    assert due and detail.startswith("member.crt expires 2030-01-03 (2.0 days left): fewer than 45 days")
    due, detail = tls.renewal_due([ca, year], now, 45)
    assert not due and "nothing to do" in detail
    assert tls.renewal_due([ca], now, 45)[0]  # no leaves at all: renew (the flow refuses without a CA)


def test_the_ca_is_reported_a_year_ahead() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    def ca(days: int) -> list[tls.CertInfo]:
        return [tls.CertInfo("ca.crt", now + dt.timedelta(days=days), 1)]
    assert tls.ca_outcome(ca(3650), now)[0] == "ok"
    assert tls.ca_outcome(ca(365), now) == ("warning", "the cluster CA expires 2031-01-01 (365 days)")
    assert tls.ca_outcome(ca(30), now)[0] == "critical"
    assert tls.ca_outcome([], now)[0] == "critical"


def test_renewal_must_come_before_the_audit_warns() -> None:
    assert parse_spec({"scope": "lab"}).tls.renew_within_days == 45
    with pytest.raises(SpecError, match=r"tls: renew_within_days \(30\) must be more than expiry_warn_days \(30\)"):
        parse_spec({"scope": "lab", "tls": {"renew_within_days": 30}})


def test_tls_rendering_etcd_patroni_haproxy_pooler() -> None:
    spec = parse_spec({"scope": "lab", "nodes": 2, "etcd_members": 1, "pooler": {"enabled": True}})
    flags = render.etcd_command(spec, "etcd-1")
    assert "--client-cert-auth" in flags and "--peer-client-cert-auth" in flags
    assert "--listen-client-urls=https://0.0.0.0:2379" in flags and f"--trusted-ca-file={tls.CA}" in flags
    cfg = yaml.safe_load(render.render_patroni_yml(spec, "pg-1", SUBNET, SECRETS))
    assert cfg["etcd3"]["protocol"] == "https" and cfg["etcd3"]["cert"] == tls.CERT
    assert cfg["restapi"]["certfile"] == tls.CERT and cfg["restapi"]["verify_client"] == "optional"
    assert cfg["restapi"]["authentication"]["username"] == "patroni"
    assert cfg["postgresql"]["parameters"]["ssl"] == "on"
    assert cfg["postgresql"]["authentication"]["replication"]["sslmode"] == "verify-full"
    assert all(not line.startswith("host ") for line in cfg["postgresql"]["pg_hba"])
    assert "check-ssl verify required ca-file /run/pgha/tls/ca.crt" in render.render_haproxy_cfg(spec)
    assert "server_tls_sslmode = verify-full" in render_pgbouncer_ini(spec)
    node = topology.patroni_node(spec, "pg-1", "img", SUBNET, SECRETS, "/c")
    assert node.container.entrypoint == ["/bin/sh", "/etc/pgha/tls-start.sh", "postgres"]
    assert node.container.command == ["patroni"] and tls.START_FILE in node.files
    assert any(a.startswith("https://") for a in node.container.healthcheck or [])
    # the TLS files never go into a definition: only paths
    assert "BEGIN" not in repr(node.container)


def test_tls_off_renders_the_plain_cluster() -> None:
    spec = ClusterSpec(scope="lab", tls={"enabled": False})  # type: ignore[arg-type]
    cfg = yaml.safe_load(render.render_patroni_yml(spec, "pg-1", SUBNET, SECRETS))
    assert "protocol" not in cfg["etcd3"] and "certfile" not in cfg["restapi"]
    assert f"host all all {SUBNET} scram-sha-256" in cfg["postgresql"]["pg_hba"]
    node = topology.patroni_node(spec, "pg-1", "img", SUBNET, SECRETS, "/c")
    assert node.container.entrypoint is None and node.container.command == []


def test_green_shares_blues_ca_even_over_a_stale_green_directory(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A `<scope>-green` state directory left by an earlier upgrade of another cluster of the same
    scope holds another CA: green must come out with blue's CA and leaves that CA signed."""
    from tasks.host import tls as host_tls

    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    old_blue = parse_spec({"scope": "life", "nodes": 2, "etcd_members": 1})
    green = parse_spec({"scope": "life-green", "nodes": 2, "etcd_members": 1})
    host_tls.share_ca(old_blue, green)
    stale = host_tls.material(green)
    for f in ("ca.crt", "ca.key"):  # the first cluster is taken down; a new one of the same scope is made
        (tmp_path / "life" / "tls" / f).unlink()
    blue = old_blue
    new_ca = host_tls.material(blue)
    assert new_ca["ca.crt"] != stale["ca.crt"]

    host_tls.share_ca(blue, green)
    got = host_tls.material(green)
    assert got["ca.crt"] == new_ca["ca.crt"] and got["member.crt"] != stale["member.crt"]
    member = x509.load_pem_x509_certificate(got["member.crt"].encode())
    member.verify_directly_issued_by(x509.load_pem_x509_certificate(new_ca["ca.crt"].encode()))  # raises if not
    with pytest.raises(Exception):  # noqa: B017 - the stale CA's signature no longer verifies it
        member.verify_directly_issued_by(x509.load_pem_x509_certificate(stale["ca.crt"].encode()))
    again = dict(got)
    host_tls.share_ca(blue, green)  # a resumed upgrade: nothing re-issued
    assert host_tls.material(green) == again


def test_the_pooler_presents_its_own_certificate_to_its_clients() -> None:
    spec = parse_spec({"scope": "lab", "nodes": 2, "etcd_members": 1})
    ca = tls.make_ca(spec)
    leaves = tls.make_leaves(spec, ca)
    pooler = x509.load_pem_x509_certificate(leaves["pooler.crt"].encode())
    pooler.verify_directly_issued_by(x509.load_pem_x509_certificate(ca["ca.crt"].encode()))
    sans = pooler.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"lab-pooler", "localhost"}
    assert "127.0.0.1" in {str(i) for i in sans.get_values_for_type(x509.IPAddress)}  # its published port
    assert list(pooler.subject) == []  # no common name: etcd maps it to no user
    eku = pooler.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]  # not a client certificate (etcd refuses it)
    ini = render_pgbouncer_ini(spec)
    assert "client_tls_sslmode = require" in ini and f"client_tls_cert_file = {tls.POOLER_CERT}" in ini
    assert f"client_tls_key_file = {tls.POOLER_KEY}" in ini and f"client_tls_ca_file = {tls.CA}" in ini
    assert "pooler.crt" in tls.LEAVES  # renewal and the audit's expiry row cover it
    plain = parse_spec({"scope": "lab", "tls": {"enabled": False}})
    assert "client_tls" not in render_pgbouncer_ini(plain)


def test_over_hosts_the_pooler_certificate_names_every_hosts_addresses() -> None:
    hosts = [{"name": f"h{i}", "docker": f"ssh://pgha@10.0.0.{i}", "address": f"10.0.0.{i}",
              **({"client_address": "db3.example"} if i == 3 else {})} for i in (1, 2, 3)]
    spec = parse_spec({"scope": "lab", "nodes": 3, "etcd_members": 3, "hosts": hosts, "backup": {"enabled": False},
                       "ports": {"rw": 5000, "ro": 5001, "stats": 7000}})
    leaves = tls.make_leaves(spec, tls.make_ca(spec))
    pooler = x509.load_pem_x509_certificate(leaves["pooler.crt"].encode())
    sans = pooler.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"lab-pooler", "localhost", "db3.example"}
    assert {str(i) for i in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1", "10.0.0.1",
                                                                           "10.0.0.2", "10.0.0.3"}


def test_pgha_verifies_the_pooler_like_the_rw_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.postgres import dsn, server_auth_params

    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    spec = parse_spec({"scope": "lab"})
    pooled = dsn(spec, pooled=True)
    assert pooled.startswith("postgresql://postgres@127.0.0.1:6432/postgres?sslmode=verify-full&sslrootcert=")
    assert pooled.endswith("/lab/tls/ca.crt")
    assert server_auth_params(spec)["sslmode"] == "verify-full"
    assert server_auth_params(spec)["require_auth"] == "scram-sha-256"
    plain = parse_spec({"scope": "lab", "tls": {"enabled": False}})
    assert dsn(plain, pooled=True) == "postgresql://postgres@127.0.0.1:6432/postgres"


def test_a_cluster_older_than_the_pooler_certificate_gets_it_alone(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.host import tls as host_tls

    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    spec = parse_spec({"scope": "old"})
    first = host_tls.material(spec)
    for f in tls.POOLER_LEAVES:
        (tmp_path / "old" / "tls" / f).unlink()
    again = host_tls.material(spec)
    assert {f: again[f] for f in tls.BASE_LEAVES + tls.GATEWAY_LEAVES} == \
        {f: first[f] for f in tls.BASE_LEAVES + tls.GATEWAY_LEAVES}  # no rotation
    assert again["pooler.crt"] != first["pooler.crt"] and (tmp_path / "old" / "tls" / "pooler.key").exists()
    assert "pooler.crt" in {i.name for i in host_tls.certificates(spec)}


def test_etcd_peers_present_their_own_certificate_and_accept_no_other(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """etcd's peer certificate is its own (common name `<scope> etcd peer`, held by etcd members only);
    etcd accepts no other common name from a peer, except while an older multi-member etcd moves to it."""
    from tasks.host import tls as host_tls

    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    spec = parse_spec({"scope": "peers", "etcd_members": 3})
    flags = render.etcd_command(spec, "etcd-2")
    assert f"--peer-cert-file={tls.PEER_CERT}" in flags and f"--peer-key-file={tls.PEER_KEY}" in flags
    assert "--peer-cert-allowed-cn=peers etcd peer" in flags and f"--cert-file={tls.CERT}" in flags
    assert not any(f.startswith("--peer-cert-allowed-cn") for f in render.etcd_command(spec, "etcd-2", peer_cn=False))
    files = host_tls.material(spec)
    peer = x509.load_pem_x509_certificate(files["peer.crt"].encode())
    assert peer.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "peers etcd peer"
    sans = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "peers-etcd-1" in sans and "peers-pg-1" not in sans
    assert "peer.key" in tls.ROLE_FILES["etcd"]
    assert not [r for r, fs in tls.ROLE_FILES.items() if r != "etcd" and "peer.key" in fs]
    # The move of an older etcd: off while members still present the member certificate, then on.
    assert host_tls.peer_cn_enforced(spec, etcd_live=False)  # a new etcd: on from the start
    assert not host_tls.peer_cn_enforced(spec, etcd_live=True)
    assert host_tls.peer_cn_enforced(parse_spec({"scope": "peers", "etcd_members": 1}), etcd_live=True)  # no peer
    host_tls.mark_peer_cn(spec)
    assert host_tls.peer_cn_enforced(spec, etcd_live=True)
    # A cluster made before the peer certificate gets it alone (no rotation of the others).
    for f in tls.PEER_LEAVES:
        (tmp_path / "peers" / "tls" / f).unlink()
    again = host_tls.material(spec)
    assert again["member.crt"] == files["member.crt"] and again["peer.crt"] != files["peer.crt"]
