"""The cluster's TLS: one CA per cluster and the certificates etcd, Patroni and PostgreSQL present.

Pure (CPU only): `tasks.host.tls` generates the material once and keeps it 0600 in the cluster's
state directory; the renderers (`stack.render`, `stack.topology`) only name the paths.

One CA per cluster (10 years, its key kept 0600 so `pgha certs rotate` can issue new leaves from
it: clients that trust the CA keep working across a rotation). Leaves are valid `spec.tls.days`
(one year by default):
- `member`: every etcd member, Patroni REST API and PostgreSQL server of the cluster presents it
  (server and client auth: etcd peers and Patroni-to-etcd use it as their client certificate).
  Its SANs name every container a cluster can have, `localhost` and 127.0.0.1 (the host reaches
  PostgreSQL through HAProxy's ports on 127.0.0.1), so `sslmode=verify-full` works from both.
- `peer`: etcd's peer certificate (its members' raft connections to each other), held by the etcd
  members only. etcd accepts a peer only with this common name (`--peer-cert-allowed-cn`), so the
  member certificate a Patroni node holds cannot join or talk to the raft group as a peer.
- `client`: pgha's own client certificate (etcdctl from the host-side tasks). With etcd auth on
  (`stack.etcd_auth`) its common name is an etcd user with the root role: only the etcd members,
  where pgha runs etcdctl, hold it.
- `gateway`: the client certificate of etcd's JSON-gateway clients, the Patroni nodes and the
  fencing agent (etcd requires one from the CA). It has no common name at all: with auth on,
  etcd's gateway refuses a client certificate that has one (it cannot map it to a user), and
  these clients authenticate with a password instead. By itself it grants nothing.
- `pooler`: the certificate PgBouncer presents to its clients (127.0.0.1, localhost and its
  container's name), so they verify it as they verify HAProxy's path (`sslmode=verify-full`).
  Server auth only and no common name: as a client certificate etcd refuses it. Issued and
  rotated with the member and client certificates.
Each role receives only the files it uses (`ROLE_FILES`).
pgBackRest's TLS keeps its own CA (`stack.backup_tls`), which predates this one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from stack import layout
from stack.spec import ClusterSpec

CA_DAYS = 3650
MAX_MEMBERS = 9  # ClusterSpec.nodes' bound; etcd has at most 7
CA_FILES = ("ca.crt", "ca.key")  # ca.key stays on the host, never mounted
BASE_LEAVES = ("member.crt", "member.key", "client.crt", "client.key")
GATEWAY_LEAVES = ("gateway.crt", "gateway.key")
POOLER_LEAVES = ("pooler.crt", "pooler.key")
PEER_LEAVES = ("peer.crt", "peer.key")
LEAF_FILES = (*BASE_LEAVES, *GATEWAY_LEAVES, *POOLER_LEAVES, *PEER_LEAVES)
MOUNTED_FILES = ("ca.crt", *LEAF_FILES)
# What each role's config directory receives (and nothing else: a file of another role found
# there is removed by `tasks.host.tls.install`). HAProxy only verifies servers; the pooler verifies
# its server (through HAProxy) and presents its own certificate to its clients.
ROLE_FILES: dict[str, tuple[str, ...]] = {
    "etcd": ("ca.crt", "member.crt", "member.key", "client.crt", "client.key", *PEER_LEAVES),  # pgha's etcdctl runs there
    "patroni": ("ca.crt", "member.crt", "member.key", *GATEWAY_LEAVES),
    "haproxy": ("ca.crt",),
    "pooler": ("ca.crt", *POOLER_LEAVES),
    "fencer": ("ca.crt", *GATEWAY_LEAVES),
    "metrics": ("ca.crt",),  # Patroni's REST API verifies clients optionally: GETs need no certificate
}

# In a container: the mounted (root 0600) copies and the service user's private copies.
MOUNT_DIR = f"{layout.CONFIG_MOUNT}/{layout.TLS_SUBDIR}"
RUN_DIR = f"{layout.RUN_DIR}/{layout.TLS_SUBDIR}"
CA = f"{RUN_DIR}/ca.crt"
CERT = f"{RUN_DIR}/member.crt"
KEY = f"{RUN_DIR}/member.key"
CLIENT_CERT = f"{RUN_DIR}/client.crt"
CLIENT_KEY = f"{RUN_DIR}/client.key"
PEER_CERT = f"{RUN_DIR}/peer.crt"
PEER_KEY = f"{RUN_DIR}/peer.key"
GATEWAY_CERT = f"{RUN_DIR}/gateway.crt"
GATEWAY_KEY = f"{RUN_DIR}/gateway.key"
POOLER_CERT = f"{RUN_DIR}/pooler.crt"
POOLER_KEY = f"{RUN_DIR}/pooler.key"
# Root (docker exec, health checks, HAProxy) reads the mounted copies directly.
ROOT_CA = f"{MOUNT_DIR}/ca.crt"
ROOT_CLIENT_CERT = f"{MOUNT_DIR}/client.crt"
ROOT_CLIENT_KEY = f"{MOUNT_DIR}/client.key"
ROOT_MEMBER_CERT = f"{MOUNT_DIR}/member.crt"  # pgha's REST calls inside a Patroni node (any CA certificate)
ROOT_MEMBER_KEY = f"{MOUNT_DIR}/member.key"


def client_cn(scope: str) -> str:
    """The common name of pgha's client certificate: its etcd user name (CN-based auth)."""
    return f"{scope} pgha client"


def peer_cn(scope: str) -> str:
    """The common name of etcd's peer certificate: the only one etcd accepts from a peer."""
    return f"{scope} etcd peer"


def member_names(spec: ClusterSpec) -> list[str]:
    """DNS names a member certificate covers: every possible container of the scope, and localhost."""
    members = [f"pg-{i}" for i in range(1, MAX_MEMBERS + 1)] + [f"etcd-{i}" for i in range(1, MAX_MEMBERS + 1)]
    members += [spec.haproxy_member, spec.pooler_member]
    return [spec.container(m) for m in members] + ["localhost"]


def _pem_key(key: object) -> str:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                             serialization.NoEncryption()).decode()


def new_ca(common_name: str, days: int = CA_DAYS) -> dict[str, str]:
    """A self-signed CA: {"ca.crt", "ca.key"} (PEM). The cluster's CA and a lab's engine CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(key, hashes.SHA256()))
    return {"ca.crt": ca.public_bytes(serialization.Encoding.PEM).decode(), "ca.key": _pem_key(key)}


def make_ca(spec: ClusterSpec, days: int = CA_DAYS) -> dict[str, str]:
    return new_ca(f"pgha {spec.scope} cluster CA", days)


def issue(ca_files: dict[str, str], cn: str | None, dns: list[str], ips: list[str], days: int,
          client_auth: bool = True) -> tuple[str, str]:
    """(certificate, key) PEM signed by `ca_files`, valid `days`, for server and client auth
    (`cn` None: an empty subject; `client_auth` False: server auth only).

    Subject alternative names: `dns` as DNS names, `ips` as IP addresses (none: no SAN).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_files["ca.crt"].encode())
    ca_key = serialization.load_pem_private_key(ca_files["ca.key"].encode(), None)
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn is not None else [])
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         # Python 3.13's default contexts (Patroni's) verify strictly (VERIFY_X509_STRICT): key identifiers.
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)  # type: ignore[arg-type]
         .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                      crl_sign=False, content_commitment=False, data_encipherment=False,
                                      key_agreement=True, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                               *([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])]),
                        critical=False))
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)


def split_names(names: list[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) of `names`: an address that parses as an IP is an IP SAN."""
    dns: list[str] = []
    ips: list[str] = []
    for n in names:
        try:
            ipaddress.ip_address(n)
            ips.append(n)
        except ValueError:
            dns.append(n)
    return dns, ips


def make_leaves(spec: ClusterSpec, ca_files: dict[str, str]) -> dict[str, str]:
    """New member, client, gateway and pooler certificates signed by the cluster CA, valid `spec.tls.days`."""
    # many hosts: members are reached at their host's address
    host_dns, host_ips = split_names([h.address for h in spec.hosts or []])
    member_crt, member_key = issue(ca_files, f"{spec.scope} member", member_names(spec) + host_dns,
                                   ["127.0.0.1", "::1", *host_ips], spec.tls.days)
    client_crt, client_key = issue(ca_files, client_cn(spec.scope), [], [], spec.tls.days)
    return {"member.crt": member_crt, "member.key": member_key, "client.crt": client_crt, "client.key": client_key,
            **make_gateway_leaf(spec, ca_files), **make_pooler_leaf(spec, ca_files), **make_peer_leaf(spec, ca_files)}


def make_peer_leaf(spec: ClusterSpec, ca_files: dict[str, str]) -> dict[str, str]:
    """etcd's peer certificate (`peer_cn`): server and client auth, for every etcd container name and,
    with hosts, every host's address (a peer URL names one of them)."""
    host_dns, host_ips = split_names([h.address for h in spec.hosts or []])
    names = [spec.container(f"etcd-{i}") for i in range(1, MAX_MEMBERS + 1)] + host_dns + ["localhost"]
    crt, key = issue(ca_files, peer_cn(spec.scope), names, ["127.0.0.1", "::1", *host_ips], spec.tls.days)
    return {"peer.crt": crt, "peer.key": key}


def make_gateway_leaf(spec: ClusterSpec, ca_files: dict[str, str]) -> dict[str, str]:
    """The gateway clients' certificate: no common name (etcd's gateway refuses one with auth on)."""
    crt, key = issue(ca_files, None, [], [], spec.tls.days)
    return {"gateway.crt": crt, "gateway.key": key}


def make_pooler_leaf(spec: ClusterSpec, ca_files: dict[str, str]) -> dict[str, str]:
    """The pooler's server certificate for its clients: 127.0.0.1 (its published port), localhost,
    its container's name, and with hosts every host's address and client address (one pooler per
    host, one certificate for them all). Server auth only, and no common name: etcd (which requires
    a client certificate of the same CA) refuses it in the handshake, and would map it to no user."""
    addrs = dict.fromkeys(a for h in spec.hosts or [] for a in (h.address, h.client_address) if a)
    host_dns, host_ips = split_names(list(addrs))
    crt, key = issue(ca_files, None, [spec.container(spec.pooler_member), "localhost", *host_dns],
                     ["127.0.0.1", "::1", *(ip for ip in host_ips if ip not in ("127.0.0.1", "::1"))],
                     spec.tls.days, client_auth=False)
    return {"pooler.crt": crt, "pooler.key": key}


# Leaves added after the first clusters were made: issued alone for such a cluster (`tasks.host.tls`),
# since new member and client certificates would mean a rotation.
LATER_LEAVES = {GATEWAY_LEAVES: make_gateway_leaf, POOLER_LEAVES: make_pooler_leaf, PEER_LEAVES: make_peer_leaf}


@dataclass(frozen=True)
class CertInfo:
    name: str
    not_after: dt.datetime
    serial: int

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


def cert_info(name: str, pem: str) -> CertInfo:
    from cryptography import x509
    c = x509.load_pem_x509_certificate(pem.encode())
    return CertInfo(name, c.not_valid_after_utc, c.serial_number)


LEAVES = ("member.crt", "client.crt", "pooler.crt", "peer.crt")
CA_WARN_DAYS = 365  # a new CA means new trust for every client: warn a year ahead
CA_CRITICAL_DAYS = 30


def renewal_due(infos: list[CertInfo], now: dt.datetime, within_days: int) -> tuple[bool, str]:
    """(due, detail) for the member, client and pooler certificates: due when the one nearest to expiry has
    fewer than `within_days` days left (the CA is not renewed: see `ca_outcome`)."""
    leaves = [i for i in infos if i.name in LEAVES]
    if not leaves:
        return True, "no member or client certificate in the state directory"
    first = min(leaves, key=lambda i: i.not_after)
    left = first.days_left(now)
    detail = f"{first.name} expires {first.not_after:%Y-%m-%d} ({left:.1f} days left)"
    if left < within_days:
        return True, detail + f": fewer than {within_days} days, renewing"
    return False, detail + f": not within {within_days} days, nothing to do"


def ca_outcome(infos: list[CertInfo], now: dt.datetime) -> tuple[str, str]:
    """("ok"|"warning"|"critical", detail) for the cluster CA: warned a year ahead, because replacing
    it is not a reload but a new cluster's trust (clients hold the CA in sslrootcert)."""
    ca = next((i for i in infos if i.name == "ca.crt"), None)
    if ca is None:
        return "critical", "no CA (ca.crt) in the state directory"
    left = ca.days_left(now)
    detail = f"the cluster CA expires {ca.not_after:%Y-%m-%d} ({left:.0f} days)"
    if left <= CA_CRITICAL_DAYS:
        return "critical", detail
    if left <= CA_WARN_DAYS:
        return "warning", detail
    return "ok", detail


def expiry_outcome(infos: list[CertInfo], now: dt.datetime, warn_days: int) -> tuple[str, str]:
    """("ok"|"warning"|"critical", detail) for the member, client or pooler certificate nearest to expiry."""
    infos = [i for i in infos if i.name in LEAVES]
    if not infos:
        return "critical", "no member or client certificate found in the state directory"
    first = min(infos, key=lambda i: i.not_after)
    left = first.days_left(now)
    detail = f"{first.name} expires {first.not_after:%Y-%m-%d} ({left:.0f} days)"
    if left <= 0:
        return "critical", detail + ": expired, run `pgha certs rotate`"
    if left <= warn_days:
        return "warning", detail + f": within {warn_days} days, run `pgha certs renew`"
    return "ok", detail


START_SCRIPT = f"""#!/bin/sh
# Copy the mounted TLS files (root 0600) into the service user's own 0600 files, then start the role.
# Root keeps the directories (0711: traversable, not listable) and writes only into directories it
# owns: no step needs DAC_OVERRIDE, which the hardened roles do not have (stack/topology.py).
set -eu
user="$1"; shift
[ "$(stat -c %U {layout.RUN_DIR})" = root ] || chown root:root {layout.RUN_DIR}  # a restart: the tmpfs stays
chmod 0711 {layout.RUN_DIR}
install -d -m 0711 {RUN_DIR}
for f in {MOUNT_DIR}/*; do install -o "$user" -g "$user" -m 0600 "$f" {RUN_DIR}/; done
exec /usr/local/bin/pgha-entrypoint "$@"
"""
START_FILE = "tls-start.sh"
# Installs fresh copies in a running container (rotation); the service reloads them.
REINSTALL = f'for f in {MOUNT_DIR}/*; do install -o "$0" -g "$0" -m 0600 "$f" {RUN_DIR}/; done'
# The pooler's entrypoint hands /run/pgha to postgres (0700) once it has copied its files, and
# root there has no DAC_OVERRIDE: root takes the directory back for the copy, as the entrypoint
# does, and returns it (PgBouncer reads nothing there until the RELOAD that follows).
POOLER_REINSTALL = (f'chown root:root {layout.RUN_DIR} && ({REINSTALL}); rc=$?; '
                    f'chown "$0":"$0" {layout.RUN_DIR}; exit $rc')
