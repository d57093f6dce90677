"""`pgha site rebuild`'s decisions: rewind or clone, what pg_controldata, a timeline history and
pg_waldump say, what Patroni's log says its rewind did, and the line naming what is discarded."""

from __future__ import annotations

import pytest

from stack import site_rebuild as R

CONTROLDATA = """pg_control version number:            1700
Catalog version number:               202406281
Database system identifier:           7445012345678901234
Database cluster state:               in production
pg_control last modified:             Mon 07 Dec 2026 18:20:01 UTC
Latest checkpoint location:           0/5000060
Latest checkpoint's REDO location:    0/5000028
Latest checkpoint's TimeLineID:       2
Latest checkpoint's PrevTimeLineID:   2
Minimum recovery ending location:     0/0
Min recovery ending loc's timeline:   0
wal_log_hints setting:                on
Data page checksum version:           0
"""

HISTORY = "1\t0/3000148\tno recovery target specified\n\n2\t0/5001A30\tno recovery target specified\n"

WALDUMP_OUT = """rmgr: Heap        len (rec/tot):     54/    54, tx:        801, lsn: 0/05001A30, prev 0/050019F8, desc: INSERT off: 7, flags: 0x00, blkref #0: rel 1663/5/16390 blk 0
rmgr: Transaction len (rec/tot):     34/    34, tx:        801, lsn: 0/05001A68, prev 0/05001A30, desc: COMMIT 2026-12-07 18:20:00.901 UTC
rmgr: Heap        len (rec/tot):     54/    54, tx:        802, lsn: 0/05001A90, prev 0/05001A68, desc: INSERT off: 8, flags: 0x00, blkref #0: rel 1663/5/16390 blk 0
rmgr: Transaction len (rec/tot):     34/    34, tx:        802, lsn: 0/05001AC8, prev 0/05001A90, desc: COMMIT 2026-12-07 18:20:00.951 UTC
rmgr: Standby     len (rec/tot):     50/    50, tx:          0, lsn: 0/05001AF0, prev 0/05001AC8, desc: RUNNING_XACTS nextXid 803
"""
WALDUMP_ERR = ("pg_waldump: error: error in WAL record at 0/5001AF0: invalid record length at 0/5001B28: "
               "expected at least 24, got 0\n")


def test_controldata_parsed_and_the_old_leader_is_the_primary_furthest_ahead() -> None:
    d = R.parse_controldata("pg-1", CONTROLDATA)
    assert d is not None and d.system_id == "7445012345678901234" and d.timeline == 2 and d.hints and d.was_primary
    assert R.parse_controldata("pg-1", "pg_controldata: error: could not open file") is None
    replica = d.model_copy(update={"member": "pg-2", "state": "shut down in recovery", "checkpoint_lsn": "0/6000000"})
    behind = d.model_copy(update={"member": "pg-3", "checkpoint_lsn": "0/4000000"})
    assert R.old_leader([replica, behind, d]) == d
    assert R.old_leader([]) is None
    checksums = CONTROLDATA.replace("wal_log_hints setting:                on", "wal_log_hints setting: off") \
        .replace("Data page checksum version:           0", "Data page checksum version: 1")
    assert R.parse_controldata("pg-1", checksums).hints  # type: ignore[union-attr]
    neither = CONTROLDATA.replace("setting:                on", "setting: off")
    assert not R.parse_controldata("pg-1", neither).hints  # type: ignore[union-attr]


def test_switchpoint_of_the_old_sites_timeline() -> None:
    h = R.parse_history(HISTORY)
    assert h == [(1, "0/3000148"), (2, "0/5001A30")]
    assert R.switchpoint(h, 2) == "0/5001A30" and R.switchpoint(h, 3) is None


def test_waldump_counts_the_discarded_commits_and_finds_the_end() -> None:
    d = R.parse_waldump("0/5001A30", WALDUMP_OUT, WALDUMP_ERR)
    assert (d.commits, d.records, d.end_lsn, d.bytes) == (2, 5, "0/5001B28", 0x5001B28 - 0x5001A30)
    none = R.parse_waldump("0/5001A30", "", "pg_waldump: error: could not find a valid record after 0/5001A30\n")
    assert (none.commits, none.bytes, none.end_lsn) == (0, 0, "0/5001A30")
    line = R.discarded_line("site-a", "site-b", d)
    assert "2 committed transactions" in line and "0/5001A30..0/5001B28" in line and "pg_rewind discards" in line
    assert "nothing" in R.discarded_line("site-a", "site-b", none)
    assert "could not be read" in R.discarded_line("site-a", "site-b", None)


@pytest.mark.parametrize(("clone", "hints", "sysid", "etcd_ok", "config_ok", "method", "fragment"), [
    (False, True, "7445012345678901234", True, True, R.RebuildMethod.REWOUND, "intact"),
    (True, True, "7445012345678901234", True, True, R.RebuildMethod.CLONED, "--clone"),
    (False, True, "1", True, True, R.RebuildMethod.CLONED, "not the same database"),
    (False, False, "7445012345678901234", True, True, R.RebuildMethod.CLONED, "wal_log_hints"),
    (False, True, "7445012345678901234", False, True, R.RebuildMethod.CLONED, "etcd does not answer"),
    (False, True, "7445012345678901234", True, False, R.RebuildMethod.CLONED, "would start as a primary"),
])
def test_rewind_or_clone(clone: bool, hints: bool, sysid: str, etcd_ok: bool, config_ok: bool,
                         method: R.RebuildMethod, fragment: str) -> None:
    d = R.parse_controldata("pg-1", CONTROLDATA)
    assert d is not None
    got, why = R.rebuild_method(clone, d.model_copy(update={"hints": hints}), sysid, etcd_ok, config_ok)
    assert got == method and fragment in why, why
    assert R.rebuild_method(False, None, sysid, True, True)[0] == R.RebuildMethod.CLONED


def test_patronis_log_says_what_its_rewind_did() -> None:
    ran = ("2026-12-07 18:21:01,1 INFO: running pg_rewind from pgha-it-lsb-haproxy\n"
           "2026-12-07 18:21:02,5 INFO: pg_rewind exit code=0\n")
    assert R.rewind_log(ran)[0] == R.RewindLog.RAN
    failed = "2026-12-07 18:21:02,5 INFO: pg_rewind exit code=1\n2026-12-07 ERROR: Failed to rewind from healthy primary: x\n"
    outcome, said = R.rewind_log(failed)
    assert outcome == R.RewindLog.FAILED and "Failed to rewind" in said
    assert R.rewind_log("INFO: no action. I am (pg-1), the standby leader with the lock\n")[0] == R.RewindLog.NOT_RUN
    transient = "WARNING: Can not use remote_member:1 for rewind: leader has not run a checkpoint yet\n"
    assert R.rewind_log(transient)[0] == R.RewindLog.NOT_RUN


def test_kill_hosts_is_for_site_loss_over_hosts_only() -> None:
    from stack.drill import DrillKind, site_drill_refusal
    from stack.spec import parse_spec

    one = parse_spec({"scope": "site-b", "backup": {"enabled": False}, "standby_of": {"scope": "site-a"}})
    assert "site-loss only" in (site_drill_refusal(one, DrillKind.SITE_SWITCHOVER, None, None, None, True) or "")
    assert "no hosts:" in (site_drill_refusal(one, DrillKind.SITE_LOSS, None, None, None, True) or "")
    assert site_drill_refusal(one, DrillKind.SITE_LOSS, None, None, None, False) is None


def test_divergence_usual_and_on_one_timeline_number() -> None:
    new = [(1, "0/3000148"), (2, "0/5001A30")]
    assert R.divergence(2, [(1, "0/3000148")], 3, new) == R.Divergence(start_lsn="0/5001A30")
    # The old site came back and promoted itself onto timeline 3 too, from a later point.
    mine = [(1, "0/3000148"), (2, "0/5002000")]
    d = R.divergence(3, mine, 3, new)
    assert d.same_timeline and d.start_lsn == "0/5001A30" and d.own_start == "0/5002000"
    part = R.parse_waldump("0/5002000", WALDUMP_OUT, WALDUMP_ERR).model_copy(
        update={"start_lsn": "0/5001A30", "unread_from": "0/5002000"})
    line = R.discarded_line("site-a", "site-b", part)
    assert "at least 2 committed transactions" in line and ".partial" in line, line
    # The same history: not diverged (a replica that followed the new site's promotion).
    assert not R.divergence(3, new, 3, new).same_timeline
    leader = R.parse_controldata("pg-1", CONTROLDATA)
    assert leader is not None
    method, why = R.rebuild_method(False, leader, leader.system_id, True, True, same_timeline=True)
    assert method == R.RebuildMethod.CLONED and "promoted itself onto timeline" in why
