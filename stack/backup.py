"""pgBackRest for a cluster, as pure functions: its config files and names.

Topology (docs/howto/backups.md): one named Docker volume `<scope>-pgbackrest` is the
repository, mounted at /var/lib/pgbackrest in every Patroni node. The primary's
`archive-push` therefore writes locally, whichever node is primary. A backup runs on a
replica, which acts as pgBackRest's "repository host": it reaches every node (itself
included) through the pgBackRest TLS server each node runs on port 8432, so `backup-standby`
can start/stop the backup on the primary and copy files from the standby.

Nothing here does I/O (the TLS material is `stack.backup_tls`); tasks/pgbackrest.py applies it.
What pgBackRest reports is parsed by `stack.backup_info`; the decisions (the cipher, source, target
time, in-place restore, canary) are `stack.backup_decisions`, tested without Docker.
"""

from __future__ import annotations

import re
from typing import Any

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


# ---- repository encryption and the S3 repository's TLS ----
CIPHER_TYPE = "aes-256-cbc"
CIPHER_FILE = "cipher.pass"  # in the cluster's state dir (pgbackrest/), 0600; never in env/argv/labels
S3_CA_FILE = "s3-ca.crt"  # the S3 endpoint's CA, copied next to the node's configs


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
