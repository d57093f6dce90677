"""TLS material for pgBackRest's servers: one CA per cluster, a server and a client certificate.

Pure (CPU only): tasks/pgbackrest.py generates it once and keeps it 0600 in the cluster's
state directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from stack.backup import CLIENT_CN, MAX_NODES
from stack.spec import ClusterSpec


def server_names(spec: ClusterSpec) -> list[str]:
    """What the one server certificate is valid for: every possible node's container name, the
    repository host's, and (many hosts: host networking) every host's address, where pgBackRest's
    clients reach the servers. An address that is an IP becomes an IP SAN."""
    names = [spec.container(f"pg-{i}") for i in range(1, MAX_NODES + 1)]
    names.append(spec.container(spec.repo_member))
    names += [h.address for h in spec.hosts or []]
    return list(dict.fromkeys(names))


def make_certificates(spec: ClusterSpec, days: int = 3650) -> dict[str, str]:
    """CA, a server certificate valid for every possible node name, and the backup client's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(k: ec.EllipticCurvePrivateKey) -> str:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()).decode()

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name(f"pgha {spec.scope} backup CA"))
          .issuer_name(name(f"pgha {spec.scope} backup CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def san(n: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(n))
        except ValueError:
            return x509.DNSName(n)

    def leaf(cn: str, sans: list[str]) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName([san(s) for s in sans]), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM).decode(), pem_key(key)

    server_crt, server_key = leaf(f"{spec.scope}-pgbackrest", server_names(spec))
    client_crt, client_key = leaf(CLIENT_CN, [])
    return {"ca.crt": ca.public_bytes(serialization.Encoding.PEM).decode(), "server.crt": server_crt,
            "server.key": server_key, "client.crt": client_crt, "client.key": client_key}


def missing_names(server_crt: str, names: list[str]) -> list[str]:
    """Of `names`, those the server certificate does not name (an IP compared as an IP SAN)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(server_crt.encode())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return list(names)
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    return [n for n in names if n not in dns and n not in ips]
