"""pgBackRest for a cluster, as pure functions: config files, certificates, decisions.

Topology (docs/howto/backups.md): one named Docker volume `<scope>-pgbackrest` is the
repository, mounted at /var/lib/pgbackrest in every Patroni node. The primary's
`archive-push` therefore writes locally, whichever node is primary. A backup runs on a
replica, which acts as pgBackRest's "repository host": it reaches every node (itself
included) through the pgBackRest TLS server each node runs on port 8432, so `backup-standby`
can start/stop the backup on the primary and copy files from the standby.

Nothing here does I/O (the TLS material is `stack.backup_tls`); tasks/pgbackrest.py applies it,
and the decisions (source, target time, in-place restore, verify output, canary) are tested
without Docker.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stack.cluster import Member, MemberRole
from stack.errors import SpecError
from stack.layout import (
    NODE_CONF,
    PG_PORT,
    PGBACKREST_REPO_PORT,
    PGBACKREST_RUN_DIR,
    PGBACKREST_TLS_PORT,
    PGDATA,
    REPO_MOUNT,
    SOCKET_DIR,
)
from stack.spec import BackupSpec, ClusterSpec, CompressType
from stack.typed import control_character

CLIENT_CN = "pgha-backup"
CERT_FILES = ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")
# Annotations stored with each backup (pgBackRest --annotation) so a later verification knows
# which canary row the backup must contain.
ANN_TOKEN = "pgha-canary"  # noqa: S105 - an annotation key, not a password
ANN_COUNT = "pgha-canary-count"
CANARY_TABLE = "pgha_backup_canary"
MAX_NODES = 9  # ClusterSpec.nodes upper bound: the server certificate names every possible node


def repo_volume(spec: ClusterSpec) -> str:
    return f"{spec.scope}-pgbackrest"


def dump_dir(spec: ClusterSpec) -> str:
    return f"{REPO_MOUNT}/dumps/{spec.scope}"


def archive_command(spec: ClusterSpec) -> str:
    return f"pgbackrest --config={NODE_CONF} --stanza={spec.scope} archive-push %p"


def archive_parameters(spec: ClusterSpec) -> dict[str, str]:
    """PostgreSQL parameters for continuous archiving (Patroni dynamic config, every node)."""
    if not spec.backup.enabled:
        return {}
    return {"archive_mode": "on", "archive_command": archive_command(spec), "archive_timeout": "60s"}


def _ini(sections: list[tuple[str, dict[str, Any]]]) -> str:
    """pgBackRest's ini text. A value that would start another line or section, or change where the
    value starts or ends (pgBackRest trims spaces), is refused: it could add any option."""
    out = ["# Rendered by pgha from the ClusterSpec; do not edit by hand."]
    for name, opts in sections:
        out.append(f"\n[{_ini_value(name, 'section')}]")
        for k, v in opts.items():
            if isinstance(v, bool):
                v = "y" if v else "n"
            out.append(f"{_ini_value(k, 'option')}={_ini_value(str(v), k)}")
    return "\n".join(out) + "\n"


def _ini_value(text: str, what: str) -> str:
    if control_character(text) is not None or text != text.strip() \
            or (what in ("section", "option") and not re.fullmatch(r"[A-Za-z0-9._-]+", text)):
        # Never the value itself in the message: it may be a key or the passphrase.
        raise SpecError(f"{what if what in ('section', 'option') else 'the value of ' + what} cannot be written "
                        "into a pgBackRest config (a control character or spaces at either end)")
    return text


# ---- repository encryption and the S3 repository's TLS (issue 12 / 11) ----
CIPHER_TYPE = "aes-256-cbc"
CIPHER_FILE = "cipher.pass"  # in the cluster's state dir (pgbackrest/), 0600; never in env/argv/labels
S3_CA_FILE = "s3-ca.crt"  # the S3 endpoint's CA, copied next to the node's configs


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


def _cipher_options(passphrase: str | None) -> dict[str, Any]:
    return {"repo1-cipher-type": CIPHER_TYPE, "repo1-cipher-pass": passphrase} if passphrase else {}


def _repo_options(spec: ClusterSpec, s3_credentials: dict[str, str] | None, passphrase: str | None = None,
                  conf_dir: str = PGBACKREST_RUN_DIR) -> dict[str, Any]:
    b = spec.backup
    opts: dict[str, Any] = {}
    if b.s3 is not None:
        creds = s3_credentials or {}
        if b.s3.ca_file:
            opts["repo1-storage-ca-file"] = f"{conf_dir}/{S3_CA_FILE}"
        if b.s3.port != 443:
            opts["repo1-storage-port"] = b.s3.port
        opts.update({
            "repo1-type": "s3",
            "repo1-path": b.s3.path,
            "repo1-s3-bucket": b.s3.bucket,
            "repo1-s3-endpoint": b.s3.endpoint,
            "repo1-s3-region": b.s3.region,
            "repo1-s3-uri-style": b.s3.uri_style,
            "repo1-storage-verify-tls": b.s3.verify_tls,
            "repo1-s3-key": creds.get("key", ""),
            "repo1-s3-key-secret": creds.get("secret", ""),
        })
    else:
        opts["repo1-path"] = REPO_MOUNT
    opts.update(_cipher_options(passphrase))
    opts.update(_compress_and_log_options(b))
    return opts


def _compress_and_log_options(b: BackupSpec) -> dict[str, Any]:
    """Compression from the spec, console warnings only, no log files (every pgBackRest config pgha writes)."""
    opts: dict[str, Any] = {"compress-type": b.compress_type.value, "log-level-console": "warn",
                            "log-level-stderr": "warn", "log-level-file": "off"}
    if b.compress_type != CompressType.NONE:
        opts["compress-level"] = b.compress_level
    return opts


def uses_repo_host(spec: ClusterSpec) -> bool:
    """The repository is on a repository host (backup.repo_host), not in the nodes' volume or S3."""
    return spec.backup.enabled and spec.backup.repo_host is not None


def _tls_server(spec: ClusterSpec, port: int) -> dict[str, Any]:
    return {
        "tls-server-address": "*",
        "tls-server-port": port,
        "tls-server-ca-file": f"{PGBACKREST_RUN_DIR}/ca.crt",
        "tls-server-cert-file": f"{PGBACKREST_RUN_DIR}/server.crt",
        "tls-server-key-file": f"{PGBACKREST_RUN_DIR}/server.key",
        "tls-server-auth": f"{CLIENT_CN}={spec.scope}",
    }


def _remote_repo_options(spec: ClusterSpec, passphrase: str | None) -> dict[str, Any]:
    """A node's repository as the repository host's TLS server (pgBackRest's "repo host" layout).

    No repo1-path: the repository host holds the repository. The cipher, though, is needed
    here too: over the TLS protocol the repository host's server only stores and reads bytes,
    and the command (archive-push, archive-get, info) encrypts and decrypts on its own side —
    without the passphrase a node reads `Salted__…` where it expects `backup.info` (seen here).
    Compression also stays on the node's side, so WAL crosses the network compressed.
    """
    b = spec.backup
    opts: dict[str, Any] = {
        "repo1-host": spec.address(spec.repo_member),
        "repo1-host-type": "tls",
        "repo1-host-port": PGBACKREST_REPO_PORT,
        "repo1-host-ca-file": f"{PGBACKREST_RUN_DIR}/ca.crt",
        "repo1-host-cert-file": f"{PGBACKREST_RUN_DIR}/client.crt",
        "repo1-host-key-file": f"{PGBACKREST_RUN_DIR}/client.key",
        **_cipher_options(passphrase),
        **_compress_and_log_options(b),
    }
    return opts


def render_node_conf(spec: ClusterSpec, s3_credentials: dict[str, str] | None = None,
                     passphrase: str | None = None) -> str:
    """Config for every node: archive-push/-get of its own PostgreSQL and its TLS server."""
    glob = (_remote_repo_options(spec, passphrase) if uses_repo_host(spec)
            else _repo_options(spec, s3_credentials, passphrase))
    glob.update(_tls_server(spec, PGBACKREST_TLS_PORT))
    stanza = {"pg1-path": PGDATA, "pg1-socket-path": SOCKET_DIR, "pg1-port": PG_PORT}
    return _ini([("global", glob), (spec.scope, stanza)])


# The pgBackRest each image suite's Debian packages ship. Block incremental is stable from 2.46
# (a beta behind `--beta` in 2.45): bookworm's backups go without it.
PGBACKREST_OF_SUITE: dict[str, tuple[int, int]] = {"bookworm": (2, 45), "trixie": (2, 55)}
BLOCK_INCREMENTAL_SINCE = (2, 46)


def block_incremental(spec: ClusterSpec) -> bool:
    """Backups bundle files and store changed blocks: asked in the spec and the image's pgBackRest has it."""
    return spec.backup.block_incremental and PGBACKREST_OF_SUITE.get(spec.suite, (0, 0)) >= BLOCK_INCREMENTAL_SINCE


def _backup_sections(spec: ClusterSpec, from_standby: bool, s3_credentials: dict[str, str] | None,
                     passphrase: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    b = spec.backup
    glob = _repo_options(spec, s3_credentials, passphrase)
    glob.update({
        "repo1-retention-full": b.retention_full,
        "repo1-retention-diff": b.retention_diff,
        "process-max": b.process_max,
        "backup-standby": from_standby,
        "start-fast": True,
        "archive-timeout": 120,
        "log-level-console": "info",
    })
    if block_incremental(spec):
        # Bundling packs small files into a few repository files; block incremental (needs bundling)
        # stores a changed file's changed blocks only, against the block map its last backup wrote.
        glob.update({"repo1-bundle": True, "repo1-block": True})
    stanza: dict[str, Any] = {}
    for i, member in enumerate(spec.node_names(), start=1):
        stanza.update({
            # The node's address: its container name on the cluster network, its host's
            # address across hosts (host networking; the server certificate names both).
            f"pg{i}-host": spec.address(member),
            f"pg{i}-host-type": "tls",
            f"pg{i}-host-port": PGBACKREST_TLS_PORT,
            f"pg{i}-host-ca-file": f"{PGBACKREST_RUN_DIR}/ca.crt",
            f"pg{i}-host-cert-file": f"{PGBACKREST_RUN_DIR}/client.crt",
            f"pg{i}-host-key-file": f"{PGBACKREST_RUN_DIR}/client.key",
            f"pg{i}-path": PGDATA,
            f"pg{i}-socket-path": SOCKET_DIR,
            f"pg{i}-port": PG_PORT,
        })
    return glob, stanza


def render_backup_conf(spec: ClusterSpec, from_standby: bool, s3_credentials: dict[str, str] | None = None,
                       passphrase: str | None = None) -> str:
    """Config of the backup runner: every node as a TLS remote (pgBackRest finds the primary)."""
    glob, stanza = _backup_sections(spec, from_standby, s3_credentials, passphrase)
    return _ini([("global", glob), (spec.scope, stanza)])


def render_repo_conf(spec: ClusterSpec, passphrase: str | None) -> str:
    """The repository host's one config: the repository (volume, cipher, retention), its TLS
    server on PGBACKREST_REPO_PORT for the nodes' archive-push/-get, and every node as a TLS
    remote for the backups it runs. Where a backup comes from is the backup command's
    `--backup-standby` (the flow decides it per run), so this file never changes between backups.
    """
    glob, stanza = _backup_sections(spec, True, None, passphrase)
    glob.update(_tls_server(spec, PGBACKREST_REPO_PORT))
    return _ini([("global", glob), (spec.scope, stanza)])


def backup_standby_args(spec: ClusterSpec, from_standby: bool) -> list[str]:
    """Command-line choice of the backup's source on a repository host (its config is fixed)."""
    return [f"--backup-standby={'y' if from_standby else 'n'}"] if uses_repo_host(spec) else []


def render_scratch_conf(spec: ClusterSpec, process_max: int = 2, s3_credentials: dict[str, str] | None = None,
                        passphrase: str | None = None, conf_dir: str = "/etc", pgdata: str = PGDATA) -> str:
    """Config inside a scratch/restore container: `spec`'s repository read-only, a local PGDATA only.

    The same repository options as the nodes' (path, S3 or the repository host, the cipher), so a
    scratch box reads an encrypted, S3 or remote repository exactly as the cluster writes it.
    """
    # With a repository host the box is one more TLS client of it (its certificates installed at
    # the nodes' paths by tasks.pgbackrest_restore.put_conf); the repository itself is never mounted.
    glob = (_remote_repo_options(spec, passphrase) if uses_repo_host(spec)
            else _repo_options(spec, s3_credentials, passphrase, conf_dir))
    glob.update({"process-max": process_max, "log-level-console": "warn", "archive-mode": "off"})
    glob.pop("compress-level", None)
    return _ini([("global", glob), (spec.scope, {"pg1-path": pgdata, "pg1-socket-path": SOCKET_DIR})])


def scratch_hba() -> str:
    """The scratch container accepts only local socket connections of the postgres OS user."""
    return "local all postgres peer\n"


# ---- decisions ----

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


@dataclass(frozen=True)
class BackupSet:
    """One backup set from `pgbackrest info --output=json`."""

    label: str
    type: str
    start: dt.datetime
    stop: dt.datetime
    size: int  # database size, bytes
    repo_size: int  # what this set added to the repository (compressed; pgBackRest's "delta"), bytes
    wal_start: str
    wal_stop: str
    error: bool
    annotation: dict[str, str] = field(default_factory=dict)
    prior: str | None = None


def _ts(v: Any) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(v), dt.UTC)


def parse_info(payload: Any, stanza: str) -> tuple[list[BackupSet], str | None, str | None]:
    """Backup sets (oldest first) and the archived WAL range (min, max) of one stanza."""
    if not isinstance(payload, list):
        return [], None, None
    for st in payload:
        if st.get("name") != stanza:
            continue
        sets = []
        for b in st.get("backup", []) or []:
            info = b.get("info", {}) or {}
            repo = info.get("repository", {}) or {}
            arch = b.get("archive", {}) or {}
            sets.append(BackupSet(
                label=str(b.get("label")), type=str(b.get("type")),
                start=_ts(b["timestamp"]["start"]), stop=_ts(b["timestamp"]["stop"]),
                size=int(info.get("size") or 0), repo_size=int(repo.get("delta") or repo.get("size") or 0),
                wal_start=str(arch.get("start") or ""), wal_stop=str(arch.get("stop") or ""),
                error=bool(b.get("error", False)),
                annotation={str(k): str(v) for k, v in (b.get("annotation") or {}).items()},
                prior=b.get("prior"),
            ))
        mins = [a.get("min") for a in st.get("archive", []) or [] if a.get("min")]
        maxs = [a.get("max") for a in st.get("archive", []) or [] if a.get("max")]
        return sorted(sets, key=lambda s: s.start), (min(mins) if mins else None), (max(maxs) if maxs else None)
    return [], None, None


def parse_cipher(payload: Any, stanza: str) -> str:
    """The cipher of one stanza's repository in `pgbackrest info --output=json` ("none" if absent)."""
    for st in payload if isinstance(payload, list) else []:
        if st.get("name") == stanza:
            repos = [r for r in st.get("repo", []) or [] if isinstance(r, dict)]
            return str((repos[0].get("cipher") if repos else None) or st.get("cipher") or "none")
    return "none"


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


def verify_problems(text: str) -> list[str]:
    """Lines of `pgbackrest verify --output=text --verbose` that report a damaged or missing file.

    A clean repository says `status: ok` per stanza, `status: valid` per backup, and zero
    for every counter (`missing: 0, checksum invalid: 0, size invalid: 0, other: 0`).
    """
    bad = []
    for ln in text.splitlines():
        status = re.search(r"status: (\w+)", ln)
        counts = re.findall(r"(missing|checksum invalid|size invalid|other): ([1-9]\d*)", ln)
        if (status and status.group(1) not in ("ok", "valid")) or counts:
            bad.append(ln.strip())
    return bad


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

