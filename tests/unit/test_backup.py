"""Pure backup decisions and rendered pgBackRest configs (no Docker)."""

from __future__ import annotations

import datetime as dt

import pytest

from stack import backup as bk
from stack import backup_decisions as bkd
from stack import backup_info as bki
from stack import layout
from stack.backup_tls import make_certificates
from stack.cluster import Member, MemberRole
from stack.errors import SpecError
from stack.render import dcs_config
from stack.secrets import Secrets
from stack.spec import ClusterSpec, parse_spec
from stack.topology import patroni_node

UTC = dt.UTC


def spec(**kw: object) -> ClusterSpec:
    return parse_spec({"scope": "pgha-unit", "nodes": 3, **kw})


def test_old_spec_without_backup_key_stays_valid_with_defaults() -> None:
    s = parse_spec({"scope": "old-one"})
    assert s.backup.enabled and s.backup.retention_full == 2 and s.backup.compress_type == "zst"


@pytest.mark.parametrize(("data", "needle"), [
    ({"backup": {"retention_full": 0}}, "backup.retention_full"),
    ({"backup": {"compress_type": "bzip9"}}, "backup.compress_type"),
    ({"backup": {"retension_full": 2}}, "unknown key"),
    ({"backup": {"s3": {"bucket": "bkt"}}}, "backup.s3.endpoint"),
])
def test_bad_backup_settings_are_one_line(data: dict[str, object], needle: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec({"scope": "x1", **data})
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_archiving_in_patroni_dynamic_config_and_repo_volume_in_every_node() -> None:
    s = spec()
    params = dcs_config(s)["postgresql"]["parameters"]
    assert params["archive_mode"] == "on"
    assert params["archive_command"] == f"pgbackrest --config={layout.NODE_CONF} --stanza=pgha-unit archive-push %p"
    sec = Secrets("a" * 10, "b" * 10, "c" * 10, "d" * 10)
    for m in s.node_names():
        vols = patroni_node(s, m, "img", "10.0.0.0/24", sec, "/state/conf").container.volumes
        assert vols["pgha-unit-pgbackrest"] == layout.REPO_MOUNT
    off = spec(backup={"enabled": False})
    assert "archive_mode" not in dcs_config(off)["postgresql"]["parameters"]
    assert "pgha-unit-pgbackrest" not in patroni_node(off, "pg-1", "img", "10.0.0.0/24", sec, "/state/conf").container.volumes


def test_backup_conf_names_every_node_over_tls_with_retention() -> None:
    text = bk.render_backup_conf(spec(backup={"retention_full": 3, "process_max": 4}), from_standby=True)
    for i in (1, 2, 3):
        assert f"pg{i}-host=pgha-unit-pg-{i}\n" in text and f"pg{i}-host-type=tls\n" in text
    assert "repo1-retention-full=3\n" in text and "process-max=4\n" in text and "backup-standby=y\n" in text
    assert "pg4-host" not in text
    assert "backup-standby=n\n" in bk.render_backup_conf(spec(), from_standby=False)


def test_node_conf_is_local_and_authorises_only_the_backup_client_for_its_stanza() -> None:
    text = bk.render_node_conf(spec())
    assert "pg1-host" not in text and "pg1-path=" in text
    assert f"tls-server-auth={bk.CLIENT_CN}=pgha-unit\n" in text


def test_s3_repository_rendered_with_credentials_only_from_the_side_file() -> None:
    s = spec(backup={"s3": {"bucket": "bkt", "endpoint": "minio:9000", "uri_style": "path"}})
    text = bk.render_backup_conf(s, True, {"key": "AK", "secret": "SK"})
    assert "repo1-type=s3\n" in text and "repo1-s3-bucket=bkt\n" in text and "repo1-s3-key-secret=SK\n" in text
    assert "repo1-path=/pgha\n" in text
    assert "SK" not in str(s.model_dump())


def test_certificates_cover_every_possible_node() -> None:
    from cryptography import x509

    certs = make_certificates(spec())
    server = x509.load_pem_x509_certificate(certs["server.crt"].encode())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "pgha-unit-pg-1" in names and "pgha-unit-pg-9" in names
    client = x509.load_pem_x509_certificate(certs["client.crt"].encode())
    assert client.subject.rfc4514_string() == f"CN={bk.CLIENT_CN}"


def test_choose_source_prefers_least_lagging_replica_and_refuses_without_one() -> None:
    L, R, S = MemberRole.LEADER, MemberRole.REPLICA, MemberRole.SYNC_STANDBY
    members = [Member("pg-1", L, "running", 1, 0), Member("pg-2", R, "streaming", 1, 500),
               Member("pg-3", S, "streaming", 1, 10)]
    assert bkd.choose_source(members, False) == bkd.Source("pg-3", True, "from replica pg-3 (lag 10 bytes)")
    alone = [Member("pg-1", L, "running", 1, 0), Member("pg-2", R, "stopped", None, None)]
    refused = bkd.choose_source(alone, False)
    assert refused.runner is None and "allow_primary" in refused.reason
    fallback = bkd.choose_source(alone, True)
    assert fallback.runner == "pg-1" and fallback.from_standby is False
    assert bkd.choose_source([], True).runner is None


def test_archive_config_differs_names_only_what_patroni_lacks() -> None:
    s = spec()
    want = bk.archive_parameters(s)
    assert set(bkd.archive_config_differs({}, s)) == set(want)
    # Patroni's YAML may hold archive_mode as a boolean: `on` and True are the same setting.
    same = {"postgresql": {"parameters": {**want, "archive_mode": True}}}
    assert bkd.archive_config_differs(same, s) == {}
    other = {"postgresql": {"parameters": {**want, "archive_command": "/bin/true"}}}
    assert bkd.archive_config_differs(other, s) == {"archive_command": want["archive_command"]}
    assert bkd.archive_config_differs({}, spec(backup={"enabled": False})) == {}


def _set(label: str, typ: str, start: int, error: bool = False) -> bki.BackupSet:
    t = dt.datetime.fromtimestamp(start, UTC)
    return bki.BackupSet(label, typ, t, t + dt.timedelta(seconds=10), 1, 1, "", "", error)


def test_pick_set_and_target_range() -> None:
    sets = [_set("F1", "full", 1000), _set("F1_D", "diff", 2000), _set("BAD", "full", 3000, error=True)]
    assert bkd.pick_set(sets, None).label == "F1_D"  # type: ignore[union-attr]
    assert "no backup set F9" in str(bkd.pick_set(sets, "F9"))
    assert "marked as failed" in str(bkd.pick_set(sets, "BAD"))
    assert "no backup yet" in str(bkd.pick_set([], None))
    now = dt.datetime.fromtimestamp(5000, UTC)
    assert bkd.check_target(dt.datetime.fromtimestamp(1500, UTC), sets, now) is None
    msg = bkd.check_target(dt.datetime.fromtimestamp(500, UTC), sets, now)
    assert msg and "outside the recoverable range" in msg and "1970-01-01 00:16:50+00" in msg
    assert "outside" in str(bkd.check_target(dt.datetime.fromtimestamp(6000, UTC), sets, now))
    assert "no backup" in str(bkd.check_target(now, [], now))


@pytest.mark.parametrize(("text", "ok"), [
    ("2026-11-25 21:03:00+00", True), ("2026-11-25T21:03:00Z", True), ("2026-11-25 21:03:00.123+01:00", True),
    ("2026-11-25 21:03:00", False), ("tomorrow", False),
])
def test_parse_target_time(text: str, ok: bool) -> None:
    v = bkd.parse_target_time(text)
    assert isinstance(v, dt.datetime) is ok
    if ok:
        assert v.tzinfo is not None  # type: ignore[union-attr]


def test_dump_pruning() -> None:
    names = ["20261125T010000Z", "20261124T010000Z", "20261126T010000Z", "junk"]
    assert bkd.dump_sets_to_remove(names, 2) == ["20261124T010000Z"]
    assert bkd.dump_sets_to_remove(names, 5) == []


def test_parse_info_reads_sets_annotations_and_archive_range() -> None:
    payload = [{"name": "s", "archive": [{"min": "000000010000000000000003", "max": "000000020000000000000009"}],
                "backup": [{"label": "L1", "type": "full", "timestamp": {"start": 100, "stop": 110},
                            "info": {"size": 2000, "repository": {"size": 300}},
                            "archive": {"start": "A", "stop": "B"}, "error": False,
                            "annotation": {bkd.ANN_TOKEN: "abc", bkd.ANN_COUNT: "4"}}]}]
    sets, lo, hi = bki.parse_info(payload, "s")
    assert [s.label for s in sets] == ["L1"] and sets[0].annotation[bkd.ANN_COUNT] == "4"
    assert (lo, hi) == ("000000010000000000000003", "000000020000000000000009")
    assert bki.parse_info(payload, "other") == ([], None, None)


def test_verify_output_parsing() -> None:
    clean = ("status: ok\n  backup: 1F, status: valid, total files checked: 9, total valid files: 9\n"
             "    missing: 0, checksum invalid: 0, size invalid: 0, other: 0\n")
    assert bki.verify_problems(clean) == []
    damaged = ("status: error\n  backup: 1F, status: invalid, total files checked: 9, total valid files: 8\n"
               "    missing: 0, checksum invalid: 1, size invalid: 0, other: 0\n")
    assert len(bki.verify_problems(damaged)) == 3


@pytest.mark.parametrize(("args", "needle"), [
    (["backup", "--type", "weekly"], "'weekly' is not one of 'full', 'diff', 'incr'"),
    (["restore", "--to", "soon", "--into", "x2"], "cannot read 'soon'"),
    (["restore", "--to", "2026-11-25 21:03:00", "--into", "x2"], "has no time zone"),
    (["restore", "--to", "2026-11-25 21:03:00+00"], "say where to restore"),
    (["restore", "--to", "2026-11-25 21:03:00+00", "--in-place"], "add --yes"),
    (["restore", "--to", "2026-11-25 21:03:00+00", "--in-place", "--yes", "--into", "x2"], "exclude each other"),
])
def test_cli_refuses_bad_arguments_in_one_line(args: list[str], needle: str) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgha: error:") and needle in lines[0], res.output


def test_into_spec_derived_from_source_with_ports_moved() -> None:
    from flows.restore import target_spec
    from stack.errors import UsageError

    src = spec(ports={"rw": 25500, "ro": 25501, "stats": 28500})
    new = target_spec(src, "pgha-unit-copy", None)
    assert new.scope == "pgha-unit-copy" and new.ports.rw == 25510 and new.nodes == src.nodes
    with pytest.raises(UsageError, match="another scope"):
        target_spec(src, "pgha-unit", None)
    with pytest.raises(UsageError, match="contradicts"):
        target_spec(src, "other-one", parse_spec({"scope": "third-one"}))


def _annotated(token: str | None, count: str | None) -> bki.BackupSet:
    ann = {k: v for k, v in ((bkd.ANN_TOKEN, token), (bkd.ANN_COUNT, count)) if v is not None}
    t = dt.datetime.fromtimestamp(1000, UTC)
    return bki.BackupSet("L1F", "full", t, t, 1, 1, "", "", False, ann)


def test_canary_annotation_read_and_checked_before_it_reaches_sql() -> None:
    assert bkd.canary_of(_annotated("0123456789abcdef", "42")) == ("0123456789abcdef", 42)
    assert bkd.canary_of(_annotated(None, None)) is None
    assert bkd.canary_of(_annotated("0123456789abcdef", None)) is None
    assert "malformed" in str(bkd.canary_of(_annotated("x' or '1'='1", "42")))
    assert "malformed" in str(bkd.canary_of(_annotated("0123456789abcdef", "-1")))


def test_canary_problem_in_the_restored_copy() -> None:
    s = _annotated("0123456789abcdef", "42")
    assert bkd.canary_problem(s, "0123456789abcdef", 42, 1, 42) is None
    assert "is missing from the restored copy" in str(bkd.canary_problem(s, "0123456789abcdef", 42, 0, 41))
    assert "41 rows in the restored copy, 42 when backed up" in str(bkd.canary_problem(s, "0123456789abcdef", 42, 1, 41))


def test_info_payload_skips_console_warnings_and_names_what_it_got() -> None:
    from tasks.pgbackrest import BackupError, info_payload

    text = 'P00   WARN: configuration file contains invalid option \'x\'\n[{"name": "s", "repo": []}]\n'
    assert info_payload(text) == [{"name": "s", "repo": []}]
    with pytest.raises(BackupError, match=r"unreadable JSON .*: P00   ERROR: \[055\]"):
        info_payload("P00   ERROR: [055]: unable to open missing file\n")
    with pytest.raises(BackupError, match=r"\(no output\)"):
        info_payload("")


def test_block_incremental_is_on_by_default_for_the_backups_that_write_the_repository() -> None:
    on = bk.render_backup_conf(spec(), from_standby=True)
    assert "repo1-bundle=y\n" in on and "repo1-block=y\n" in on
    assert "repo1-block=y\n" in bk.render_repo_conf(spec(), None)  # the repository host runs the backups too
    off = bk.render_backup_conf(spec(backup={"block_incremental": False}), from_standby=True)
    assert "repo1-bundle" not in off and "repo1-block" not in off
    # bookworm's pgBackRest 2.45 has it only as a beta: PostgreSQL 15's backups go without it
    old = bk.render_backup_conf(spec(postgres_version=15), from_standby=True)
    assert "repo1-bundle" not in old and "repo1-block" not in old
    # archive-push and restores read whatever the manifest says: the nodes' and scratch configs do not need it
    assert "repo1-block" not in bk.render_node_conf(spec()) and "repo1-block" not in bk.render_scratch_conf(spec())


def test_a_sets_stored_size_is_what_it_added_to_the_repository() -> None:
    """pgBackRest's `delta` (this set's own files), not `size` (with what it references)."""
    payload = [{"name": "s", "backup": [
        {"label": "F", "type": "full", "timestamp": {"start": 1, "stop": 2},
         "info": {"size": 9000, "repository": {"size": 900, "delta": 900}}},
        {"label": "F_I", "type": "incr", "timestamp": {"start": 3, "stop": 4},
         "info": {"size": 9000, "repository": {"size": 905, "delta": 12}}}]}]
    sets, _, _ = bki.parse_info(payload, "s")
    assert [s.repo_size for s in sets] == [900, 12]


def test_an_empty_info_output_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pgbackrest info` always prints JSON: an empty output with exit 0 was lost on the way."""
    from tasks import pgbackrest as pbr

    answers = iter(["", "[]"])
    monkeypatch.setattr(pbr, "run_ok", lambda *a, **k: next(answers))
    monkeypatch.setattr(pbr.time, "sleep", lambda s: None)
    assert pbr.info_text(spec(), "pg-1") == "[]"
