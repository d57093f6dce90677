"""A site rebuild's decisions: keep the old primary site's data and let Patroni rewind it onto the
new primary site's timeline, or clone it afresh; what the rewind discards, named.

Pure: pg_controldata, a timeline history file and pg_waldump as PostgreSQL prints them, parsed
once; Patroni's log read for what its rewind did. Patroni makes the rewind itself (a standby
leader rewinds from the remote primary named by `standby_cluster`: `Rewind.execute` with a
`RemoteMember`); pgha decides only whether to try, and falls back to a fresh clone of the whole
site when Patroni's rewind fails or the data cannot be rewound.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel

from stack.site import lsn_bytes

# Patroni needs wal_log_hints on or data checksums to rewind (`Rewind.configuration_allows_rewind`).
# The states in which pg_controldata says the node ran as a primary (a killed one: `in production`).
PRIMARY_STATES = ("in production", "shut down", "shutting down", "in crash recovery")
# How long Patroni may take to rewind the old leader and stream from the new primary site before
# pgha clones the site afresh (its loop_wait cycles, the crash recovery it runs first, pg_rewind).
REWIND_WAIT_S = 240.0


class RebuildMethod(StrEnum):
    REWOUND = "rewound"  # the data kept, rewound onto the new primary site's timeline (or nothing to rewind)
    CLONED = "cloned afresh"  # containers and volumes replaced by a clone of the new primary site


class DataDir(BaseModel):
    """A stopped node's data directory as pg_controldata describes it."""

    member: str
    system_id: str
    state: str  # Database cluster state
    timeline: int  # Latest checkpoint's TimeLineID
    checkpoint_lsn: str  # Latest checkpoint location
    hints: bool  # wal_log_hints on or data checksums: pg_rewind can run

    @property
    def was_primary(self) -> bool:
        return self.state in PRIMARY_STATES


def parse_controldata(member: str, text: str) -> DataDir | None:
    """pg_controldata's output (None: not a data directory pgha can read)."""
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}
    try:
        return DataDir(member=member, system_id=fields["Database system identifier"],
                       state=fields["Database cluster state"], timeline=int(fields["Latest checkpoint's TimeLineID"]),
                       checkpoint_lsn=fields["Latest checkpoint location"],
                       hints=fields.get("wal_log_hints setting") == "on"
                       or fields.get("Data page checksum version", "0") != "0")
    except (KeyError, ValueError):
        return None


def old_leader(dirs: list[DataDir]) -> DataDir | None:
    """The data directory of the site's last leader: one that ran as a primary, the furthest ahead."""
    if not dirs:
        return None
    return max(dirs, key=lambda d: (d.was_primary, d.timeline, lsn_bytes(d.checkpoint_lsn)))


def parse_history(text: str) -> list[tuple[int, str]]:
    """A timeline history file's lines: (parent timeline, the LSN where the child timeline begins)."""
    out: list[tuple[int, str]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and "/" in parts[1]:
            out.append((int(parts[0]), parts[1]))
    return out


def switchpoint(history: list[tuple[int, str]], timeline: int) -> str | None:
    """Where the new primary site left `timeline` (the old site's): the first WAL it never received."""
    return next((lsn for parent, lsn in history if parent == timeline), None)


class Divergence(BaseModel):
    """Where the old site's history leaves the new primary site's, read from both timeline histories."""

    start_lsn: str | None  # the first WAL of the old site the new primary site never had (None: unknown)
    same_timeline: bool = False  # both sites promoted onto one timeline number from different points
    own_start: str | None = None  # same_timeline: where the old site began its own timeline (its promotion)


def divergence(old_tli: int, old_history: list[tuple[int, str]], new_tli: int,
               new_history: list[tuple[int, str]]) -> Divergence:
    """Where the old site (on `old_tli`, its own history) diverged from the new primary site.

    The usual case: the old site is still on a timeline the new site left (its promotion's
    switchpoint). A site that came back and promoted itself after the failover is on a timeline of
    its own; when that timeline has the new site's number (both promoted from the same parent, at
    different points), neither Patroni (it compares timeline numbers) nor pg_rewind ("source and
    target cluster are on the same timeline") sees the divergence: it cannot be rewound."""
    ours = dict(new_history)
    if old_tli in ours:
        return Divergence(start_lsn=ours[old_tli])
    if old_tli == new_tli and old_history != new_history:
        # The parent both left: the first point where they differ is where the new site left it
        # (it received less than the old site wrote before its own promotion), or the old site's.
        mine = dict(old_history)
        parents = [t for t, _ in new_history if t in mine and mine[t] != ours[t]]
        if parents:
            t = parents[0]
            start = min(ours[t], mine[t], key=lsn_bytes)
            return Divergence(start_lsn=start, same_timeline=True, own_start=mine[t])
        return Divergence(start_lsn=None, same_timeline=True)
    return Divergence(start_lsn=None)


_RECORD = re.compile(r"lsn: ([0-9A-F]+/[0-9A-F]+)", re.IGNORECASE)
_END = re.compile(r"(?:invalid record length|invalid magic number \w+ in WAL segment \S+, LSN|"
                  r"could not find a valid record after|record with incorrect prev-link \S+) at ([0-9A-F]+/[0-9A-F]+)",
                  re.IGNORECASE)
_AFTER = re.compile(r"could not find a valid record after ([0-9A-F]+/[0-9A-F]+)", re.IGNORECASE)


class Discarded(BaseModel):
    """What the old site wrote that the new primary site never received: pg_rewind throws it away."""

    start_lsn: str  # where the new primary site's timeline begins (the switchpoint)
    end_lsn: str  # the end of the old site's WAL
    bytes: int
    commits: int  # transactions committed on the old site in that range
    records: int
    unread_from: str | None = None  # the WAL from start_lsn up to here could not be read (counted from here)


def parse_waldump(start: str, out: str, err: str) -> Discarded:
    """pg_waldump from the switchpoint to the end of the old site's WAL: its records, commits and end."""
    records = [ln for ln in out.splitlines() if _RECORD.search(ln)]
    commits = sum(1 for ln in records if "desc: COMMIT" in ln and "Transaction" in ln)
    end = start
    if (m := _END.search(err)) and not _AFTER.search(err):
        end = m.group(1)
    elif records and not _AFTER.search(err):
        last = _RECORD.search(records[-1])
        end = last.group(1) if last else start
    if lsn_bytes(end) < lsn_bytes(start):
        end = start
    return Discarded(start_lsn=start, end_lsn=end, bytes=lsn_bytes(end) - lsn_bytes(start), commits=commits,
                     records=len(records))


def rebuild_method(clone: bool, leader: DataDir | None, primary_system_id: str | None, etcd_ok: bool,
                   config_ok: bool, same_timeline: bool = False) -> tuple[RebuildMethod, str]:
    """Rewind or clone, and why: the data is kept only when Patroni can rewind it onto the new site."""
    if clone:
        return RebuildMethod.CLONED, "--clone asked for a fresh clone"
    if leader is None:
        return RebuildMethod.CLONED, "no data directory of the old site could be read"
    if primary_system_id is not None and leader.system_id != primary_system_id:
        return RebuildMethod.CLONED, (f"{leader.member}'s system identifier {leader.system_id} is not the new primary "
                                      f"site's ({primary_system_id}): not the same database")
    if same_timeline:
        return RebuildMethod.CLONED, (f"{leader.member} promoted itself onto timeline {leader.timeline} after the "
                                      "failover (the site came back), the number the new primary site took at its "
                                      "own promotion, from another point: neither Patroni nor pg_rewind sees that "
                                      "divergence, so its data cannot be rewound")
    if not leader.hints:
        return RebuildMethod.CLONED, f"{leader.member} runs without wal_log_hints or data checksums: pg_rewind cannot"
    if not etcd_ok:
        return RebuildMethod.CLONED, "the old site's etcd does not answer: its Patroni cannot be told to follow"
    if not config_ok:
        return RebuildMethod.CLONED, ("the old site's dynamic configuration is missing from its etcd: its leader "
                                      "would start as a primary")
    return RebuildMethod.REWOUND, f"{leader.member}'s data directory is intact (system identifier kept)"


class RewindLog(StrEnum):
    RAN = "ran"  # pg_rewind exit code 0
    FAILED = "failed"
    NOT_RUN = "not run"  # Patroni found nothing to rewind (or has not yet)


def rewind_log(text: str) -> tuple[RewindLog, str]:
    """What Patroni's log says its rewind did, and the line that says it. Only a rewind that failed
    against a healthy primary is final (`Rewind.execute` then marks it failed); a primary that did
    not answer, or had not checkpointed on its new timeline yet, is tried again on the next cycle."""
    outcome, said = RewindLog.NOT_RUN, ""
    for line in text.splitlines():
        if "pg_rewind exit code=0" in line:
            outcome, said = RewindLog.RAN, line.strip()
        elif "Failed to rewind from healthy primary" in line:
            outcome, said = RewindLog.FAILED, line.strip()
    return outcome, said[-300:]


def discarded_line(scope: str, primary: str, d: Discarded | None) -> str:
    """The one line that names what the rewind throws away (what the site-loss drill calls RPO)."""
    if d is None:
        return (f"what {scope} wrote that {primary} never received could not be read (its WAL or {primary}'s timeline "
                "history); pg_rewind discards it")
    if d.bytes == 0 and d.unread_from is None:
        return f"{scope} wrote nothing {primary} did not receive (its WAL ends at {d.start_lsn})"
    if d.unread_from is not None:
        return (f"pg_rewind discards what {scope} wrote that {primary} never received: at least {d.commits} "
                f"committed transaction{'s' if d.commits != 1 else ''} ({d.records} WAL records, "
                f"{d.unread_from}..{d.end_lsn}, since it promoted itself; the WAL from {d.start_lsn} to "
                f"{d.unread_from} is in a segment it renamed .partial, not counted)")
    return (f"pg_rewind discards what {scope} wrote that {primary} never received: {d.commits} committed "
            f"transaction{'s' if d.commits != 1 else ''} ({d.records} WAL records, {d.bytes} bytes, "
            f"{d.start_lsn}..{d.end_lsn})")
