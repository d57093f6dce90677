"""The support report's allowlist, secret inventory and scan (stack.report), without Docker."""

from __future__ import annotations

import base64
import json
import os

from stack import report as rp
from stack.spec import ClusterSpec


def test_support_files_hold_no_credential_and_say_the_cipher_is_on() -> None:
    spec = ClusterSpec(scope="r1", nodes=2, etcd_members=1)
    files = rp.support_files(spec, "172.30.0.0/24", encrypted=True)
    assert set(files) >= {"spec.yaml", "config/pg-1/patroni.yml", "config/pg-2/pgbackrest/node.conf",
                          "config/pg-1/pgbackrest/backup.conf", "config/haproxy/haproxy.cfg",
                          "config/etcd-1/etcd.flags", "config/fencer/fencer.json"}
    assert "repo1-cipher-pass=[REDACTED]" in files["config/pg-1/pgbackrest/node.conf"]
    assert "password: '[REDACTED]'" in files["config/pg-1/patroni.yml"]
    assert "172.30.0.0/24" in files["config/pg-1/patroni.yml"]
    off = rp.support_files(spec.model_copy(update={"backup": spec.backup.model_copy(update={"encrypt": False})}),
                           None, encrypted=False)
    assert "cipher" not in off["config/pg-1/pgbackrest/node.conf"] and rp.UNKNOWN_SUBNET in off["config/pg-1/patroni.yml"]


def test_secrets_in_file_by_kind() -> None:
    assert rp.secrets_in_file("secrets.json", json.dumps({"superuser": "a" * 20, "n": {"x": "b" * 9}, "k": 3})) == [
        "a" * 20, "b" * 9]
    assert rp.secrets_in_file("pgpass", "h:5432:*:postgres:pa\\:ss-word-1\n") == ["pa:ss-word-1"]
    key = "-----BEGIN PRIVATE KEY-----\nAAAABBBBCCCC\nDDDDEEEE\n-----END PRIVATE KEY-----\n"
    assert rp.secrets_in_file("config/x/whatever", key) == ["AAAABBBBCCCC", "DDDDEEEE", "AAAABBBBCCCCDDDDEEEE"]
    assert rp.secrets_in_file("pgbackrest/cipher.pass", "s3cr3t-passphrase\n") == ["s3cr3t-passphrase"]
    assert "tok3n-value" in rp.secrets_in_file("api-auth", "pgha:tok3n-value\n")
    assert rp.secrets_in_file("config/pg-1/patroni.curl",
                              'user = "patroni:rest-pass-123"\ncert = "/etc/pgha/tls/client.crt"\n') == ["rest-pass-123"]
    # Ordinary files hold none (a certificate, a config): the scan would otherwise refuse every report.
    assert rp.secrets_in_file("tls/ca.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n") == []
    assert rp.secrets_in_file("config/haproxy/haproxy.cfg", "global\n    maxconn 2000\n") == []


def test_base64_forms_find_a_secret_at_any_offset_in_either_alphabet() -> None:
    for i in range(60):
        secret = os.urandom(12 + i % 5)
        stream = os.urandom(i % 7) + secret + os.urandom(i % 4)
        forms = rp.base64_forms(secret)
        for enc in (base64.b64encode(stream), base64.urlsafe_b64encode(stream)):
            assert any(f in enc for f in forms), (i, enc)


def test_leaks_name_the_member_and_redaction_clears_logs() -> None:
    secret = "cipher-passphrase-xyz"
    forms = rp.secret_forms([secret, "short"])
    assert secret.encode() in forms and b"short" not in forms
    log = f"line one\nprinted {secret} and {base64.b64encode(b'ab' + secret.encode()).decode()}\n"
    clean = rp.redact(log, forms)
    assert rp.leaks({"logs/pg-1.log": clean.encode()}, forms) == []
    members = {"a/spec.yaml": b"fine", "a/logs/pg-1.log": log.encode(),
               "a/x": base64.b64encode(secret.encode())}
    assert rp.leaks(members, forms) == ["a/logs/pg-1.log", "a/x"]


def test_listing_shows_names_modes_and_sizes() -> None:
    assert rp.listing([("secrets.json", 0o600, 120)]) == "0600       120 secrets.json\n"
