"""pgBackRest: config and certificates into the nodes, TLS servers, stanza, backups, info, scratch restores.

Every command runs inside a container (`docker exec`) as the postgres OS user, which reaches
PostgreSQL through the local socket with peer authentication: no password is ever used or
passed. Files with keys are written 0600 on the host, bind-mounted read-only at /etc/pgha,
and copied to a postgres-owned 0700 directory inside the container (as patroni.yml is).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from docker.types import Mount

from stack import backup as bk
from stack import layout
from stack.errors import DockerError, PghaError, StateError
from stack.layout import DATA_MOUNT, PGDATA
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_engine as de
from tasks.host.state import cluster_dir, config_dir, write_private
from tasks.node_exec import NodeExec


def _exec(container: str, cmd: list[str], user: str | None = None, timeout: int = 10) -> tuple[int, str, str]:
    r = NodeExec(de.local_engine(), container).run(cmd, user=user, timeout=timeout)
    return r.code, r.out, r.err


class BackupError(PghaError):
    """pgBackRest refused or failed an operation (check, backup, restore, verify)."""


def _last_lines(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:600] if lines else "(no output)"


# ---- files and servers on the nodes ----

def certificates(spec: ClusterSpec) -> dict[str, str]:
    """The cluster's TLS material, generated once and kept 0600 in its state directory."""
    d = cluster_dir(spec.scope) / "pgbackrest"
    if all((d / f).exists() for f in bk.CERT_FILES):
        return {f: (d / f).read_text() for f in bk.CERT_FILES}
    certs = bk.make_certificates(spec)
    for f, text in certs.items():
        write_private(d / f, text)
    return certs


def s3_credentials(spec: ClusterSpec) -> dict[str, str] | None:
    path = cluster_dir(spec.scope) / "s3-credentials.json"
    if spec.backup.s3 is None or not path.exists():
        return None
    return {str(k): str(v) for k, v in json.loads(path.read_text()).items()}


def install_files(spec: ClusterSpec, member: str, from_standby: bool = True) -> None:
    """Write the node's pgBackRest files (0600) and copy them where postgres can read them."""
    host_dir = config_dir(spec.scope, member) / layout.PGBACKREST_HOST_SUBDIR
    files = dict(certificates(spec))
    creds = s3_credentials(spec)
    files["node.conf"] = bk.render_node_conf(spec, creds)
    files["backup.conf"] = bk.render_backup_conf(spec, from_standby, creds)
    for name, text in files.items():
        write_private(host_dir / name, text)
    script = (
        f"install -d -o postgres -g postgres -m 0700 {layout.PGBACKREST_RUN_DIR} && "
        f"for f in /etc/pgha/{layout.PGBACKREST_HOST_SUBDIR}/*; do install -o postgres -g postgres -m 0600 \"$f\" {layout.PGBACKREST_RUN_DIR}/; done"
    )
    if spec.backup.s3 is None:
        # A fresh named volume is root-owned: the repository belongs to postgres.
        script += f" && chown postgres:postgres {layout.REPO_MOUNT} && chmod 0750 {layout.REPO_MOUNT}"
    code, out, err = _exec(spec.container(member), ["sh", "-c", script], user="root", timeout=20)
    if code != 0:
        raise BackupError(f"cannot install pgBackRest files in {member}: {_last_lines(out + err)}")


def server_running(spec: ClusterSpec, member: str) -> bool:
    code, out, _ = _exec(spec.container(member), ["pgrep", "-u", "postgres", "-f", "pgbackrest .*server"], timeout=5)
    return code == 0 and bool(out.strip())


def ensure_server(spec: ClusterSpec, member: str) -> bool:
    """Make the node's pgBackRest TLS server run; True when it had to be started.

    It is started with `docker exec -d` rather than by the image's entrypoint so clusters
    built before backups existed need no new image; a recreated container gets it back the
    next time a flow installs the files (bootstrap and every backup do).
    """
    if server_running(spec, member):
        return False
    ct = de.local_engine().find_container(spec.container(member))
    if ct is None:
        raise DockerError(f"container {spec.container(member)} does not exist")
    try:
        ct.exec_run(["pgbackrest", f"--config={layout.NODE_CONF}", "server"], user="postgres", detach=True)
    except docker.errors.APIError as exc:
        raise DockerError(f"cannot start pgBackRest's TLS server in {member}: {exc.explanation or exc}") from None
    wait_for(f"pgBackRest TLS server in {member}", lambda: server_running(spec, member), bool, timeout=15, interval=0.3)
    return True


def pgbackrest(spec: ClusterSpec, member: str, args: list[str], conf: str = layout.BACKUP_CONF,
               timeout: int = 120) -> tuple[int, str, str]:
    """Run one pgBackRest command in a node as postgres."""
    return _exec(spec.container(member), ["pgbackrest", f"--config={conf}", f"--stanza={spec.scope}", *args],
                      user="postgres", timeout=timeout)


def run_ok(spec: ClusterSpec, member: str, args: list[str], what: str, conf: str = layout.BACKUP_CONF,
           timeout: int = 120) -> str:
    code, out, err = pgbackrest(spec, member, args, conf=conf, timeout=timeout)
    if code != 0:
        raise BackupError(f"{what} failed (pgbackrest exit {code}): {_last_lines(err or out)}")
    return out


def stanza_create(spec: ClusterSpec, member: str) -> str:
    """Create (or confirm) the stanza; idempotent."""
    return run_ok(spec, member, ["stanza-create"], "stanza-create", timeout=120)


def check(spec: ClusterSpec, member: str) -> str:
    """`pgbackrest check`: the repository is usable and a WAL switch reaches it (archiving works)."""
    return run_ok(spec, member, ["check"], "pgbackrest check (is WAL archiving working?)", timeout=180)


def info(spec: ClusterSpec, member: str) -> tuple[list[bk.BackupSet], str | None, str | None]:
    out = run_ok(spec, member, ["info", "--output=json"], "pgbackrest info", timeout=60)
    try:
        return bk.parse_info(json.loads(out), spec.scope)
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"pgbackrest info gave unreadable JSON: {exc}") from None


def info_progress(spec: ClusterSpec, member: str) -> float | None:
    """Percent complete of a running backup, from `pgbackrest info` (None when not shown)."""
    code, out, _ = pgbackrest(spec, member, ["info", "--output=json"], timeout=20)
    if code != 0:
        return None
    try:
        for st in json.loads(out):
            lock = (st.get("status") or {}).get("lock", {}).get("backup", {})
            if lock.get("held") and lock.get("size"):
                return 100.0 * float(lock.get("size-cplt", 0)) / float(lock["size"])
    except (ValueError, TypeError, AttributeError):
        return None
    return None


def verify_repo_in(s: Scratch, stanza: str, label: str | None) -> str:
    """`pgbackrest verify` (of one set when given) in a scratch container: checksums of every file."""
    args = ["pgbackrest", f"--stanza={stanza}", "verify", "--output=text", "--verbose"]
    if label:
        args.append(f"--set={label}")
    return _verified(*scratch_exec(s, args, timeout=1800))


def verify_set_in_node(spec: ClusterSpec, member: str, label: str) -> str:
    """`pgbackrest verify --set` run in a live node (its repository mount), before a restore."""
    return _verified(*pgbackrest(spec, member, ["verify", "--output=text", "--verbose", f"--set={label}"],
                                 conf=layout.NODE_CONF, timeout=1800))


def _verified(code: int, out: str, err: str) -> str:
    text = out + err
    if code != 0 or verify_problems(text):
        problems = verify_problems(text) or [_last_lines(err or out)]
        raise BackupError(f"pgbackrest verify found a problem in the repository: {' | '.join(problems[:3])[:400]}")
    return text


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


# ---- scratch containers (verification, restore into a new scope) ----

LABEL_ROLE_VERIFY = "verify"
# pgBackRest's fallback default path (the Debian package has no /etc/pgbackrest/): the
# restore_command it writes then needs no --config.
SCRATCH_CONF = "/etc/pgbackrest.conf"
SCRATCH_LOG = f"{DATA_MOUNT}/postgresql.log"  # on the scratch volume, outside PGDATA


@dataclass(frozen=True)
class Scratch:
    scope: str  # label pgha.cluster of everything it creates
    container: str
    network: str
    volume: str
    role: str


def _put_file(container: str, path: str, text: str, mode: int = 0o600) -> None:
    ct = de.local_engine().find_container(container)
    if ct is None:
        raise DockerError(f"container {container} does not exist")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = text.encode()
        ti = tarfile.TarInfo(Path(path).name)
        ti.size, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = len(data), mode, 0, 0, "root", "root"
        tar.addfile(ti, io.BytesIO(data))
    try:
        ok = ct.put_archive(str(Path(path).parent), buf.getvalue())
    except docker.errors.APIError as exc:
        raise DockerError(f"cannot copy {path} into {container}: {exc.explanation or exc}") from None
    if not ok:
        raise DockerError(f"cannot copy {path} into {container}")


def create_scratch(scope_label: str, name: str, image: str, repo_volume: str, role: str,
                   data_volume: str | None = None, network: str | None = None) -> Scratch:
    """A sleeping container with its own network and data volume and the repository read-only.

    Everything carries `pgha.cluster=<scope_label>` and `pgha.role=<role>`, so cleanup by
    label works even after a killed run; it never joins the live cluster's network.
    """
    c = de.local_engine().client
    net = network or f"{name}-net"
    vol = data_volume or f"{name}-data"
    labels = de.labels(scope_label, role, name)
    try:
        if not [n for n in c.networks.list(names=[net]) if n.name == net]:
            c.networks.create(net, driver="bridge", internal=True, labels=labels)
        try:
            c.volumes.get(vol)
        except docker.errors.NotFound:
            c.volumes.create(vol, labels=labels)
        old = de.local_engine().find_container(name)
        if old is not None:
            old.remove(force=True)
        ct = c.containers.create(
            image, entrypoint=["sleep", "infinity"], name=name, hostname=name, labels=labels, network=net,
            mounts=[Mount(target=DATA_MOUNT, source=vol, type="volume"),
                    Mount(target=layout.REPO_MOUNT, source=repo_volume, type="volume", read_only=True)],
            detach=True,
        )
        ct.start()
    except docker.errors.APIError as exc:
        raise DockerError(f"cannot create scratch container {name}: {exc.explanation or exc}") from None
    return Scratch(scope_label, name, net, vol, role)


def remove_scratch(s: Scratch, keep_volume: bool = False) -> list[str]:
    """Remove the scratch container, its network and (unless kept) its volume."""
    c = de.local_engine().client
    removed: list[str] = []
    ct = de.local_engine().find_container(s.container)
    if ct is not None:
        ct.remove(force=True)
        removed.append(s.container)
    for n in c.networks.list(names=[s.network]):
        if n.name == s.network:
            n.remove()
            removed.append(s.network)
    if not keep_volume:
        try:
            c.volumes.get(s.volume).remove(force=True)
            removed.append(s.volume)
        except docker.errors.NotFound:
            pass
    return removed


def remove_leftover_scratch(scope_label: str, role: str) -> list[str]:
    """Remove what a killed earlier run left behind (by label)."""
    c = de.local_engine().client
    flt = {"label": [f"{de.LABEL_CLUSTER}={scope_label}", f"{de.LABEL_ROLE}={role}"]}
    removed = []
    for ct in c.containers.list(all=True, filters=flt):
        ct.remove(force=True)
        removed.append(str(ct.name))
    for n in c.networks.list(filters=flt):
        n.remove()
        removed.append(str(n.name))
    for v in c.volumes.list(filters=flt):
        v.remove(force=True)
        removed.append(str(v.name))
    return removed


def scratch_exec(s: Scratch, cmd: list[str], user: str = "postgres", timeout: int = 60) -> tuple[int, str, str]:
    return _exec(s.container, cmd, user=user, timeout=timeout)


def scratch_restore(s: Scratch, stanza: str, restore_args: list[str], process_max: int, timeout: int = 1800) -> float:
    """Restore into the scratch volume's PGDATA; returns seconds taken."""
    _put_file(s.container, SCRATCH_CONF, bk.render_scratch_conf(stanza, process_max=process_max), 0o644)
    code, out, err = scratch_exec(s, ["sh", "-c", f"install -d -o postgres -g postgres -m 0700 {DATA_MOUNT} "
                                                  f"&& install -d -o postgres -g postgres -m 2775 {layout.SOCKET_DIR}"], user="root")
    if code != 0:
        raise BackupError(f"cannot prepare the scratch data directory: {_last_lines(out + err)}")
    started = time.monotonic()
    code, out, err = scratch_exec(s, ["pgbackrest", f"--stanza={stanza}", "restore", *restore_args], timeout=timeout)
    if code != 0:
        raise BackupError(f"pgbackrest restore failed (exit {code}): {_last_lines(err or out)}")
    return time.monotonic() - started


def scratch_start(s: Scratch, extra: list[str] | None = None, timeout: int = 900) -> float:
    """Start PostgreSQL in the scratch container: socket only, no archiving, no replication ties."""
    _put_file(s.container, "/etc/pgha-scratch-hba.conf", bk.scratch_hba(), 0o644)
    opts = [
        "-c listen_addresses=''", f"-c unix_socket_directories={layout.SOCKET_DIR}", "-c port=5432",
        "-c archive_mode=off", "-c hba_file=/etc/pgha-scratch-hba.conf", "-c synchronous_standby_names=''",
        "-c primary_conninfo=''", "-c primary_slot_name=''",
        "-c shared_buffers=128MB", "-c logging_collector=off", *(extra or []),
    ]
    started = time.monotonic()
    code, out, err = scratch_exec(s, ["pg_ctl", "-D", PGDATA, "-w", "-t", str(timeout), "-l", SCRATCH_LOG,
                                      "-o", " ".join(opts), "start"], timeout=timeout + 30)
    if code != 0:
        _, log, _ = scratch_exec(s, ["tail", "-n", "30", SCRATCH_LOG])
        fatal = [ln for ln in log.splitlines() if "FATAL" in ln or "DETAIL" in ln] or log.splitlines()[-3:]
        raise BackupError(f"restored PostgreSQL did not start: {_last_lines(chr(10).join(fatal), 3)}")
    return time.monotonic() - started


def scratch_sql(s: Scratch, sql: str, db: str = "postgres", timeout: int = 60) -> str:
    code, out, err = scratch_exec(s, ["psql", "-h", layout.SOCKET_DIR, "-U", "postgres", "-d", db, "-XAtq",
                                      "-v", "ON_ERROR_STOP=1", "-c", sql], timeout=timeout)
    if code != 0:
        raise BackupError(f"query on the restored copy failed: {_last_lines(err or out)}")
    return out.strip()


def wait_promoted(s: Scratch, timeout: float = 900) -> None:
    """Recovery is over and the restored copy accepts writes (it reached its target)."""
    wait_for("the restored copy to finish recovery", lambda: scratch_sql(s, "select pg_is_in_recovery()"),
             lambda v: v == "f", timeout=timeout, interval=0.5,
             logs=lambda: scratch_exec(s, ["tail", "-n", "15", SCRATCH_LOG])[1])


def amcheck(s: Scratch, jobs: int = 1, heapallindexed: bool = False, timeout: int = 1800) -> str:
    """pg_amcheck of every database (every heap page and B-tree index); raises on any corruption.

    `heapallindexed` also fingerprints every heap tuple and looks it up in each index: it finds
    missing index entries, but triples the time on a large table, so it is opt-in.
    """
    args = ["pg_amcheck", "-h", layout.SOCKET_DIR, "-U", "postgres", "--all", f"--jobs={jobs}",
            "--install-missing", "--no-strict-names"] + (["--heapallindexed"] if heapallindexed else [])
    code, out, err = scratch_exec(s, args, timeout=timeout)
    if code != 0:
        raise BackupError(f"pg_amcheck found corruption in the restored copy: {_last_lines(out + err)}")
    return "no corruption (heap, B-tree and heap-all-indexed)" if heapallindexed else "no corruption (heap and B-tree)"


def scratch_stop(s: Scratch) -> None:
    scratch_exec(s, ["pg_ctl", "-D", PGDATA, "-m", "fast", "-w", "-t", "120", "stop"], timeout=150)


def new_token() -> str:
    return uuid.uuid4().hex[:16]


def repo_volume_exists(spec: ClusterSpec) -> bool:
    try:
        de.local_engine().client.volumes.get(bk.repo_volume(spec))
        return True
    except docker.errors.NotFound:
        return False


def require_repo(spec: ClusterSpec) -> None:
    if spec.backup.s3 is None and not repo_volume_exists(spec):
        raise StateError(f"cluster {spec.scope} has no pgBackRest repository volume {bk.repo_volume(spec)}; "
                         "run `pgha up` for it first")
