"""Bounded growth: what the state directory keeps (stack.housekeeping, tasks.host.prune) and the
audit rows of the sizes pgha bounds (stack.audit_sizes). No Docker: pure decisions, and one test
that writes many files into a temporary state directory and sees each kind bounded."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from stack import housekeeping as hk
from stack.audit_sizes import (
    DiskObs,
    RepoSizeObs,
    ServerDbObs,
    check_repository_size,
    check_server_db,
    check_wal,
    parse_df_du,
    pg_size_bytes,
    wal_normal_bytes,
)
from stack.backup_info import BackupSet
from stack.cluster import TimelineSwitch
from stack.errors import SpecError
from stack.findings import Level
from stack.operator import history_events
from stack.render import dcs_config
from stack.spec import ClusterSpec, parse_spec

SPEC = ClusterSpec(scope="lab")
TH = SPEC.audit
GIB, MIB = 2**30, 2**20


def line(op: str, at: float, **extra: object) -> str:
    return json.dumps({"at": at, "operation": op, "started": at - 5, "outcome": "completed", **extra})


# ---- the journal ----

def test_journal_within_its_bound_is_left_alone() -> None:
    lines = [line("backup", float(i)) for i in range(10)]
    assert hk.trim_journal(lines, 100_000, 1000.0) is None


def test_journal_trim_keeps_the_newest_half_a_mark_and_each_sets_last_verification() -> None:
    lines = [line("verify-restore", 10.0, label="20260101-000000F", verified=False),
             line("verify-restore", 11.0, label="20260101-000000F", verified=True),
             line("verify-restore", 12.0, label="20260102-000000F_20260103-000000D", verified=True)]
    lines += [line("backup", 100.0 + i, pad="x" * 100) for i in range(200)]
    size = sum(len(x) + 1 for x in lines)
    kept = hk.trim_journal(lines, size - 1, 1000.0)
    assert kept is not None
    assert sum(len(x) + 1 for x in kept) <= size // 2 + 1000  # half the bound, plus the mark and verifications
    entries = [json.loads(x) for x in kept]
    assert entries[0]["operation"] == hk.JOURNAL_MARK
    verified = [e for e in entries if e["operation"] == "verify-restore"]
    # The newest line of each set, in the journal's order; the older failed one of the first set is gone.
    assert [(e["label"], e["verified"]) for e in verified] == [("20260101-000000F", True),
                                                               ("20260102-000000F_20260103-000000D", True)]
    dropped_ends = [json.loads(x)["at"] for x in lines if x not in kept]
    assert entries[0]["trimmed_before"] == max(dropped_ends)
    assert entries[-1] == json.loads(lines[-1])
    # A second trim carries the verifications again and moves the mark on; the journal stays bounded.
    again = hk.trim_journal(kept + [line("backup", 900.0 + i, pad="y" * 200) for i in range(200)], size - 1, 2000.0)
    assert again is not None and sum(len(x) + 1 for x in again) < size
    assert len([x for x in again if hk.JOURNAL_MARK in x]) == 1
    assert {json.loads(x).get("label") for x in again if "verify-restore" in x} >= {"20260101-000000F"}


def test_history_before_the_cut_is_unknown_not_a_failover() -> None:
    journal = [{"at": 5000.0, "operation": hk.JOURNAL_MARK, "trimmed_before": 4000.0},
               {"at": 6000.0, "operation": "switchover", "started": 5990.0, "outcome": "completed"}]
    history = [TimelineSwitch(timeline=1, time=dt.datetime.fromtimestamp(3000, dt.UTC).isoformat(), new_leader="pg-2"),
               TimelineSwitch(timeline=2, time=dt.datetime.fromtimestamp(5995, dt.UTC).isoformat(), new_leader="pg-1"),
               TimelineSwitch(timeline=3, time=dt.datetime.fromtimestamp(7000, dt.UTC).isoformat(), new_leader="pg-3")]
    causes = [e.cause for e in history_events(history, journal)]
    assert causes == ["unknown", "switchover", "failover"]
    assert hk.trimmed_before(journal) == 4000.0 and hk.trimmed_before(journal[1:]) is None


# ---- charts and moved-aside directories ----

def test_charts_keep_the_newest() -> None:
    names = [f"2026120{d}T120000-kill.png" for d in range(1, 8)] + ["notes.txt"]
    assert hk.charts_to_remove(names, 5) == ["20261201T120000-kill.png", "20261202T120000-kill.png"]
    assert hk.charts_to_remove(names[:3], 5) == []


def test_removed_dirs_go_when_their_repository_is_gone() -> None:
    names = ["lab.removed-20260101T000000Z", "lab.removed-20260301T000000Z", "lab.removed-junk"]
    # The volume kept now was made after the first teardown: it is a later cluster's.
    made = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    assert hk.obsolete_removed_dirs(names, s3=False, repo_created=made) == ["lab.removed-20260101T000000Z"]
    assert hk.obsolete_removed_dirs(names, s3=False, repo_created=None) == names[:2]
    # The repository the newest belongs to is still there; with S3 pgha cannot tell: none is deleted.
    assert hk.obsolete_removed_dirs(names, s3=False, repo_created=dt.datetime(2025, 1, 1, tzinfo=dt.UTC)) == []
    assert hk.obsolete_removed_dirs(names, s3=True, repo_created=None) == []


@pytest.mark.parametrize(("field", "value", "message"), [
    ("journal_kib", 10, "state.journal_kib: Input should be greater than or equal to 64"),
    ("drill_charts", 0, "state.drill_charts: Input should be greater than or equal to 1"),
])
def test_bad_state_limits_are_refused(field: str, value: int, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"scope": "lab", "state": {field: value}})
    assert message in str(info.value)


# ---- a state directory filled by many writers stays bounded ----

def test_a_busy_state_directory_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.host import journal, prune
    from tasks.host.state import cluster_dir, removed_dir

    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    cluster_dir("lab").mkdir(parents=True)
    bound = 64 * 1024
    for i in range(3000):  # years of operations, a verification now and then
        detail = {"label": f"set-{i // 100}", "verified": True} if i % 50 == 0 else {"pad": "z" * 80}
        journal.record("lab", {"operation": "verify-restore" if i % 50 == 0 else "backup",
                               "started": float(i), **detail}, max_bytes=bound)
        assert (cluster_dir("lab") / journal.FILE).stat().st_size <= bound
    kept = journal.entries("lab")
    assert kept[0]["operation"] == hk.JOURNAL_MARK
    assert {e["label"] for e in kept if e.get("operation") == "verify-restore"} == {f"set-{n}" for n in range(30)}

    drills = prune.drills_dir("lab")
    drills.mkdir()
    for i in range(120):
        (drills / f"20261206T{i:06d}-kill.png").write_bytes(b"png")
        prune.prune_drill_charts("lab", 50)
    assert sorted(p.name for p in drills.iterdir())[0] == "20261206T000070-kill.png"
    assert len(list(drills.iterdir())) == 50

    for stamp in ("20260101T000000Z", "20260601T000000Z"):
        removed_dir("lab", stamp).mkdir()
        (removed_dir("lab", stamp) / "secrets.json").write_text("{}")
    gone = prune.prune_removed_dirs("lab", s3=False, repo_created=dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    assert gone == [str(removed_dir("lab", "20260101T000000Z"))]
    assert removed_dir("lab", "20260601T000000Z").is_dir()

    server = tmp_path / "server"
    server.mkdir()
    log = server / "worker.log"
    with open(log, "ab") as writer:  # held open in append mode, as the worker does
        for _ in range(30):
            writer.write(b"x" * (MIB // 2))
            writer.flush()
            prune.rotate_server_logs(4 * MIB)
        writer.write(b"after\n")
        writer.flush()
    assert log.stat().st_size <= 4 * MIB + 16 and (server / "worker.log.1").stat().st_size <= 4 * MIB + MIB
    assert log.read_bytes().endswith(b"after\n") and not log.read_bytes().startswith(b"\0")
    assert sorted(p.name for p in server.iterdir()) == ["worker.log", "worker.log.1"]


# ---- the audit's size rows ----

def test_pg_sizes_and_the_normal_wal() -> None:
    assert pg_size_bytes("1GB") == GIB and pg_size_bytes("128MB") == 128 * MIB and pg_size_bytes("2048") == 2 * GIB
    assert pg_size_bytes("lots") is None
    params = dcs_config(SPEC)["postgresql"]["parameters"]
    assert wal_normal_bytes(params) == GIB + 128 * MIB  # PostgreSQL's max_wal_size, pgha's wal_keep_size
    spec = ClusterSpec(scope="lab", postgres_parameters={"max_wal_size": "4GB"})
    assert wal_normal_bytes(dcs_config(spec)["postgresql"]["parameters"]) == 4 * GIB + 128 * MIB


@pytest.mark.parametrize(("wal", "free", "expected"), [
    (300 * MIB, 50 * GIB, Level.OK),
    (int(2.3 * GIB), 50 * GIB, Level.WARN),
    (5 * GIB, 50 * GIB, Level.CRITICAL),
    (300 * MIB, 500 * MIB, Level.WARN),  # less free space than a checkpoint cycle may need
])
def test_wal_rows(wal: int, free: int, expected: Level) -> None:
    params = {"max_wal_size": "1GB", "wal_keep_size": "128MB"}
    disks = {"pg-1": DiskObs(10 * GIB, free, wal), "pg-2": DiskObs(10 * GIB, 50 * GIB, None), "pg-3": None}
    fs = check_wal(disks, SPEC, TH, params)
    assert [(f.target, f.status) for f in fs] == [("pg-1", expected)]
    assert "in pg_wal" in fs[0].observed and ("runbooks.md#disk-wal" in fs[0].hint) == (expected != Level.OK)


def full(size: int) -> BackupSet:
    t = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    return BackupSet("20261201-000000F", "full", t, t, size * 3, size, "", "", False)


@pytest.mark.parametrize(("used", "avail", "full_size", "expected"), [
    (10 * GIB, 90 * GIB, 5 * GIB, Level.OK),
    (85 * GIB, 15 * GIB, 1 * GIB, Level.WARN),  # 85% used
    (95 * GIB, 5 * GIB, 1 * GIB, Level.CRITICAL),  # 95% used
    (10 * GIB, 90 * GIB, 50 * GIB, Level.WARN),  # one more full fits, not two
    (10 * GIB, 90 * GIB, 100 * GIB, Level.CRITICAL),  # the next full does not fit
])
def test_repository_rows(used: int, avail: int, full_size: int, expected: Level) -> None:
    f = check_repository_size(RepoSizeObs(8 * GIB, used, avail), [full(full_size)], SPEC, TH)[0]
    assert f.check == "backup.repository_size" and f.status == expected, f


def test_repository_row_without_a_measure_with_s3_and_without_backups() -> None:
    assert check_repository_size(None, None, SPEC, TH, "no node runs")[0].status == Level.WARN
    s3 = parse_spec({"scope": "lab", "backup": {"s3": {"bucket": "bucket", "endpoint": "s3.local"}}})
    f = check_repository_size(None, [full(GIB), full(2 * GIB)], s3, s3.audit)[0]
    assert f.status == Level.OK and f.observed.startswith("3.0 GiB in 2 backup sets (S3")
    off = ClusterSpec(scope="lab", backup={"enabled": False})  # type: ignore[arg-type]
    assert check_repository_size(None, None, off, off.audit) == []


@pytest.mark.parametrize(("size", "free", "expected"), [
    (300 * MIB, 50 * GIB, Level.OK),
    (3 * GIB, 50 * GIB, Level.WARN),
    (9 * GIB, 50 * GIB, Level.CRITICAL),
    (300 * MIB, 100 * MIB, Level.WARN),
])
def test_server_database_rows(size: int, free: int, expected: Level) -> None:
    f = check_server_db(ServerDbObs("/p/prefect.db", size, free, server_running=True), TH)[0]
    assert f.status == expected and "/p/prefect.db" in f.observed


def test_server_database_unreadable_is_ok_unknown() -> None:
    f = check_server_db(ServerDbObs("", note="not a SQLite file on this host"), TH)[0]
    assert f.status == Level.OK and f.observed == "size unknown: not a SQLite file on this host"
    assert check_server_db(None, TH, "PermissionError: /x")[0].observed == "size unknown: PermissionError: /x"


def test_df_and_du_in_one_output() -> None:
    out = ("Filesystem     1024-blocks     Used Available Capacity Mounted on\n"
           "/dev/vda         264212084 29510600  76880312      28% /\n"
           "pgha-du\n2936\t/var/lib/postgresql/data/pgdata/pg_wal/\npgha-du\n")
    assert parse_df_du(out, 2) == (29510600 * 1024, 76880312 * 1024, [2936 * 1024, None])
    assert parse_df_du("df: /x: No such file or directory\n", 1) is None
