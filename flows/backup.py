"""backup and dump: pgBackRest backups from a replica, logical dumps, and WAL archiving set-up.

`ensure_archiving` is also called by bootstrap, so `pgha up` converges a cluster made before
backups existed: repository volume, files and TLS servers in the nodes, archive settings in
Patroni's dynamic config (with a restart of the nodes that need one), stanza.

The backup flow holds the cluster's mutating lock although it changes no data: the
repository is shared by every node while pgBackRest's own lock files are per container, so
two backups (or a backup and an expire) started from different nodes would not see each
other; and a drill or switchover in the middle would abort the backup.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from stack import backup as bk
from stack import layout
from stack.errors import StateError, UsageError
from stack.render import dcs_config
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_engine as de
from tasks import patroni, postgres
from tasks import pgbackrest as pbr
from tasks._prefect import ONCE, SIDE_EFFECT
from tasks.host.lock import holder_name, mutating
from tasks.host.secrets import load_or_create
from tasks.host.state import secrets_file


def _members(spec: ClusterSpec) -> list[tuple[str, str, str, int | None]]:
    view = patroni.cluster_view(spec)
    return [(m.name, m.role.value, m.state, 0 if m.is_leader else m.lag) for m in view.members]


def running_nodes(spec: ClusterSpec) -> list[str]:
    return [m for m in spec.node_names() if de.running(spec.container(m))]


@task(name="pgbackrest-nodes", **SIDE_EFFECT)
def prepare_nodes(spec: ClusterSpec, from_standby: bool = True) -> dict[str, str]:
    """pgBackRest files and a running TLS server in every running node."""
    out: dict[str, str] = {}
    for member in running_nodes(spec):
        pbr.install_files(spec, member, from_standby)
        out[member] = "server started" if pbr.ensure_server(spec, member) else "server running"
    return out


def _show(spec: ClusterSpec, member: str, setting: str) -> str:
    code, out, _ = de.exec_in(spec.container(member), ["psql", "-h", layout.SOCKET_DIR, "-XAtq", "-c", f"show {setting}"],
                              user="postgres", timeout=10)
    return out.strip() if code == 0 else ""


def _dynamic_config(spec: ClusterSpec, member: str) -> dict[str, Any]:
    """Patroni's dynamic config as stored in etcd ({} when there is none)."""
    code, out, err = de.exec_in(spec.container(member), ["patronictl", "-c", "/run/pgha/patroni.yml", "show-config",
                                                         spec.scope], timeout=20)
    if code != 0:
        raise StateError(f"cannot read Patroni's dynamic config: {(out + err).strip()[-200:]}")
    data = yaml.safe_load(out) if out.strip() else None
    return dict(data) if isinstance(data, dict) else {}


def _archive_config_differs(cfg: dict[str, Any], spec: ClusterSpec) -> dict[str, str]:
    """Archive parameters whose value in Patroni's dynamic config differs from the spec's."""
    params = (cfg.get("postgresql") or {}).get("parameters") or {}
    want = bk.archive_parameters(spec)
    norm = {True: "on", False: "off"}
    return {k: v for k, v in want.items() if norm.get(params.get(k), str(params.get(k))) != v}  # type: ignore[call-overload]


@task(name="ensure-archiving", **ONCE)
def ensure_archiving(spec: ClusterSpec) -> dict[str, Any]:
    """Converge WAL archiving and the stanza (idempotent); called by bootstrap after the cluster is whole."""
    log = get_run_logger()
    if not spec.backup.enabled:
        return {"archiving": "disabled in the spec"}
    nodes = prepare_nodes.fn(spec)
    leader = next((m for m, role, _, _ in _members(spec) if role == "leader"), None)
    if leader is None:
        raise StateError(f"cluster {spec.scope} has no leader; cannot configure WAL archiving")
    cfg = _dynamic_config(spec, leader)
    changed = _archive_config_differs(cfg, spec)
    restarted = False
    if changed:
        # A cluster bootstrapped before backups existed: set the parameters in the DCS, then
        # restart the nodes that need it (archive_mode needs a restart). A cluster whose
        # data directory Patroni adopted (restore --into) has no dynamic config at all: it
        # gets the spec's whole one.
        args = ["patronictl", "-c", "/run/pgha/patroni.yml", "edit-config", "--force", spec.scope]
        if not cfg:
            pbr._put_file(spec.container(leader), "/run/pgha/dcs.yaml",  # noqa: SLF001
                          yaml.safe_dump(dcs_config(spec), sort_keys=False), 0o644)
            args += ["--replace", "/run/pgha/dcs.yaml"]
        for k, v in ({} if not cfg else changed).items():
            args += ["-p", f"{k}={v}"]
        code, out, err = de.exec_in(spec.container(leader), args, timeout=30)
        if code != 0:
            raise StateError(f"cannot set archive parameters through Patroni: {(out + err).strip()[-200:]}")
        log.info("archive parameters set in Patroni's dynamic config: %s", ", ".join(changed))
        want = bk.archive_command(spec)

        def applied() -> tuple[str, str, bool]:
            pending = any(m.pending_restart for m in patroni.cluster_view(spec).members)
            return _show(spec, leader, "archive_mode"), _show(spec, leader, "archive_command"), pending

        # Applied means: already archiving with the new command, or (archive_mode needs a
        # restart; the command shows "(disabled)" until then) Patroni flags pending_restart.
        state = wait_for("Patroni to apply the archive settings", applied,
                         lambda v: v[2] or (v[0] == "on" and v[1] == want),
                         timeout=spec.timing.loop_wait * 3 + 30, interval=0.5)
        if state[2]:
            code, out, err = de.exec_in(spec.container(leader), ["patronictl", "-c", "/run/pgha/patroni.yml",
                                                                 "restart", "--pending", "--force", spec.scope],
                                        timeout=180)
            if code != 0:
                raise StateError(f"restart of nodes pending archive_mode failed: {(out + err).strip()[-200:]}")
            wait_for("archive_mode on in the leader after its restart", lambda: _show(spec, leader, "archive_mode"),
                     lambda v: v == "on", timeout=120, interval=0.5)
            restarted = True
        patroni.wait_whole.fn(spec)
    pbr.stanza_create(spec, running_nodes(spec)[0])
    log.info("WAL archiving and stanza %s ready (%s)", spec.scope, ", ".join(f"{k}: {v}" for k, v in nodes.items()))
    return {"nodes": nodes, "changed": sorted(changed), "restarted": restarted}


def write_canary(spec: ClusterSpec, token: str) -> int:
    """Insert the canary row through the R/W port; return the table's row count afterwards."""
    secrets = load_or_create(secrets_file(spec.scope))
    with postgres.connect(spec, secrets, timeout=5) as conn:
        conn.execute(f"create table if not exists {bk.CANARY_TABLE} (id bigserial primary key, token text not null, "
                     "written_at timestamptz not null default now())")  # noqa: S608 - constant table name
        conn.execute(f"insert into {bk.CANARY_TABLE} (token) values (%s)", (token,))  # noqa: S608 - constant name
        row = conn.execute(f"select count(*) from {bk.CANARY_TABLE}").fetchone()  # noqa: S608 - constant name
    return int(row[0]) if row else 0


def _run_with_progress(spec: ClusterSpec, runner: str, args: list[str], timeout: int) -> tuple[int, str, str]:
    """Run the backup; a progress artifact follows pgBackRest's own percent while it runs."""
    result: dict[str, tuple[int, str, str]] = {}

    def go() -> None:
        result["r"] = pbr.pgbackrest(spec, runner, args, timeout=timeout)

    th = threading.Thread(target=go, daemon=True)
    th.start()
    progress_id = None
    while th.is_alive():
        th.join(5)
        if not th.is_alive():
            break
        pct = pbr.info_progress(spec, runner)
        if pct is None:
            continue
        if progress_id is None:
            progress_id = create_progress_artifact(progress=pct, key=f"{spec.scope}-backup-progress",
                                                   description=f"pgBackRest backup of {spec.scope}")
        else:
            update_progress_artifact(progress_id, pct)
    if progress_id is not None:
        update_progress_artifact(progress_id, 100.0)
    return result["r"]


@flow(name="backup", description="pgBackRest backup from a replica, then a verified restore of it.")
def backup(spec: ClusterSpec = ClusterSpec(), type: bk.BackupType = bk.BackupType.FULL,  # noqa: A002, B008
           verify: bool | None = None) -> dict[str, Any]:
    """Back up (full, diff or incr) and, unless disabled, verify the new set by restoring it."""
    with mutating(spec.scope, holder_name("backup")):
        result = _backup(spec, bk.BackupType(type))
    if verify if verify is not None else spec.backup.verify_after_backup:
        from flows.verify import verify_restore

        result["verification"] = verify_restore(spec, label=result["label"])
    return result


def preflight(spec: ClusterSpec) -> bk.Source:
    """Refuse a backup that cannot run (disabled, no repository, no healthy replica) before anything happens."""
    if not spec.backup.enabled:
        raise UsageError(f"backups are disabled in the spec of {spec.scope} (backup.enabled: false)")
    pbr.require_repo(spec)
    source = bk.choose_source(_members(spec), spec.backup.allow_primary)
    if source.runner is None:
        raise StateError(f"no backup of {spec.scope}: {source.reason}")
    return source


def _backup(spec: ClusterSpec, btype: bk.BackupType) -> dict[str, Any]:
    log = get_run_logger()
    source = preflight(spec)
    assert source.runner is not None  # preflight refuses otherwise
    log.info("backing up %s %s", spec.scope, source.reason)
    prepare_nodes(spec, source.from_standby)
    pbr.check(spec, source.runner)
    before, _, _ = pbr.info(spec, source.runner)
    token = pbr.new_token()
    count = write_canary(spec, token)
    started = time.monotonic()
    args = ["backup", f"--type={btype.value}", f"--annotation={bk.ANN_TOKEN}={token}",
            f"--annotation={bk.ANN_COUNT}={count}"]
    code, out, err = _run_with_progress(spec, source.runner, args, timeout=6 * 3600)
    elapsed = time.monotonic() - started
    if code != 0:
        raise pbr.BackupError(f"pgbackrest backup failed (exit {code}): {pbr._last_lines(err or out)}")  # noqa: SLF001
    after, wal_min, wal_max = pbr.info(spec, source.runner)
    known = {s.label for s in before}
    new = [s for s in after if s.label not in known and s.annotation.get(bk.ANN_TOKEN) == token]
    if not new:
        raise pbr.BackupError("pgbackrest reported success but the new set is not in `pgbackrest info`")
    s = new[-1]
    expired = sorted(known - {x.label for x in after})
    row = {"label": s.label, "type": s.type, "source": source.runner, "from_standby": source.from_standby,
           "size_mb": round(s.size / 1e6, 1), "stored_mb": round(s.repo_size / 1e6, 1),
           "duration_s": round(elapsed, 1), "mb_per_s": round(s.size / 1e6 / elapsed, 1) if elapsed else 0,
           "wal_start": s.wal_start, "wal_stop": s.wal_stop, "expired": ", ".join(expired)}
    create_table_artifact(key=f"{spec.scope}-backup", table=[row],
                          description=f"pgBackRest {s.type} backup {s.label} of {spec.scope}; archive {wal_min}..{wal_max}")
    if s.type != btype.value:
        log.warning("pgBackRest took a %s backup instead of %s (no prior full backup)", s.type, btype.value)
    log.info("backup %s (%s) done in %.1fs; expired: %s", s.label, s.type, elapsed, ", ".join(expired) or "none")
    return {**row, "canary": token, "canary_count": count, "sets": [x.label for x in after]}


@flow(name="dump", description="pg_dump -Fc of every database from a replica into the repository volume.")
def dump(spec: ClusterSpec = ClusterSpec()) -> dict[str, Any]:  # noqa: B008 - pydantic default is immutable
    """Logical dumps, read-only for the cluster (no lock); old dump sets beyond the retention are removed."""
    log = get_run_logger()
    if not spec.backup.enabled or spec.backup.s3 is not None:
        raise UsageError("pgha dump writes into the repository volume: it needs backup.enabled and no backup.s3")
    pbr.require_repo(spec)
    source = bk.choose_source(_members(spec), spec.backup.allow_primary)
    if source.runner is None:
        raise StateError(f"no dump of {spec.scope}: {source.reason}")
    name = spec.container(source.runner)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = f"{bk.dump_dir(spec)}/{stamp}"
    code, out, err = de.exec_in(name, ["psql", "-h", layout.SOCKET_DIR, "-XAtq", "-c",
                                       "select datname from pg_database where datallowconn and not datistemplate order by 1"],
                                user="postgres", timeout=30)
    if code != 0:
        raise pbr.BackupError(f"cannot list databases on {source.runner}: {(out + err).strip()[-200:]}")
    dbs = [d for d in out.split() if d]
    de.exec_in(name, ["install", "-d", "-m", "0750", target], user="postgres")
    rows = []
    for db in dbs:
        path = f"{target}/{db}.dump"
        t0 = time.monotonic()
        code, out, err = de.exec_in(name, ["pg_dump", "-h", layout.SOCKET_DIR, "-Fc", "-d", db, "-f", path],
                                    user="postgres", timeout=6 * 3600)
        if code != 0:
            de.exec_in(name, ["rm", "-rf", target], user="postgres")
            raise pbr.BackupError(f"pg_dump of {db} failed: {(out + err).strip()[-300:]}")
        _, size, _ = de.exec_in(name, ["stat", "-c", "%s", path], user="postgres")
        rows.append({"database": db, "file": path, "size_mb": round(int(size.strip() or 0) / 1e6, 2),
                     "duration_s": round(time.monotonic() - t0, 1)})
    _, listing, _ = de.exec_in(name, ["ls", "-1", bk.dump_dir(spec)], user="postgres")
    removed = bk.dump_sets_to_remove(listing.split(), spec.backup.dump_retention)
    for old in removed:
        de.exec_in(name, ["rm", "-rf", f"{bk.dump_dir(spec)}/{old}"], user="postgres", timeout=300)
    create_table_artifact(key=f"{spec.scope}-dump", table=rows,
                          description=f"pg_dump -Fc of {spec.scope} from {source.runner}; removed old sets: {removed or 'none'}")
    log.info("dumped %d database(s) into %s; removed %s", len(rows), target, removed or "none")
    return {"set": stamp, "dir": target, "source": source.runner, "files": rows, "removed": removed}
