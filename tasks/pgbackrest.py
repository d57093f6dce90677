"""pgBackRest in the live nodes: config, certificates, TLS servers, stanza, check, backups, info, verify.

The only code that runs pgBackRest in a cluster's nodes (scratch containers for verification
and restores are `tasks.pgbackrest_restore`). Every command runs through `NodeExec` as the
postgres OS user, which reaches PostgreSQL through the local socket with peer authentication:
no password is ever used or passed. Files with keys are written 0600 on the host,
mounted read-only at /etc/pgha (bind-mounted, or pushed into a config volume on a host's engine:
`tasks.docker_hosts.sync_config`), and copied to a postgres-owned 0700 directory inside the
container (as patroni.yml is). Plain functions are what preflights call (outside any flow);
the `@task`s are the steps flows call.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack import backup as bk
from stack import backup_decisions as bkd
from stack import backup_info as bki
from stack import layout
from stack.audit_backup import RepoObs
from stack.backup_tls import make_certificates, missing_names
from stack.errors import PghaError, StateError
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import postgres
from tasks._prefect import RETRY_TRANSIENT, task
from tasks.docker_hosts import engines, sync_config
from tasks.host.secrets import cluster_secrets
from tasks.host.state import cluster_dir, config_dir, write_private
from tasks.node_exec import ExecResult, last_lines, node


class BackupError(PghaError):
    """pgBackRest refused or failed an operation (check, backup, restore, verify)."""


# ---- files and servers on the nodes ----

def certificates(spec: ClusterSpec) -> dict[str, str]:
    """The cluster's TLS material, generated once and kept 0600 in its state directory."""
    d = cluster_dir(spec.scope) / "pgbackrest"
    if all((d / f).exists() for f in bk.CERT_FILES):
        return {f: (d / f).read_text() for f in bk.CERT_FILES}
    certs = make_certificates(spec)
    for f, text in certs.items():
        write_private(d / f, text)
    return certs


def cipher(spec: ClusterSpec) -> tuple[bkd.Cipher, str | None]:
    """The repository's encryption and its passphrase (generated once, 0600 in the state dir).

    Decided before the first node config is written: a cluster whose nodes already had a
    pgBackRest config (`config/<member>/pgbackrest/node.conf`) and no passphrase made its
    repository unencrypted, and it stays so. (Not the CA's presence: other TLS work may make
    the cluster's CA before any backup exists.)
    """
    path = cluster_dir(spec.scope) / "pgbackrest" / bk.CIPHER_FILE
    configured = any((cluster_dir(spec.scope) / "config").glob(f"*/{layout.PGBACKREST_HOST_SUBDIR}/node.conf"))
    state = bkd.cipher_state(spec.backup.encrypt, path.exists(), configured)
    if state == bkd.Cipher.NEW:
        write_private(path, secrets.token_urlsafe(48))
        state = bkd.Cipher.ENCRYPTED
    return state, (path.read_text().strip() if state == bkd.Cipher.ENCRYPTED else None)


def passphrase(spec: ClusterSpec) -> str | None:
    return cipher(spec)[1]


def s3_ca(spec: ClusterSpec) -> str | None:
    """The S3 endpoint's CA certificate text (spec.backup.s3.ca_file, a host path), if any."""
    s3 = spec.backup.s3
    if s3 is None or not s3.ca_file:
        return None
    try:
        return Path(s3.ca_file).read_text()
    except OSError as exc:
        raise StateError(f"backup.s3.ca_file {s3.ca_file} cannot be read: {exc.strerror}") from None


def s3_credentials(spec: ClusterSpec) -> dict[str, str] | None:
    path = cluster_dir(spec.scope) / "s3-credentials.json"
    if spec.backup.s3 is None or not path.exists():
        return None
    return {str(k): str(v) for k, v in json.loads(path.read_text()).items()}


def running_nodes(spec: ClusterSpec) -> list[str]:
    return [m for m in spec.node_names() if node(spec, m).running()]


def runner_for(spec: ClusterSpec, member: str) -> str:
    """Where repository commands (stanza-create, check, backup, info, expire) run: the repository
    host's container with backup.repo_host, else `member` (a node with the repository volume or S3)."""
    return spec.repo_member if bk.uses_repo_host(spec) else member


def reader(spec: ClusterSpec) -> str:
    """The member whose container reads the repository (`info`): the repository host, else the first running node."""
    if bk.uses_repo_host(spec):
        return spec.repo_member
    nodes = running_nodes(spec)
    if not nodes:
        raise BackupError(f"no node of {spec.scope} runs to read its repository")
    return nodes[0]


def install_files(spec: ClusterSpec, member: str, from_standby: bool = True) -> bool:
    """Write the node's pgBackRest files (0600) and copy them where postgres can read them.

    True when the node's pgBackRest TLS server already runs: the same `docker exec` looks, so a
    backup does not pay one more round trip per node to ask."""
    host_dir = config_dir(spec.scope, member) / layout.PGBACKREST_HOST_SUBDIR
    s3 = spec.backup.s3
    if s3 is not None and s3.network and s3.network != spec.network:
        # The S3 endpoint's route (a private S3 server in a container); a recreated container
        # gets it back the next time a flow installs these files (bootstrap and every backup).
        eng = engines(spec).of(member)
        if not eng.network_exists(s3.network):
            raise StateError(f"backup.s3.network {s3.network} does not exist; create it (the S3 endpoint's network) "
                             "or remove the key")
        eng.connect(spec.container(member), s3.network)
    pw = passphrase(spec)  # before certificates(): a first run decides encryption
    files = dict(certificates(spec))
    creds = s3_credentials(spec)
    if (ca := s3_ca(spec)) is not None:
        files[bk.S3_CA_FILE] = ca
    files["node.conf"] = bk.render_node_conf(spec, creds, pw)
    if bk.uses_repo_host(spec):
        # Backups run in the repository host; a node holds no repository, cipher or backup config.
        (host_dir / "backup.conf").unlink(missing_ok=True)
    else:
        files["backup.conf"] = bk.render_backup_conf(spec, from_standby, creds, pw)
    for name, text in files.items():
        write_private(host_dir / name, text)
    sync_config(spec, member)  # many hosts: the member's config volume (a removed backup.conf goes too)
    script = (
        f"install -d -o postgres -g postgres -m 0700 {layout.PGBACKREST_RUN_DIR} && "
        f"for f in {layout.CONFIG_MOUNT}/{layout.PGBACKREST_HOST_SUBDIR}/*; do "
        f"install -o postgres -g postgres -m 0600 \"$f\" {layout.PGBACKREST_RUN_DIR}/; done"
    )
    if spec.backup.s3 is None and not bk.uses_repo_host(spec):
        # A fresh named volume is root-owned: the repository belongs to postgres.
        script += f" && chown postgres:postgres {layout.REPO_MOUNT} && chmod 0750 {layout.REPO_MOUNT}"
    # Idempotent (install, chown, chmod of the same files): run again when a busy engine cut its
    # output short, rather than fail a nightly backup that has no second try.
    script += f" && {{ {SERVER_PGREP} >/dev/null && echo {SERVER_RUNS} || true; }}"
    r = node(spec, member).run(["sh", "-c", script], user="root", timeout=20, retries_if_lost=2)
    if not r.ok:
        raise BackupError(f"cannot install pgBackRest files in {member}: {last_lines(r.out + r.err)}")
    return SERVER_RUNS in r.out.split()


SERVER_PGREP = "pgrep -u postgres -f 'pgbackrest .*server'"  # the node's pgBackRest TLS server (run by postgres)
SERVER_RUNS = "pgha-pgbackrest-server-runs"


def server_running(spec: ClusterSpec, member: str) -> bool:
    r = node(spec, member).run(["pgrep", "-u", "postgres", "-f", "pgbackrest .*server"], timeout=5)
    return r.ok and bool(r.out.strip())


def ensure_server(spec: ClusterSpec, member: str, known_running: bool = False) -> bool:
    """Make the node's pgBackRest TLS server run; True when it had to be started.

    It is started detached in the running container rather than by the image's entrypoint,
    so clusters built before backups existed need no new image; a recreated container gets
    it back the next time a flow installs the files (bootstrap and every backup do).
    """
    if known_running or server_running(spec, member):
        return False
    node(spec, member).detach(["pgbackrest", f"--config={layout.NODE_CONF}", "server"], user="postgres")
    wait_for(f"pgBackRest TLS server in {member}", lambda: server_running(spec, member), bool, timeout=15,
             interval=0.3, logs=lambda: node(spec, member).logs(tail=10))
    return True


def install_nodes(spec: ClusterSpec, from_standby: bool = True) -> dict[str, str]:
    """pgBackRest files and a running TLS server in every running node; member -> what was done."""
    out: dict[str, str] = {}
    for member in running_nodes(spec):
        runs = install_files(spec, member, from_standby)
        out[member] = "server started" if ensure_server(spec, member, known_running=runs) else "server running"
    return out


# ---- commands ----

READS = ("info", "check", "verify")  # commands that may run again when the engine cut their output


def pgbackrest(spec: ClusterSpec, member: str, args: list[str], conf: str = layout.BACKUP_CONF,
               timeout: int = 120) -> ExecResult:
    """Run one pgBackRest command in a node as postgres (a non-zero exit is returned, not raised)."""
    return node(spec, member).run(["pgbackrest", f"--config={conf}", f"--stanza={spec.scope}", *args],
                                  user="postgres", timeout=timeout, retries_if_lost=2 if args[0] in READS else 0)


def run_ok(spec: ClusterSpec, member: str, args: list[str], what: str, conf: str = layout.BACKUP_CONF,
           timeout: int = 120) -> str:
    r = pgbackrest(spec, member, args, conf=conf, timeout=timeout)
    if not r.ok:
        raise BackupError(f"{what} failed (pgbackrest exit {r.code}): {r.tail()}")
    return r.out


def stanza_create(spec: ClusterSpec, member: str) -> str:
    """Create (or confirm) the stanza; idempotent."""
    return run_ok(spec, member, ["stanza-create"], "stanza-create", timeout=120)


def check(spec: ClusterSpec, member: str) -> str:
    """`pgbackrest check`: the repository is usable and a WAL switch reaches it (archiving works)."""
    return run_ok(spec, member, ["check"], "pgbackrest check (is WAL archiving working?)", timeout=180)


def info_payload(text: str) -> Any:
    """The JSON of `pgbackrest info --output=json`; console log lines (`P00   WARN: ...`, printed on
    stdout before the JSON) are skipped, and a text with no JSON is reported with its first line."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith(("[", "{"))), None)
    try:
        if start is None:
            raise ValueError("no JSON in its output")
        return json.loads("\n".join(lines[start:]))
    except ValueError as exc:
        first = text.strip().splitlines()[0][:200] if text.strip() else "(no output)"
        raise BackupError(f"pgbackrest info gave unreadable JSON ({exc}): {first}") from None


def parse_info_json(text: str, stanza: str) -> tuple[list[bki.BackupSet], str | None, str | None]:
    """`pgbackrest info --output=json` read once, here: sets (oldest first) and the archived WAL range."""
    try:
        return bki.parse_info(info_payload(text), stanza)
    except (KeyError, TypeError) as exc:
        raise BackupError(f"pgbackrest info gave unexpected JSON: {exc}") from None


def repo_cipher(spec: ClusterSpec, member: str) -> str:
    """The cipher `pgbackrest info` reports for the stanza's repository ("none" when unencrypted)."""
    return bki.parse_cipher(info_payload(info_text(spec, member)), spec.scope)


def repo_obs(spec: ClusterSpec) -> RepoObs:
    """Sets and cipher of the repository, read with `pgbackrest info` in the first running node
    or the repository host (read-only)."""
    payload = info_payload(info_text(spec, reader(spec)))
    return RepoObs(bki.parse_info(payload, spec.scope)[0], bki.parse_cipher(payload, spec.scope))


def info_text(spec: ClusterSpec, member: str, conf: str = layout.BACKUP_CONF) -> str:
    """`pgbackrest info --output=json` (it always prints at least `[]`; an output the engine cut
    short is asked again by NodeExec, info being a read). An empty output with exit 0 was lost
    on the way too (seen once on a busy engine: the exit mark came, the JSON did not): asked again."""
    text = ""
    for attempt in range(3):
        text = run_ok(spec, member, ["info", "--output=json"], "pgbackrest info", conf=conf, timeout=60)
        if text.strip():
            break
        time.sleep(0.5 * (attempt + 1))
    return text


def info(spec: ClusterSpec, member: str, conf: str = layout.BACKUP_CONF) -> tuple[list[bki.BackupSet], str | None, str | None]:
    return parse_info_json(info_text(spec, member, conf), spec.scope)


def info_progress(spec: ClusterSpec, member: str) -> float | None:
    """Percent complete of a running backup, from `pgbackrest info` (None when not shown)."""
    r = pgbackrest(spec, member, ["info", "--output=json"], timeout=20)
    if not r.ok:
        return None
    try:
        for st in json.loads(r.out):
            lock = (st.get("status") or {}).get("lock", {}).get("backup", {})
            if lock.get("held") and lock.get("size"):
                return 100.0 * float(lock.get("size-cplt", 0)) / float(lock["size"])
    except (ValueError, TypeError, AttributeError):
        return None
    return None


def verified(r: ExecResult) -> str:
    """The output of `pgbackrest verify`; raises BackupError naming the damaged files' lines."""
    text = r.out + r.err
    problems = bki.verify_problems(text)
    if not r.ok or problems:
        problems = problems or [r.tail()]
        raise BackupError(f"pgbackrest verify found a problem in the repository: {' | '.join(problems[:3])[:400]}")
    return text


def verify_set_in_node(spec: ClusterSpec, member: str, label: str) -> str:
    """`pgbackrest verify --set` run in a live node (its repository mount) or the repository host, before a restore."""
    conf = layout.BACKUP_CONF if bk.uses_repo_host(spec) else layout.NODE_CONF
    return verified(pgbackrest(spec, runner_for(spec, member), ["verify", "--output=text", "--verbose",
                                                                f"--set={label}"], conf=conf, timeout=1800))


def repo_volume_exists(spec: ClusterSpec) -> bool:
    return engines(spec).repository().volume_exists(bk.repo_volume(spec))


def require_repo(spec: ClusterSpec) -> None:
    if spec.backup.s3 is None and not repo_volume_exists(spec):
        raise StateError(f"cluster {spec.scope} has no pgBackRest repository volume {bk.repo_volume(spec)}; "
                         "run `pgha up` for it first")


def new_token() -> str:
    return uuid.uuid4().hex[:16]


# ---- flow steps ----

@task(name="pgbackrest-nodes", **RETRY_TRANSIENT)
def prepare_nodes(spec: ClusterSpec, from_standby: bool = True) -> dict[str, str]:
    """pgBackRest files and a running TLS server in every running node."""
    return install_nodes(spec, from_standby)


@task(name="pgbackrest-stanza")
def create_stanza(spec: ClusterSpec) -> str:
    """The stanza, created (or confirmed) through the first running node (or the repository host)."""
    nodes = running_nodes(spec)
    if not nodes:
        raise StateError(f"no node of {spec.scope} runs to create the pgBackRest stanza in")
    return stanza_create(spec, runner_for(spec, nodes[0]))


@task(name="pgbackrest-check")
def check_archiving(spec: ClusterSpec, member: str) -> str:
    """`pgbackrest check` in `member` (or the repository host): a WAL switch reaches the repository."""
    return check(spec, runner_for(spec, member))


@task(name="backup-canary")
def _create_canary_table(conn: Any) -> None:  # a psycopg connection (tasks.postgres.connect)
    conn.execute(f"create table if not exists {bkd.CANARY_TABLE} (id bigserial primary key, token text not null, "
                 "written_at timestamptz not null default now())")  # noqa: S608 - constant table name


def ensure_canary_table(spec: ClusterSpec) -> None:
    """The canary table, empty if new (the major upgrade makes it on blue before copying the schema,
    so a backup of green later writes to a table blue has too and the reverse replication goes on)."""
    with postgres.connect(spec, cluster_secrets(spec.scope), timeout=5) as conn:
        _create_canary_table(conn)


def write_canary(spec: ClusterSpec, token: str) -> int:
    """Insert the canary row through the R/W port; return the table's row count afterwards.

    A verification later finds this row (and this count) in the restored copy: proof that
    the backup holds what was committed just before it started.
    """
    with postgres.connect(spec, cluster_secrets(spec.scope), timeout=5) as conn:
        _create_canary_table(conn)
        conn.execute(f"insert into {bkd.CANARY_TABLE} (token) values (%s)", (token,))  # noqa: S608 - constant name
        row = conn.execute(f"select count(*) from {bkd.CANARY_TABLE}").fetchone()  # noqa: S608 - constant name
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class BackupRun:
    elapsed_s: float
    output: str


@task(name="pgbackrest-backup")
def run_backup(spec: ClusterSpec, runner: str, btype: bkd.BackupType, token: str, count: int,
               timeout: int = 6 * 3600, from_standby: bool = True) -> BackupRun:
    """`pgbackrest backup` in the runner, annotated with the canary; a progress artifact follows it."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact  # in a flow: loaded already

    args = ["backup", f"--type={btype.value}", f"--annotation={bkd.ANN_TOKEN}={token}",
            f"--annotation={bkd.ANN_COUNT}={count}", *bk.backup_standby_args(spec, from_standby)]
    result: dict[str, ExecResult] = {}

    def go() -> None:
        result["r"] = pgbackrest(spec, runner, args, timeout=timeout)

    started = time.monotonic()
    th = threading.Thread(target=go, daemon=True)
    th.start()
    progress_id = None
    while th.is_alive():
        th.join(5)
        if not th.is_alive():
            break
        pct = info_progress(spec, runner)
        if pct is None:
            continue
        if progress_id is None:
            progress_id = create_progress_artifact(progress=pct, key=f"{spec.scope}-backup-progress",
                                                   description=f"pgBackRest backup of {spec.scope}")
        else:
            update_progress_artifact(progress_id, pct)
    if progress_id is not None:
        update_progress_artifact(progress_id, 100.0)
    elapsed = time.monotonic() - started
    r = result.get("r")
    if r is None or not r.ok:
        code = r.code if r is not None else "?"
        raise BackupError(f"pgbackrest backup failed (exit {code}): {r.tail() if r is not None else 'no result'}")
    return BackupRun(elapsed, r.out)


@task(name="pgbackrest-archive-history")
def archive_history(spec: ClusterSpec, member: str, timeline: int) -> str:
    """Push the timeline's history file to the archive (a restored copy promoted with archiving off)."""
    hist = f"{timeline:08X}.history"
    run_ok(spec, member, ["archive-push", f"{layout.PGDATA}/pg_wal/{hist}"], f"archive-push of {hist}",
           conf=layout.NODE_CONF, timeout=60)
    return hist


# ---- the repository host (backup.repo_host) ----

def repo_host_files(spec: ClusterSpec) -> tuple[str, dict[str, str], str | None]:
    """The repository host's config text, the cluster's TLS material and the passphrase (or None).

    Certificates made before the repository host existed do not name it nor the hosts'
    addresses: refused in one line rather than failing later in a TLS handshake.
    """
    pw = passphrase(spec)
    certs = certificates(spec)
    need = [spec.container(spec.repo_member), *(h.address for h in spec.hosts or [])]
    if missing := missing_names(certs["server.crt"], need):
        raise StateError(f"the pgBackRest certificates of {spec.scope} predate backup.repo_host (they do not name "
                         f"{', '.join(missing)}); a repository host needs a new cluster (restore into it) for now")
    return bk.render_repo_conf(spec, pw), certs, pw


def repo_server_answers(spec: ClusterSpec) -> bool:
    """The repository host's `pgbackrest server` accepts connections (server-ping inside its container)."""
    n = node(spec, spec.repo_member)
    if not n.running():
        return False
    r = n.run(["pgbackrest", "--log-level-file=off", "--log-level-console=error", "--tls-server-address=localhost",
               f"--tls-server-port={layout.PGBACKREST_REPO_PORT}", "server-ping"], user="postgres", timeout=10)
    return r.ok


def wait_repo_server(spec: ClusterSpec, timeout: float = 30) -> None:
    wait_for(f"pgBackRest server in {spec.container(spec.repo_member)}", lambda: repo_server_answers(spec), bool,
             timeout=timeout, interval=0.5, logs=lambda: node(spec, spec.repo_member).logs(tail=15))
