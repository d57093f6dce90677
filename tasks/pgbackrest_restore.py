"""Restores with pgBackRest: scratch containers, the restore into a volume, the checks of the copy.

A scratch box (`tasks.docker_scratch`) sleeps on its own internal network with a data volume and the
repository volume mounted read-only; it never joins a live cluster's network. It needs no
password: PostgreSQL listens on its socket only and admits the postgres OS user by peer
authentication. `scratch()` is a context manager: it removes what a killed earlier run left
(by label), and everything it made when the block ends, whatever happens. The in-place
restore's teardown of the live nodes and the password file of a restored copy are here too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import task

from stack import backup as bk
from stack import backup_decisions as bkd
from stack import backup_info as bki
from stack import layout
from stack.layout import DATA_MOUNT, PGDATA
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_scratch, etcd, images
from tasks._prefect import ONCE
from tasks.docker_engine import Engine
from tasks.docker_hosts import engines
from tasks.docker_scratch import Scratch
from tasks.host import app_passwords
from tasks.host.state import secrets_file, write_private
from tasks.node_exec import ExecResult, last_lines, node
from tasks.pgbackrest import BackupError, certificates, parse_info_json, passphrase, s3_ca, s3_credentials, verified

ROLE_VERIFY = "verify"
ROLE_RESTORE = "restore"
ROLE_SWAP = "restore-swap"
# In-place restore: the restored copy is made BESIDE the live data directory in pg-1's volume
# while the cluster serves, then swapped in by renames (Docker volumes cannot be renamed, and a
# rename inside the volume costs nothing where a copy to a new volume costs the database's size).
STAGED = f"{DATA_MOUNT}/pgdata.restored"
KEPT = f"{DATA_MOUNT}/pgdata.pre-restore"  # the old data, kept until the restored cluster is healthy
# pgBackRest's fallback default path (the Debian package has no /etc/pgbackrest/): the
# restore_command it writes then needs no --config.
SCRATCH_CONF = "/etc/pgbackrest.conf"
SCRATCH_HBA = "/etc/pgha-scratch-hba.conf"
SCRATCH_LOG = f"{DATA_MOUNT}/postgresql.log"  # on the scratch volume, outside PGDATA


def node_image(spec: ClusterSpec) -> str:
    """The live nodes' image (same pgBackRest and PostgreSQL), else the spec's own build."""
    for m in spec.node_names():
        if tag := engines(spec).of(m).image_of(spec.container(m)):
            return tag
    return images.ensure_image(spec)[0]


@contextmanager
def scratch(spec: ClusterSpec, engine: Engine, name: str, image: str, role: str, label_scope: str | None = None,
            data_volume: str | None = None) -> Iterator[Scratch]:
    """A scratch box (`tasks.docker_scratch`) with `spec`'s repository mounted read-only.

    With an S3 repository there is no volume to mount: the box reaches the endpoint through
    `backup.s3.network` when the spec names one (a private S3 server in a container), else
    through its own network with a default route. With a repository host (a cluster over hosts,
    host networking) the box shares its host's network, as the nodes do, to reach the repository
    host's TLS server on that host's address. Its PostgreSQL listens on no TCP address either way.
    """
    s3, remote = spec.backup.s3, bk.uses_repo_host(spec)
    read_only = {bk.repo_volume(spec): layout.REPO_MOUNT} if s3 is None and not remote else {}
    network = s3.network if s3 is not None else (docker_scratch.HOST_NETWORK if remote else None)
    with docker_scratch.scratch(engine, label_scope or spec.scope, role, name, image, DATA_MOUNT, data_volume,
                                read_only=read_only, network=network, internal=s3 is None and not remote,
                                log_options=spec.logs.driver_options()) as s:
        yield s


# ---- inside a scratch container ----

def put_conf(s: Scratch, spec: ClusterSpec, process_max: int, pgdata: str = PGDATA) -> None:
    """The scratch box's pgBackRest config (0600, postgres's: it may carry the cipher passphrase
    and S3 keys); at pgBackRest's default path, so the restore_command it writes needs no --config."""
    if (ca := s3_ca(spec)) is not None:
        s.node.put_file(f"/etc/{bk.S3_CA_FILE}", ca, 0o644)
    if bk.uses_repo_host(spec):  # a TLS client of the repository host, with the nodes' client certificate
        certs = certificates(spec)
        r = s.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", layout.PGBACKREST_RUN_DIR],
                  user="root")
        for f in ("ca.crt", "client.crt", "client.key"):
            s.node.put_file(f"{layout.PGBACKREST_RUN_DIR}/{f}", certs[f], 0o600)
        r = s.run(["chown", "-R", "postgres:postgres", layout.PGBACKREST_RUN_DIR], user="root") if r.ok else r
        if not r.ok:
            raise BackupError(f"cannot install the repository host's client certificate: {r.tail()}")
    text = bk.render_scratch_conf(spec, process_max, s3_credentials(spec), passphrase(spec), "/etc", pgdata)
    s.node.put_file(SCRATCH_CONF, text, 0o600)
    r = s.run(["chown", "postgres:postgres", SCRATCH_CONF], user="root")
    if not r.ok:
        raise BackupError(f"cannot hand the scratch pgBackRest config to postgres: {r.tail()}")


def repository_sets(s: Scratch, stanza: str) -> list[bki.BackupSet]:
    r = s.run(["pgbackrest", f"--stanza={stanza}", "info", "--output=json"])
    if not r.ok:
        raise BackupError(f"cannot read the repository: {r.tail()}")
    return parse_info_json(r.out, stanza)[0]


def _psql(s: Scratch, query: str, timeout: int = 60) -> ExecResult:
    """One statement on the restored copy, over its socket as postgres (peer); unaligned output."""
    return s.run(["psql", "-h", layout.SOCKET_DIR, "-U", "postgres", "-d", "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1",
                  "-c", query], timeout=timeout)


def sql(s: Scratch, query: str, timeout: int = 60) -> str:
    """One statement on the restored copy; its output, stripped (BackupError when it fails)."""
    r = _psql(s, query, timeout)
    if not r.ok:
        raise BackupError(f"query on the restored copy failed: {r.tail()}")
    return r.out.strip()


def _log_tail(s: Scratch, n: int = 15) -> str:
    return s.run(["tail", "-n", str(n), SCRATCH_LOG]).out


@task(name="scratch-verify-repository", **ONCE)
def verify_repository(s: Scratch, stanza: str, label: str | None) -> float:
    """`pgbackrest verify` (of one set when given): checksums of every file; seconds taken."""
    args = ["pgbackrest", f"--stanza={stanza}", "verify", "--output=text", "--verbose"]
    if label:
        args.append(f"--set={label}")
    started = time.monotonic()
    verified(s.run(args, timeout=1800))
    return time.monotonic() - started


@task(name="scratch-restore", **ONCE)
def restore_into(s: Scratch, spec: ClusterSpec, restore_args: list[str], process_max: int, timeout: int = 1800,
                 pgdata: str = PGDATA) -> float:
    """`pgbackrest restore` of `spec`'s repository into `pgdata` (empty or absent); seconds taken."""
    put_conf(s, spec, process_max, pgdata)
    stanza = spec.scope
    # A staged copy beside live data (in-place restore) starts from nothing: a killed run's leftovers go.
    fresh = f" && rm -rf {pgdata}" if pgdata != PGDATA else ""
    r = s.run(["sh", "-c", f"install -d -o postgres -g postgres -m 0700 {DATA_MOUNT} "
                           f"&& install -d -o postgres -g postgres -m 2775 {layout.SOCKET_DIR}{fresh}"], user="root")
    if not r.ok:
        raise BackupError(f"cannot prepare the scratch data directory: {last_lines(r.out + r.err)}")
    started = time.monotonic()
    r = s.run(["pgbackrest", f"--stanza={stanza}", "restore", *restore_args], timeout=timeout)
    if not r.ok:
        raise BackupError(f"pgbackrest restore failed (exit {r.code}): {r.tail()}")
    return time.monotonic() - started


@task(name="scratch-start-and-recover", **ONCE)
def start_and_recover(s: Scratch, timeout: int = 900, pgdata: str = PGDATA) -> float:
    """Start the restored PostgreSQL (socket only, no archiving) and wait until it promoted; seconds."""
    s.node.put_file(SCRATCH_HBA, bk.scratch_hba(), 0o644)
    opts = [
        "-c listen_addresses=''", f"-c unix_socket_directories={layout.SOCKET_DIR}", "-c port=5432",
        # ssl=off: the copy listens on its socket only, and the cluster's certificates are not in the box.
        "-c archive_mode=off", "-c ssl=off", f"-c hba_file={SCRATCH_HBA}", "-c synchronous_standby_names=''",
        "-c primary_conninfo=''", "-c primary_slot_name=''", "-c shared_buffers=128MB", "-c logging_collector=off",
    ]
    started = time.monotonic()
    r = s.run(["pg_ctl", "-D", pgdata, "-w", "-t", str(timeout), "-l", SCRATCH_LOG, "-o", " ".join(opts), "start"],
              timeout=timeout + 30)
    if not r.ok:
        raise BackupError(f"restored PostgreSQL did not start: {_fatal_lines(s)}")
    # pg_ctl -w also returns once a hot standby is consistent: replay may still end in a FATAL
    # (the target lies past the last archived WAL), so a stopped server ends the wait at once.
    state = wait_for("the restored copy to finish recovery", lambda: _recovery_state(s, pgdata),
                     lambda v: v in ("f", STOPPED), timeout=timeout, interval=0.5, logs=lambda: _log_tail(s))
    if state == STOPPED:
        raise BackupError(f"restored PostgreSQL stopped during recovery: {_fatal_lines(s)}")
    # Recovery is over and the copy accepts writes: it reached its target and promoted.
    return time.monotonic() - started


STOPPED = "stopped"


def _recovery_state(s: Scratch, pgdata: str) -> str:
    """pg_is_in_recovery() of the copy ('t'/'f'), or STOPPED when its postmaster is gone."""
    r = _psql(s, "select pg_is_in_recovery()")
    if r.ok:
        return r.out.strip()
    if s.run(["pg_ctl", "-D", pgdata, "status"]).code == 3:  # 3: no server running
        return STOPPED
    raise BackupError(f"query on the restored copy failed: {r.tail()}")


def _fatal_lines(s: Scratch) -> str:
    """The FATAL/DETAIL lines of the copy's log (else its last lines), at most three."""
    log = _log_tail(s, 30)
    fatal = [ln for ln in log.splitlines() if "FATAL" in ln or "DETAIL" in ln] or log.splitlines()[-3:]
    return last_lines("\n".join(fatal), 3)


@task(name="scratch-check-consistency", **ONCE)
def check_consistency(s: Scratch, jobs: int = 1, heapallindexed: bool = False, timeout: int = 1800) -> str:
    """The copy is "in production" (pg_controldata) and pg_amcheck finds no corruption; its verdict.

    pg_amcheck reads every heap page and B-tree index of every database; `heapallindexed` also
    looks every heap tuple up in each index (finds missing entries, triples the time on a
    large table), so it is opt-in.
    """
    state = s.run(["sh", "-c", "pg_controldata \"$0\" | sed -n 's/^Database cluster state: *//p'", PGDATA]).out.strip()
    if state != "in production":
        raise BackupError(f"restored copy is not consistent: cluster state '{state}'")
    args = ["pg_amcheck", "-h", layout.SOCKET_DIR, "-U", "postgres", "--all", f"--jobs={jobs}",
            "--install-missing", "--no-strict-names"] + (["--heapallindexed"] if heapallindexed else [])
    r = s.run(args, timeout=timeout)
    if not r.ok:
        raise BackupError(f"pg_amcheck found corruption in the restored copy: {last_lines(r.out + r.err)}")
    return "no corruption (heap, B-tree and heap-all-indexed)" if heapallindexed else "no corruption (heap and B-tree)"


@task(name="scratch-canary", **ONCE)
def canary_counts(s: Scratch, token: str) -> tuple[int, int]:
    """(rows with the token, rows in all) of the canary table in the restored copy."""
    # The token passed stack.backup_decisions.canary_of (16 hex digits): formatting it in is safe.
    present = sql(s, f"select count(*) from {bkd.CANARY_TABLE} where token = '{token}'")  # noqa: S608
    total = sql(s, f"select count(*) from {bkd.CANARY_TABLE}")  # noqa: S608
    return int(present or 0), int(total or 0)


def database_count(s: Scratch) -> str:
    return sql(s, "select count(*) from pg_database where not datistemplate")


@task(name="scratch-stop", **ONCE)
def stop_postgres(s: Scratch, reset_settings: bool = False, pgdata: str = PGDATA) -> None:
    """Stop the restored PostgreSQL cleanly; first reset what pgBackRest wrote, when Patroni adopts it.

    Patroni owns the configuration of the node that adopts the data directory, so the
    recovery settings pgBackRest's restore wrote are reset and a checkpoint taken.
    """
    if reset_settings:
        sql(s, "alter system reset all")
        sql(s, "checkpoint")
    r = s.run(["pg_ctl", "-D", pgdata, "-m", "fast", "-w", "-t", "120", "stop"], timeout=150)
    if not r.ok:
        raise BackupError(f"the restored PostgreSQL did not stop: {r.tail()}")


# ---- restore into a cluster ----

@task(name="restore-password-file", **ONCE)
def copy_password_file(source: ClusterSpec, into: ClusterSpec) -> None:
    """The restored catalog holds the source's roles and passwords: the new scope gets a copy (0600) of
    pgha's own and of the declared roles' generated ones."""
    write_private(secrets_file(into.scope), secrets_file(source.scope).read_text())
    app_passwords.copy(source.scope, into.scope)


@task(name="restore-node-volume", **ONCE)
def ensure_node_volume(spec: ClusterSpec, member: str) -> None:
    engines(spec).of(member).ensure_volume(spec.scope, "patroni", member, spec.volume(member))


@task(name="restore-stop-nodes", **ONCE)
def stop_nodes(spec: ClusterSpec) -> list[str]:
    """Remove the Patroni and HAProxy containers and clear the scope's Patroni keys; volumes stay as they are.

    etcd, the network, the repository and the state directory stay. Without the old keys the
    node started first bootstraps as a new cluster's leader from the data directory it finds.
    """
    eng = engines(spec)
    removed = [spec.container(m) for m in [*spec.node_names(), spec.haproxy_member]
               for e in eng.placed(m) if e.remove_container(spec.container(m))]  # HAProxy: on every host
    etcd.delete_scope_keys(spec)
    return removed


def _in_volume(spec: ClusterSpec, member: str, image: str, script: str, what: str) -> None:
    """Run `script` as root in a scratch box holding `member`'s data volume at DATA_MOUNT."""
    engine = engines(spec).of(member)
    with docker_scratch.scratch(engine, spec.scope, ROLE_SWAP, f"{spec.scope}-{member}-swap", image, DATA_MOUNT,
                                data_volume=spec.volume(member), log_options=spec.logs.driver_options()) as s:
        r = s.run(["sh", "-ec", script], user="root", timeout=300)
        if not r.ok:
            raise BackupError(f"{what} in {spec.volume(member)} failed: {r.tail()}")


@task(name="restore-swap-in", **ONCE)
def swap_in(spec: ClusterSpec, image: str) -> None:
    """Every node's data directory moved aside (one generation kept); pg-1 gets the restored copy.

    The replicas' volumes are left without a data directory, so Patroni re-clones them.
    """
    for i, m in enumerate(spec.node_names()):
        script = f"rm -rf {KEPT}; if [ -d {PGDATA} ]; then mv {PGDATA} {KEPT}; fi"
        if i == 0:
            script += f"; mv {STAGED} {PGDATA}; rm -f {SCRATCH_LOG}"
        _in_volume(spec, m, image, script, "moving the data directory aside")


@task(name="restore-swap-back", **ONCE)
def swap_back(spec: ClusterSpec, image: str) -> None:
    """Undo `swap_in`: the kept data directories back in place, the restored copy dropped."""
    for m in spec.node_names():
        _in_volume(spec, m, image, f"if [ -d {KEPT} ]; then rm -rf {PGDATA} && mv {KEPT} {PGDATA}; fi; rm -rf {STAGED}",
                   "putting the old data directory back")


@task(name="restore-drop-staged", **ONCE)
def drop_staged(spec: ClusterSpec, image: str) -> None:
    """Remove a half-made restored copy beside pg-1's live data (the live data is not touched)."""
    _in_volume(spec, spec.node_names()[0], image, f"rm -rf {STAGED} {SCRATCH_LOG}", "removing the staged copy")


@task(name="restore-drop-kept", **ONCE)
def drop_kept(spec: ClusterSpec) -> list[str]:
    """After success: the old data directories removed from the running nodes' volumes."""
    done = []
    for m in spec.node_names():
        r = node(spec, m).run(["rm", "-rf", KEPT], user="root", timeout=300)
        if r.ok:
            done.append(m)
    return done


@task(name="restore-clear-nodes", **ONCE)
def clear_nodes(spec: ClusterSpec) -> list[str]:
    """Remove the Patroni and HAProxy containers, clear the scope's Patroni keys, empty the node volumes.

    etcd, the network, the repository volume and the state directory (passwords,
    certificates) stay. Without the old keys (initialize, leader, config, history) the
    restored node bootstraps as a new cluster's leader, and the emptied replica volumes make
    Patroni re-clone them from it.
    """
    eng = engines(spec)
    removed: list[str] = []
    for m in [*spec.node_names(), spec.haproxy_member]:
        if eng.of(m).remove_container(spec.container(m)):
            removed.append(spec.container(m))
    etcd.delete_scope_keys(spec)
    for m in spec.node_names():
        if eng.of(m).remove_volume(spec.volume(m)):
            removed.append(spec.volume(m))
        eng.of(m).ensure_volume(spec.scope, "patroni", m, spec.volume(m))
    return removed
