"""Repository encryption, S3 over TLS options, and the audit's backup rows (pure, no Docker)."""

from __future__ import annotations

import datetime as dt

import pytest

from stack import audit_backup as AB
from stack import backup as bk
from stack import backup_decisions as bkd
from stack import backup_info as bki
from stack.findings import Level
from stack.layout import PGBACKREST_RUN_DIR
from stack.spec import ClusterSpec, parse_spec

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def spec(**kw: object) -> ClusterSpec:
    return parse_spec({"scope": "pgha-unit", "nodes": 2, **kw})


@pytest.mark.parametrize(("encrypt", "has_pass", "state_exists", "want"), [
    (True, False, False, bkd.Cipher.NEW),  # a new cluster: encrypted
    (True, False, True, bkd.Cipher.PLAIN_EXISTING),  # made before encryption: stays plain
    (True, True, True, bkd.Cipher.ENCRYPTED),
    (False, True, True, bkd.Cipher.ENCRYPTED),  # a passphrase wins: the repository needs it
    (False, False, False, bkd.Cipher.PLAIN),
])
def test_cipher_state(encrypt: bool, has_pass: bool, state_exists: bool, want: bkd.Cipher) -> None:
    assert bkd.cipher_state(encrypt, has_pass, state_exists) == want


def test_encryption_is_on_by_default() -> None:
    assert spec().backup.encrypt is True


def test_every_config_carries_the_cipher_when_a_passphrase_is_given() -> None:
    s = spec()
    for text in (bk.render_node_conf(s, None, "PW"), bk.render_backup_conf(s, True, None, "PW"),
                 bk.render_scratch_conf(s, 2, None, "PW")):
        assert "repo1-cipher-type=aes-256-cbc\n" in text and "repo1-cipher-pass=PW\n" in text
    assert "cipher" not in bk.render_node_conf(s, None, None)


def test_scratch_conf_reads_the_same_s3_repository_as_the_nodes() -> None:
    s = spec(backup={"s3": {"bucket": "bkt", "endpoint": "s3.local", "uri_style": "path", "port": 9443,
                            "ca_file": "/tmp/ca.crt"}})
    node = bk.render_node_conf(s, {"key": "AK", "secret": "SK"}, "PW")
    scratch = bk.render_scratch_conf(s, 2, {"key": "AK", "secret": "SK"}, "PW", conf_dir="/etc", pgdata="/d/x")
    for text in (node, scratch):
        assert "repo1-type=s3\n" in text and "repo1-s3-bucket=bkt\n" in text and "repo1-storage-port=9443\n" in text
        assert "repo1-s3-key=AK\n" in text and "repo1-s3-uri-style=path\n" in text
    assert f"repo1-storage-ca-file={PGBACKREST_RUN_DIR}/{bk.S3_CA_FILE}\n" in node
    assert "repo1-storage-ca-file=/etc/s3-ca.crt\n" in scratch and "pg1-path=/d/x\n" in scratch
    assert "repo1-path=/pgha\n" in scratch


def test_parse_cipher_from_info_json() -> None:
    payload = [{"name": "other", "cipher": "none"},
               {"name": "pgha-unit", "cipher": "aes-256-cbc", "repo": [{"key": 1, "cipher": "aes-256-cbc"}]}]
    assert bki.parse_cipher(payload, "pgha-unit") == "aes-256-cbc"
    assert bki.parse_cipher([{"name": "pgha-unit", "cipher": "none"}], "pgha-unit") == "none"
    assert bki.parse_cipher({}, "pgha-unit") == "none"


def t(h: float) -> dt.datetime:
    return NOW - dt.timedelta(hours=h)


def test_archiving_failure_newer_than_success_is_critical() -> None:
    s = spec()
    failing = AB.ArchiverObs(10, 3, "0001", t(2), "0002", t(1))
    healed = AB.ArchiverObs(11, 3, "0002", t(0.5), "0002", t(1))
    never = AB.ArchiverObs(0, 1, None, None, "0001", t(1))
    assert AB.check_archiving(failing, s)[0].status == Level.CRITICAL
    assert AB.check_archiving(never, s)[0].status == Level.CRITICAL
    ok = AB.check_archiving(healed, s)[0]
    assert ok.status == Level.OK and "since recovered" in ok.observed
    assert AB.check_archiving(AB.ArchiverObs(5, 0, "x", t(1)), s)[0].status == Level.OK
    assert AB.check_archiving(None, s, "refused")[0].status == Level.CRITICAL
    assert AB.check_archiving(None, spec(backup={"enabled": False})) == []


def bset(label: str, kind: str, stop_h: float, error: bool = False) -> bki.BackupSet:
    return bki.BackupSet(label, kind, t(stop_h + 0.1), t(stop_h), 1, 1, "", "", error)


@pytest.mark.parametrize(("full_h", "diff_h", "want_full", "want_diff"), [
    (24, 2, Level.OK, Level.OK),
    (251, 2, Level.OK, Level.OK),  # weekly: warn at 252 h
    (252, 2, Level.WARN, Level.OK),
    (336, 2, Level.CRITICAL, Level.OK),
    (100, 36, Level.OK, Level.WARN),  # daily: warn at 36 h, critical at 48 h
    (100, 48, Level.OK, Level.CRITICAL),
])
def test_backup_age_thresholds_follow_the_schedules(full_h: float, diff_h: float, want_full: Level,
                                                    want_diff: Level) -> None:
    sets = [bset("F", "full", full_h), bset("D", "diff", diff_h)]
    rows = {f.check: f for f in AB.check_backup_ages(AB.RepoObs(sets, "aes-256-cbc"), spec(), NOW)}
    assert rows["backup.full_age"].status == want_full
    assert rows["backup.diff_age"].status == want_diff
    assert rows["backup.encryption"].status == Level.OK


def test_a_full_counts_as_the_newest_diff_and_failed_sets_do_not_count() -> None:
    rows = {f.check: f for f in AB.check_backup_ages(
        AB.RepoObs([bset("D", "diff", 60), bset("F", "full", 3), bset("X", "full", 1, error=True)], "none"),
        spec(), NOW)}
    assert rows["backup.diff_age"].status == Level.OK and rows["backup.diff_age"].observed.startswith("F:")
    assert rows["backup.full_age"].observed.startswith("F:")
    assert rows["backup.encryption"].status == Level.WARN  # unencrypted while the spec asks for it


def test_no_backup_yet_is_a_warning_and_a_broken_repository_critical() -> None:
    rows = AB.check_backup_ages(AB.RepoObs([], "aes-256-cbc"), spec(), NOW)
    assert [f.status for f in rows[:2]] == [Level.WARN, Level.WARN]
    assert AB.check_backup_ages(None, spec(), NOW, "no node")[0].status == Level.CRITICAL
    assert AB.check_encryption("none", spec(backup={"encrypt": False})).status == Level.OK
