"""The one observation of a cluster: every system asked once, side by side, into a `ClusterSnapshot`.

`pgha status` asks for `STATUS_PARTS`, the health audit for `AUDIT_PARTS` (with `deep=True`:
Patroni's /liveness and /readiness of every member, etcd's leadership and DB sizes); the
views are computed from the snapshot by pure functions (`stack.status`, `stack.audit*`).

Each part runs in its own thread and catches its own failure: a part that fails is an
`Observed` with the error, so one dead component becomes a finding or a problem line, never a
crashed view. The parts are independent (none waits for another), so the gathering takes
about the time of the slowest part (the engine's memory stats, about a second), not the sum.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from stack import audit as A
from stack import audit_obs as AO
from stack import audit_sizes as AS
from stack.cluster import TimelineSwitch
from stack.errors import PghaError
from stack.layout import DATA_MOUNT, PGDATA, REPO_MOUNT
from stack.secrets import Secrets
from stack.snapshot import ClusterSnapshot, ContainersObs, Observed, PatroniState
from stack.spec import ClusterSpec
from tasks import docker_hosts, etcd, fencer, haproxy, patroni, pg_apps, pgbackrest, pgbouncer, postgres, server_db
from tasks._prefect import task
from tasks.host import app_passwords
from tasks.host import tls as host_tls
from tasks.host.secrets import cluster_secrets, etcd_auth_marker, load_or_create
from tasks.host.state import secrets_file
from tasks.node_exec import node

# What `pgha status` judges; the audit asks for every part but the status-only ones.
STATUS_PARTS = ("containers", "patroni", "etcd", "backends", "session", "pooler")
AUDIT_PARTS = ("containers", "resources", "etcd", "etcd_auth", "leader_key", "site", "patroni", "failsafe", "replication", "haproxy", "postgres",
               "disks", "pooler", "apps", "fencing", "tls", "archiving", "backups", "repo_size", "server_db")
# `pgha report`: the audit, the status and the history from one snapshot.
REPORT_PARTS = (*AUDIT_PARTS, "backends", "session", "history")
# `pgha history`: the leader now and the timeline switches.
HISTORY_PARTS = ("patroni", "history")
# Parts that may import Prefect (the server's database settings): never taken ahead, where the
# main thread may be importing it at the same moment (a first import from two threads fails).
NOT_AHEAD = ("server_db",)


def _brief(exc: BaseException) -> str:
    if isinstance(exc, PghaError):
        return str(exc) or type(exc).__name__
    # e.g. a psycopg error mid-query: reported, never a crashed view
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def _safe(fn: Callable[[], Any]) -> Any:
    """A sub-probe's value, or None when it failed (the part itself goes on)."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 - one member's silence is part of the observation
        return None


def _secrets(spec: ClusterSpec) -> Secrets:
    path = secrets_file(spec.scope)
    if not path.exists():
        raise PghaError(f"no passwords stored for {spec.scope} in {path.parent}")
    return load_or_create(path, env={})


def containers(spec: ClusterSpec, deep: bool) -> ContainersObs:
    """Every cluster container of every engine; an engine that does not answer is named, the others kept."""
    rows: list[AO.ContainerObs] = []
    errors: list[str] = []
    for e in docker_hosts.engines(spec).all():
        try:
            rows += e.audit_containers(spec.scope)
        except PghaError as exc:  # many hosts: a lost host's engine; its members show as missing
            errors.append(str(exc))
    return ContainersObs(rows=rows, engine_errors=errors)


def resources(spec: ClusterSpec, deep: bool) -> list[AO.PressureObs]:
    """Memory use vs limit and OOM kills of every container (hardening)."""
    since = time.time() - A.OOM_WINDOW_S
    return [r for e in docker_hosts.engines(spec).all() for r in e.memory_pressure(spec.scope, since)]


def etcd_part(spec: ClusterSpec, deep: bool) -> Any:
    return etcd.observe(spec, members=deep)


def etcd_auth(spec: ClusterSpec, deep: bool) -> AO.EtcdAuthObs | None:
    """Whether etcd's authentication is on, and whether pgha switched it on (with TLS only)."""
    if not spec.tls.enabled:
        return None
    return AO.EtcdAuthObs(enabled=etcd.auth_enabled(spec), switched_on_by_pgha=etcd_auth_marker(spec.scope).exists())


def leader_key(spec: ClusterSpec, deep: bool) -> AO.LeaderKeyObs:
    """Patroni's leader key as etcd holds it (its lease against the holder's member key)."""
    return etcd.leader_key(spec)


def site_part(spec: ClusterSpec, deep: bool) -> AO.StandbyObs | None:
    """A standby cluster's link: its standby leader's position against its primary site's (None: not a standby)."""
    if spec.standby_of is None:
        return None
    from stack import site
    from tasks.host.generations import stored_spec

    mine = postgres.wal_position(spec, _secrets(spec))
    primary = stored_spec(site.primary_scope(spec))
    try:
        theirs: str | None = postgres.wal_position(primary, _secrets(primary)).current_lsn
    except PghaError:
        theirs = None  # the primary site is down: the receiver says so
    lag_b, lag_s = site.standby_lag(theirs, mine.replay_lsn, mine.since_replay_s, mine.receive_lsn,
                                    mine.receiver == "streaming")
    return AO.StandbyObs(receiver=mine.receiver, lag_bytes=lag_b, lag_s=lag_s)


def patroni_part(spec: ClusterSpec, deep: bool) -> PatroniState:
    """Patroni's view; `deep`: and every member's /liveness and /readiness, asked at once."""
    if not deep:
        return PatroniState(view=patroni.cluster_view(spec))
    nodes = spec.node_names()
    with ThreadPoolExecutor(max_workers=2 * len(nodes) + 1) as pool:
        view = pool.submit(patroni.cluster_view, spec)
        live = {m: pool.submit(patroni.probe_code, spec, m, "/liveness") for m in nodes}
        ready = {m: pool.submit(patroni.probe_code, spec, m, "/readiness") for m in nodes}
        return PatroniState(view=view.result(),
                            liveness={m: _safe(f.result) for m, f in live.items()},
                            readiness={m: _safe(f.result) for m, f in ready.items()})


def failsafe(spec: ClusterSpec, deep: bool) -> tuple[bool, list[str]]:
    """(failsafe_mode in the dynamic config, nodes whose Patroni runs on failsafe now); members asked at once."""
    nodes = spec.node_names()
    with ThreadPoolExecutor(max_workers=len(nodes) + 1) as pool:
        config = pool.submit(patroni.dynamic_config, spec)
        status = {m: pool.submit(patroni.member_status, spec, m) for m in nodes}
        active = [m for m, f in status.items() if (st := _safe(f.result)) and st.failsafe_mode_is_active]
        return bool(config.result().get("failsafe_mode", False)), active


def replication(spec: ClusterSpec, deep: bool) -> list[AO.ReplicationRow]:
    return postgres.replication_rows(spec, _secrets(spec))


def backends(spec: ClusterSpec, deep: bool) -> tuple[dict[str, AO.Backend], dict[str, AO.Backend]]:
    """HAProxy's R/W and R/O servers with their status (its stats page)."""
    return haproxy.audit_backends(spec)


def haproxy_part(spec: ClusterSpec, deep: bool) -> AO.HaproxyObs:
    """HAProxy's servers, and which member a new connection through each port reaches."""
    primary, replicas = haproxy.audit_backends(spec)
    if spec.multi_host:
        # Host networking: a node answers on its host's address (one Patroni node per host).
        names = {spec.address(m): m for m in spec.node_names()}
    else:
        prefix = spec.scope + "-"
        names = {ip: name.removeprefix(prefix) for ip, name in
                 docker_hosts.engines(spec).of(spec.haproxy_member).container_ips(spec.network).items()}

    def member(ip: str | None) -> str | None:
        return names.get(ip or "")

    secrets = _secrets(spec)
    rw, rw_err = None, ""
    try:
        rw = postgres.endpoint_node(spec, secrets, read_only=False)
    except Exception as exc:  # noqa: BLE001 - the R/W port not answering is the observation
        rw_err = (_brief(exc).splitlines() or [""])[0][:200]
    ro = _safe(lambda: postgres.endpoint_node(spec, secrets, read_only=True)) if spec.nodes > 1 else None
    return AO.HaproxyObs(primary=primary, replicas=replicas,
                        rw_member=member(rw[0]) if rw else None, rw_writable=bool(rw and not rw[1]),
                        ro_member=member(ro[0]) if ro else None, ro_in_recovery=ro[1] if ro else None,
                        error=rw_err)


def session(spec: ClusterSpec, deep: bool) -> str | None:
    """Why a new client session through the R/W port does not open; None when it does (or when
    this machine holds no password for the cluster: nothing to log in with, nothing to judge)."""
    if not secrets_file(spec.scope).exists():
        return None
    return postgres.session_opens(spec, cluster_secrets(spec.scope))


def postgres_part(spec: ClusterSpec, deep: bool) -> AO.PostgresObs:
    return postgres.audit_stats(spec, _secrets(spec))


def pooler(spec: ClusterSpec, deep: bool) -> Any:
    """PgBouncer's pools (None when the spec runs no pooler); the audit logs in with the stored passwords."""
    if not spec.runs_pooler:
        return None
    return pgbouncer.observe(spec, _secrets(spec)) if deep else pgbouncer.observe(spec)


def apps(spec: ClusterSpec, deep: bool) -> Any:
    """The catalog of the declared roles and databases, with the passwords pgha keeps (to compare verifiers)."""
    if not (spec.roles or spec.databases):
        return None
    return pg_apps.observe(spec, _secrets(spec)), app_passwords.passwords(spec, create=False)


def disks(spec: ClusterSpec, deep: bool) -> dict[str, AS.DiskObs | None]:
    """Each node's data volume (df) and its pg_wal (du), one exec per node, all at once."""
    def one(member: str) -> AS.DiskObs | None:
        got = node(spec, member).disk_usage(DATA_MOUNT, (f"{PGDATA}/pg_wal",))
        return AS.DiskObs(got[0], got[1], got[2][0]) if got else None

    with ThreadPoolExecutor(max_workers=len(spec.node_names())) as pool:
        futures = {m: pool.submit(one, m) for m in spec.node_names()}
        return {m: _safe(f.result) for m, f in futures.items()}


def repo_size(spec: ClusterSpec, deep: bool) -> AS.RepoSizeObs | None:
    """The repository volume's bytes (du) and its filesystem (df), where it is mounted (S3: None)."""
    if not spec.backup.enabled or spec.backup.s3 is not None:
        return None
    got = node(spec, pgbackrest.reader(spec)).disk_usage(REPO_MOUNT, (REPO_MOUNT,))
    if got is None or got[2][0] is None:
        raise PghaError(f"du of {REPO_MOUNT} gave no size")
    return AS.RepoSizeObs(repo_bytes=got[2][0], used_bytes=got[0], avail_bytes=got[1])


def server_db_part(spec: ClusterSpec, deep: bool) -> Any:
    """The Prefect server's database file on this host (a stat, no query)."""
    return server_db.observe()


def fencing(spec: ClusterSpec, deep: bool) -> Any:
    """Every watcher's counters (with hosts: one per node's host), each read from its own container."""
    return fencer.all_stats(spec)


def tls(spec: ClusterSpec, deep: bool) -> Any:
    """The cluster's certificates (state directory: what `up` and `certs rotate` installed)."""
    return host_tls.certificates(spec)


def archiving(spec: ClusterSpec, deep: bool) -> Any:
    return postgres.archiver_stats(spec, _secrets(spec)) if spec.backup.enabled else None


def backups(spec: ClusterSpec, deep: bool) -> Any:
    return pgbackrest.repo_obs(spec) if spec.backup.enabled else None


def history(spec: ClusterSpec, deep: bool) -> list[TimelineSwitch]:
    return patroni.history(spec)


GATHERERS: dict[str, Callable[[ClusterSpec, bool], Any]] = {
    "containers": containers, "resources": resources, "etcd": etcd_part, "etcd_auth": etcd_auth,
    "leader_key": leader_key, "site": site_part, "patroni": patroni_part,
    "failsafe": failsafe, "replication": replication, "backends": backends, "haproxy": haproxy_part,
    "session": session, "postgres": postgres_part, "disks": disks, "pooler": pooler, "apps": apps,
    "fencing": fencing, "tls": tls, "archiving": archiving, "backups": backups, "repo_size": repo_size,
    "server_db": server_db_part, "history": history,
}


def _observed(fn: Callable[[ClusterSpec, bool], Any], spec: ClusterSpec, deep: bool) -> tuple[Observed[Any], float]:
    t0 = time.monotonic()
    try:
        got: Observed[Any] = Observed(fn(spec, deep), "", asked=True)
    except Exception as exc:  # noqa: BLE001 - a part that fails is observed as failed
        got = Observed(None, _brief(exc), asked=True)
    return got, round(time.monotonic() - t0, 3)


# A snapshot started ahead (`prefetch`): (spec, parts, deep, its future), by scope.
_AHEAD: dict[str, tuple[ClusterSpec, tuple[str, ...], bool, Future[ClusterSnapshot]]] = {}
_AHEAD_LOCK = threading.Lock()
AHEAD_MAX_AGE_S = 30.0  # older than this when asked for, it is taken again


def prefetch(spec: ClusterSpec, parts: Iterable[str] = AUDIT_PARTS, deep: bool = True) -> Future[ClusterSnapshot]:
    """Start taking the snapshot now, in a background thread, for the next `observe` of the same
    spec in this process (which asks only for the parts it lacks); the future of that snapshot.

    `pgha audit` calls it before it imports the flow and starts its run: the systems are asked
    (mostly waiting on the engine and the network) while the interpreter is busy importing and
    the API records the run, and the flow's gathering task takes the result instead of asking
    again. A snapshot that is not claimed is simply dropped with the process. The parts that may
    import Prefect (`NOT_AHEAD`) are left to the flow: its first import from two threads at once fails.
    """
    wanted = tuple(p for p in dict.fromkeys(parts) if p not in NOT_AHEAD)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="observe-ahead")
    future = pool.submit(_take, spec, wanted, deep)
    pool.shutdown(wait=False)
    with _AHEAD_LOCK:
        _AHEAD[spec.scope] = (spec, wanted, deep, future)
    return future


def prefetch_rest(spec: ClusterSpec) -> None:
    """Start the parts `prefetch` left out (`NOT_AHEAD`) for the snapshot started ahead of `spec`,
    once the caller has imported Prefect (they then run while the flow run is created); they join
    that snapshot. No snapshot of that spec ahead: nothing is started."""
    with _AHEAD_LOCK:
        ahead = _AHEAD.get(spec.scope)
        if ahead is None or ahead[0] != spec:
            return
        _, wanted, deep, first = ahead
        rest = tuple(p for p in NOT_AHEAD if p not in wanted)
        if not rest:
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="observe-rest")
        both = pool.submit(lambda: _merged(first, _take(spec, rest, deep), rest))
        pool.shutdown(wait=False)
        _AHEAD[spec.scope] = (spec, (*wanted, *rest), deep, both)


def _merged(first: Future[ClusterSnapshot], rest: ClusterSnapshot, parts: tuple[str, ...]) -> ClusterSnapshot:
    """The snapshot started ahead with `parts` from `rest`, taken beside it: elapsed from the first start to the last end."""
    snap = first.result()
    end = max(snap.taken_at + snap.elapsed_s, rest.taken_at + rest.elapsed_s)
    return replace(snap, elapsed_s=round(end - snap.taken_at, 3), took_s={**snap.took_s, **rest.took_s},
                   **{p: getattr(rest, p) for p in parts})


def _claim(spec: ClusterSpec, deep: bool) -> ClusterSnapshot | None:
    with _AHEAD_LOCK:
        ahead = _AHEAD.pop(spec.scope, None)
    if ahead is None or ahead[0] != spec or ahead[2] != deep:
        return None
    snap = ahead[3].result()
    return snap if time.time() - snap.taken_at <= AHEAD_MAX_AGE_S else None


def observe(spec: ClusterSpec, parts: Iterable[str] = AUDIT_PARTS, deep: bool = True) -> ClusterSnapshot:
    """Ask every system of `parts` once, all at once; the snapshot (never raises for a sick cluster).

    A snapshot of the same spec started ahead in this process (`prefetch`) is taken instead, when
    it is recent: only the parts it lacks are asked now."""
    wanted = tuple(dict.fromkeys(parts))
    unknown = [p for p in wanted if p not in GATHERERS]
    if unknown:
        raise ValueError(f"unknown snapshot part(s): {', '.join(unknown)}")
    ahead = _claim(spec, deep)
    if ahead is None:
        return _take(spec, wanted, deep)
    missing = tuple(p for p in wanted if not getattr(ahead, p).asked)
    if not missing:
        return ahead
    rest = _take(spec, missing, deep)
    return replace(ahead, elapsed_s=round(ahead.elapsed_s + rest.elapsed_s, 3), took_s={**ahead.took_s, **rest.took_s},
                   **{p: getattr(rest, p) for p in missing})


def _take(spec: ClusterSpec, parts: tuple[str, ...], deep: bool) -> ClusterSnapshot:
    taken_at, t0 = time.time(), time.monotonic()
    with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="observe") as pool:
        futures = {p: pool.submit(_observed, GATHERERS[p], spec, deep) for p in parts}
        got = {p: f.result() for p, f in futures.items()}
    return ClusterSnapshot(scope=spec.scope, taken_at=taken_at, elapsed_s=round(time.monotonic() - t0, 3),
                           took_s={p: t for p, (_, t) in got.items()}, **{p: o for p, (o, _) in got.items()})


@task(name="audit-gather")
def gather(spec: ClusterSpec) -> ClusterSnapshot:
    """The snapshot with every part the audit judges (each system asked once, all at once, in one
    task: a task run per system cost the audit more in the API's bookkeeping than the asking)."""
    return observe(spec, AUDIT_PARTS, deep=True)
