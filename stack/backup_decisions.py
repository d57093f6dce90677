"""pgBackRest decisions, as pure functions: what pgha does with a cluster's repository, and why.

The repository's cipher (decided once, when its state is first made), where a backup copies from,
which set to verify and what its canary must show, whether a restore target is recoverable and a
restore in place or beside the source is possible, which dumps retention removes. The config files
are `stack.backup`; what pgBackRest reports is parsed by `stack.backup_info`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stack.backup import CIPHER_TYPE, archive_parameters
from stack.backup_info import BackupSet
from stack.cluster import Member, MemberRole
from stack.spec import ClusterSpec

# Annotations stored with each backup (pgBackRest --annotation) so a later verification knows
# which canary row the backup must contain.
ANN_TOKEN = "pgha-canary"  # noqa: S105 - an annotation key, not a password
ANN_COUNT = "pgha-canary-count"
CANARY_TABLE = "pgha_backup_canary"


class Cipher(StrEnum):
    """What a cluster's repository is, as decided once when its pgBackRest state is first made."""

    ENCRYPTED = "encrypted"  # a passphrase exists: every config carries it
    NEW = "new"  # no pgBackRest state yet and backup.encrypt: generate the passphrase now
    PLAIN = "plain"  # backup.encrypt is false (and no passphrase was ever made)
    PLAIN_EXISTING = "plain-existing"  # made before encryption existed: stays unencrypted


def cipher_state(encrypt: bool, has_passphrase: bool, state_exists: bool) -> Cipher:
    """Encryption cannot be switched on an existing repository (pgBackRest encrypts at stanza-create).

    A stored passphrase always wins (the repository cannot be read without it, whatever the
    spec says now); a repository made before encryption keeps running unencrypted, and the
    audit says so.
    """
    if has_passphrase:
        return Cipher.ENCRYPTED
    if not encrypt:
        return Cipher.PLAIN
    return Cipher.PLAIN_EXISTING if state_exists else Cipher.NEW


def cipher_note(state: Cipher, encrypt: bool) -> str:
    """The audit's words for the repository's encryption."""
    if state == Cipher.ENCRYPTED:
        return CIPHER_TYPE + ("" if encrypt else " (the spec says encrypt: false; an existing encrypted "
                                                   "repository stays encrypted)")
    if state == Cipher.PLAIN_EXISTING:
        return ("none: this repository was created before encryption and cannot be switched in place; "
                "restore --into a new scope (encrypted) or create a new stanza")
    return "none (backup.encrypt: false)"


class BackupType(StrEnum):
    FULL = "full"
    DIFF = "diff"
    INCR = "incr"


@dataclass(frozen=True)
class Source:
    """Where a backup copies files from, and why."""

    runner: str | None  # member whose container runs pgBackRest (the repository host)
    from_standby: bool
    reason: str


def choose_source(members: list[Member], allow_primary: bool) -> Source:
    """Pick the replica to back up from.

    A streaming replica with the least lag wins. Without one, the primary only when the
    spec allows it; otherwise runner None and the reason to refuse.
    """
    replicas = sorted((m.lag, m.name) for m in members
                      if m.role in (MemberRole.REPLICA, MemberRole.SYNC_STANDBY)
                      and m.state in ("streaming", "running") and m.lag is not None)
    if replicas:
        return Source(replicas[0][1], True, f"from replica {replicas[0][1]} (lag {replicas[0][0]} bytes)")
    leaders = [m.name for m in members if m.is_leader and m.state == "running"]
    if not leaders:
        return Source(None, False, "the cluster has no running primary")
    if allow_primary:
        return Source(leaders[0], False, f"from primary {leaders[0]}: no healthy replica (backup.allow_primary)")
    return Source(None, False, "the cluster has no healthy streaming replica to back up from; "
                               "heal it, or set backup.allow_primary: true to back up from the primary")


def archive_config_differs(cfg: dict[str, Any], spec: ClusterSpec) -> dict[str, str]:
    """Archive parameters whose value in Patroni's dynamic config differs from the spec's."""
    params = (cfg.get("postgresql") or {}).get("parameters") or {}
    norm = {True: "on", False: "off"}

    def shown(v: Any) -> str:
        return norm[v] if isinstance(v, bool) else str(v)

    return {k: v for k, v in archive_parameters(spec).items() if shown(params.get(k)) != v}


@dataclass(frozen=True)
class Archiving:
    """What converging WAL archiving did (an old cluster gets its settings and a restart)."""

    nodes: dict[str, str] = field(default_factory=dict)  # member -> "server started" | "server running"
    changed: list[str] = field(default_factory=list)  # archive parameters set in Patroni's config
    restarted: list[str] = field(default_factory=list)  # members restarted for archive_mode
    note: str = ""


def pick_set(sets: list[BackupSet], label: str | None) -> BackupSet | str:
    """The set to verify: `label`, or the newest good one; a message when there is none."""
    good = [s for s in sets if not s.error]
    if label is None:
        return good[-1] if good else "the repository holds no backup yet; run `pgha backup` first"
    for s in sets:
        if s.label == label:
            return s if not s.error else f"backup set {label} is marked as failed by pgBackRest"
    known = ", ".join(s.label for s in good[-5:]) or "none"
    return f"no backup set {label} in the repository (newest: {known})"


def canary_of(s: BackupSet) -> tuple[str, int] | None | str:
    """The canary (token, row count) a set was annotated with; None: none recorded; str: malformed.

    The token is formatted into SQL by the verification, so only 16 hex digits pass.
    """
    token, count = s.annotation.get(ANN_TOKEN), s.annotation.get(ANN_COUNT)
    if token is None or count is None:
        return None
    if not re.fullmatch(r"[0-9a-f]{16}", token) or not count.isdigit():
        return f"backup set {s.label} carries a malformed canary annotation"
    return token, int(count)


def canary_problem(s: BackupSet, token: str, want: int, present: int, total: int) -> str | None:
    """What is wrong with the restored copy's canary table (None: as when backed up)."""
    if present != 1:
        return f"canary row {token} written just before backup {s.label} is missing from the restored copy"
    if total != want:
        return f"canary table has {total} rows in the restored copy, {want} when backed up"
    return None


TIME_FORMATS = ("%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z")


def parse_target_time(text: str) -> dt.datetime | str:
    """A restore target with an explicit time zone ("2026-11-25 21:03:00+00"); or a message."""
    t = text.strip()
    t = re.sub(r"([+-]\d\d)$", r"\1:00", t)  # PostgreSQL's "+00" style
    t = t.replace("Z", "+00:00")
    try:
        v = dt.datetime.fromisoformat(t)
    except ValueError:
        return f"cannot read '{text}' as a time; use e.g. '2026-11-25 21:03:00+00'"
    if v.tzinfo is None:
        return f"'{text}' has no time zone; add one, e.g. '{text}+00'"
    return v.astimezone(dt.UTC)


def recoverable_range(sets: list[BackupSet], now: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """From the end of the oldest good backup to now (archiving is continuous and checked)."""
    good = [s for s in sets if not s.error]
    if not good:
        return None
    return min(s.stop for s in good), now


def check_target(target: dt.datetime, sets: list[BackupSet], now: dt.datetime) -> str | None:
    """None when `target` is recoverable, else a message that states the range."""
    rng = recoverable_range(sets, now)
    if rng is None:
        return "the repository holds no backup to restore from; run `pgha backup` first"
    lo, hi = rng
    fmt = "%Y-%m-%d %H:%M:%S+00"
    if not lo <= target <= hi:
        return (f"target {target.strftime(fmt)} is outside the recoverable range "
                f"{lo.strftime(fmt)} .. {hi.strftime(fmt)} (end of the oldest backup .. now)")
    return None


def in_place_problem(spec: ClusterSpec, etcd_running: int, nodes_running: int) -> str | None:
    """Why the live cluster cannot be rebuilt in place now (None: it can)."""
    if spec.backup.s3 is not None:
        return "in-place restore needs the local repository volume; with an S3 repository restore --into a new scope"
    if etcd_running < spec.etcd_members // 2 + 1:
        return (f"only {etcd_running} of {spec.etcd_members} etcd members run (no quorum): the restored node "
                f"could not take the leader key; `pgha up` the cluster first")
    if nodes_running == 0:
        return "no node of the cluster runs; `pgha up` it first (the repository is read through a node)"
    return None


def shared_hosts_problem(source: ClusterSpec, into: ClusterSpec) -> str | None:
    """Why `into` cannot run beside `source` (None: it can): over hosts a cluster binds PostgreSQL's
    and Patroni's fixed ports on each of its hosts (host networking), so two cannot share a host."""
    if source.hosts is None or into.hosts is None:
        return None
    shared = sorted({h.address for h in source.hosts} & {h.address for h in into.hosts})
    if not shared:
        return None
    return (f"{into.scope} would run on the hosts of {source.scope} ({', '.join(shared)}), where {source.scope} "
            "already binds PostgreSQL's and Patroni's ports; restore --into a cluster on other hosts "
            "(--into-spec), or in place (--in-place --yes)")


def dump_sets_to_remove(names: list[str], keep: int) -> list[str]:
    """Dump set directories (named by UTC timestamp, so they sort in time) beyond the newest `keep`."""
    ordered = sorted(n for n in names if re.fullmatch(r"\d{8}T\d{6}Z", n))
    return ordered[:-keep] if len(ordered) > keep else []
