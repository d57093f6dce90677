"""major-upgrade: blue/green to a new PostgreSQL major through logical replication, with a way back.

Blue is the running cluster. Green (`<scope>-green`) is a new Patroni cluster of the same
shape on the target major, bootstrapped by the same converge sequence as `pgha up`, with blue's
passwords. Roles and schema are copied, then a subscription per database copies the data and
streams changes. At cutover the clients' HAProxy (blue's, on the clients' ports) stops routing
writes, blue turns read-only and ends its sessions, a marker row proves green applied
everything, sequences are copied, green -> blue replication is set up, and HAProxy is pointed
at green's nodes (same ports). Rollback is the same move the other way; finish removes blue.

The phase is recorded in `<state>/<scope>/major-upgrade.json` (`tasks.host.generations`) before
each step that changes it; the decisions are `stack.major` (pure, unit-tested); the mechanics
every move uses (the pre-check's facts, the clients' routing, the networks, fencing and
catching up) are `flows.steps.major`.
"""

from __future__ import annotations

import time

from prefect import flow
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from flows.audit import run_audit
from flows.backup import backup
from flows.steps.approval import require_approval
from flows.steps.cluster import require_healthy, store_spec
from flows.steps.converge import converge
from flows.steps.major import (
    connect_networks,
    fence_and_catch_up,
    leader,
    major_preflight,
    route,
    swap_networks,
    unswap_networks,
    wait_writable_on,
)
from flows.steps.ops import current, mutating_flow, note, operation
from stack import major
from stack.backup_decisions import BackupType
from stack.errors import PghaError, StateError, UsageError
from stack.generations import base_of, generation_spec
from stack.major import Action, MajorState, Phase, Request
from stack.results import MajorUpgradeResult
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_hosts, pg_logical, pgbackrest
from tasks.cluster_health import wait_healthy
from tasks.cluster_resources import ensure_image
from tasks.host import tls as host_tls
from tasks.host.generations import (
    clear_generation_dir,
    load_major_state,
    major_state_file,
    save_major_state,
    write_pointer,
)
from tasks.host.secrets import cluster_secrets
from tasks.host.state import secrets_file, write_private
from tasks.members import ensure_pooler, place_member


class MajorUpgradeFailed(PghaError):
    """The upgrade failed; the message says which side serves the clients now."""


# ---- the moves ----


def build_green(blue: ClusterSpec, green: ClusterSpec, st: MajorState, replica_identity: list[str]) -> dict[str, float]:
    """Green bootstrapped, roles and schema copied, subscriptions streaming with little lag."""
    took: dict[str, float] = {}
    t = time.monotonic()
    b_lead = leader(blue)
    if blue.backup.enabled:
        # Green's first backup writes its canary row: the table must exist on both sides
        # (logical replication copies no DDL), or the reverse replication would stop there.
        pgbackrest.ensure_canary_table(blue)
    if replica_identity:
        pg_logical.set_replica_identity_full(blue, b_lead, replica_identity)
        note("REPLICA IDENTITY FULL on " + ", ".join(replica_identity))
    blue_secrets = secrets_file(blue.scope).read_text()
    if not secrets_file(green.scope).exists() or secrets_file(green.scope).read_text() != blue_secrets:
        # Green answers the clients with blue's passwords (also over a file an earlier cluster of
        # the same scope left in `<scope>-green`'s state directory).
        write_private(secrets_file(green.scope), blue_secrets)
    host_tls.share_ca(blue, green)  # blue's HAProxy checks green's Patroni: one CA for both
    with operation("major-upgrade", green):
        converge(green)
    connect_networks(blue, green)
    took["green_bootstrap_s"] = round(time.monotonic() - t, 1)
    note(f"green {green.scope} up on PostgreSQL {green.postgres_version} ({took['green_bootstrap_s']}s)")

    t = time.monotonic()
    g_lead = leader(green)
    for db in st.databases:
        pg_logical.ensure_marker_table(blue, b_lead, db)
        pg_logical.ensure_publication(blue, b_lead, db)
    pg_logical.run_file(green, g_lead, pg_logical.roles_dump(blue, b_lead), stop_on_error=False)
    for db in st.databases:
        pg_logical.ensure_database(green, g_lead, db)
        pg_logical.run_file(green, g_lead, pg_logical.schema_dump(blue, b_lead, db), db)
    took["schema_s"] = round(time.monotonic() - t, 1)
    note(f"roles and schema of {len(st.databases)} database(s) copied ({took['schema_s']}s)")

    t = time.monotonic()
    for db in st.databases:
        pg_logical.ensure_publication(green, g_lead, db)  # for the way back; unused until the cutover
    pg_logical.create_subscriptions(green, g_lead, st.databases, major.FORWARD_SUB, blue, cluster_secrets(blue.scope),
                                    copy_data=True)
    progress = create_progress_artifact(0.0, key=f"{blue.scope}-major-copy", description="green copying blue")

    def copied() -> tuple[int, int, int | None]:
        done = total = 0
        for db in st.databases:
            d, n = pg_logical.sync_progress(green, g_lead, db)
            done, total = done + d, total + n
        lag = pg_logical.slot_lag_bytes(blue, b_lead, major.FORWARD_SUB)
        size = pg_logical.database_bytes(green, g_lead, st.databases)
        update_progress_artifact(progress, 100.0 * done / max(total, 1),
                                 description=f"{done}/{total} tables copied, {size} bytes on green, lag {lag} bytes")
        return done, total, lag

    done, total, lag = wait_for("green to copy every table and catch up", copied,
                                lambda v: v[0] == v[1] and v[2] is not None and v[2] <= blue.major.cutover_lag_bytes,
                                timeout=blue.major.catchup_timeout_s, interval=0.5)
    took["copy_s"] = round(time.monotonic() - t, 1)
    note(f"{done}/{total} tables copied, lag {lag} bytes ({took['copy_s']}s)")
    return took


class Laps:
    """Seconds each step of a write gap took, from its start (reported in the result's durations)."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.t = prefix, time.monotonic()
        self.took: dict[str, float] = {}

    def __call__(self, step: str) -> None:
        now = time.monotonic()
        self.took[f"{self.prefix}_{step}_s"] = round(now - self.t, 2)
        self.t = now


def cut_over(blue: ClusterSpec, green: ClusterSpec, st: MajorState) -> tuple[float, dict[str, float]]:
    """Blue fenced, green caught up, reverse replication, clients on green; the write gap and its steps."""
    st.phase, st.routed = Phase.CUTOVER, "fenced"
    save_major_state(blue.scope, st)
    g_lead, b_lead = leader(green), leader(blue)  # asked before the gap: each question is a round trip
    secrets = cluster_secrets(blue.scope)
    t0 = time.monotonic()
    lap = Laps("cutover")
    route(blue, None)
    lap("fence_haproxy")
    fence_and_catch_up(blue, green, st.databases, b_lead, g_lead)
    lap("fence_catch_up_sequences")
    pg_logical.drop_subscriptions(green, g_lead, st.databases, major.FORWARD_SUB)
    swap_networks(blue, green)
    st.reverse = True  # from here on green may take writes that only the reverse way brings back
    save_major_state(blue.scope, st)
    lap("networks")
    pg_logical.create_subscriptions(blue, b_lead, st.databases, major.REVERSE_SUB, green, secrets, copy_data=False)
    lap("reverse_replication")
    route(blue, green)
    st.routed = "green"
    save_major_state(blue.scope, st)
    lap("route_green")
    gap = round(wait_writable_on(blue, green.postgres_version, blue.major.cutover_timeout_s) - t0, 2)
    lap("first_write")
    st.phase, st.gap_s = Phase.ON_GREEN, gap
    save_major_state(blue.scope, st)
    note(f"clients on green (PostgreSQL {green.postgres_version}); write gap {gap}s")
    return gap, lap.took


def roll_back(blue: ClusterSpec, green: ClusterSpec, st: MajorState) -> float:
    """Green fenced, blue caught up through the reverse replication, clients on blue; the write gap."""
    st.phase = Phase.ROLLING_BACK
    save_major_state(blue.scope, st)
    b_lead = leader(blue)
    g_lead = leader(green) if st.reverse else ""
    t0 = time.monotonic()
    route(blue, None)
    st.routed = "fenced"
    if st.reverse:
        fence_and_catch_up(green, blue, st.databases, g_lead, b_lead)
        # Green goes away, its slots with it: drop blue's side only.
        pg_logical.detach_subscriptions(blue, b_lead, st.databases, major.REVERSE_SUB)
        st.reverse = False
        save_major_state(blue.scope, st)
    unswap_networks(blue, green)
    pg_logical.set_read_only(blue, b_lead, st.databases, False)
    route(blue, blue)
    st.routed = "blue"
    save_major_state(blue.scope, st)
    gap = round(wait_writable_on(blue, st.source, blue.major.cutover_timeout_s) - t0, 2)
    st.rollback_gap_s = gap
    note(f"clients back on blue (PostgreSQL {st.source}); write gap {gap}s")
    st.phase = Phase.ON_BLUE
    save_major_state(blue.scope, st)
    return gap


def drop_reverse(blue: ClusterSpec, st: MajorState) -> None:
    b_lead = leader(blue)
    for db in st.databases:
        pg_logical.drop_subscription(blue, b_lead, db, major.REVERSE_SUB)
    st.reverse = False


def discard_green(blue: ClusterSpec, green: ClusterSpec, st: MajorState | None) -> None:
    """Remove green and what it left on blue (subscriptions, slots, the extra networks); blue keeps serving."""
    eng = docker_hosts.engines(blue).default
    dbs = st.databases if st else []
    try:
        b_lead = leader(blue)
        pg_logical.detach_subscriptions(blue, b_lead, dbs, major.REVERSE_SUB)
        if eng.running(green.container(green.node_names()[0])):
            pg_logical.detach_subscriptions(green, leader(green), dbs, major.FORWARD_SUB)
        wait_for("the upgrade's replication slots on blue to be dropped",
                 lambda: pg_logical.drop_slots(blue, b_lead, major.FORWARD_SUB), lambda left: left == 0,
                 timeout=30, interval=0.5)
        for db in dbs:
            pg_logical.drop_publication(blue, b_lead, db)
            pg_logical.drop_marker_table(blue, b_lead, db)
    except PghaError as exc:
        note(f"cleanup on blue incomplete: {str(exc).splitlines()[0]}")
    for m in [*blue.node_names(), blue.haproxy_member]:
        if eng.find_container(blue.container(m)) is not None and eng.attached(blue.container(m), green.network):
            eng.disconnect(blue.container(m), green.network)
    eng.remove_labelled(green.scope, volumes=True)
    # When green is `<base>` again, the base's pointer stays, and the cluster's CA (older DSNs name it).
    clear_generation_dir(green.scope, keep=("tls",) if green.scope == base_of(green.scope) else ())
    note(f"green {green.scope} removed; blue untouched")


def finish(blue: ClusterSpec, green: ClusterSpec, st: MajorState) -> tuple[ClusterSpec, float]:
    """Drop the reverse replication, remove blue, hand the clients' ports to green's own HAProxy.

    Returns the serving spec (green on the clients' ports) and the handover gap: from blue's
    HAProxy removed (the ports freed) until the clients' R/W port reaches a writable green.
    Blue's whole generation goes (nodes, etcd, HAProxy, pooler, fencer, network, volumes, its
    local repository: green took and verified its own first full backup after the cutover), and
    the base's pointer names green (`tasks.host.generations`).
    """
    eng = docker_hosts.engines(blue).default
    if any(eng.running(blue.container(m)) for m in blue.node_names()):  # a killed finish may have removed them
        drop_reverse(blue, st)
    g_lead = leader(green)
    for db in st.databases:
        pg_logical.drop_publication(green, g_lead, db)
        pg_logical.drop_marker_table(green, g_lead, db)  # nothing left of the upgrade in the clients' schema
    pg_logical.set_read_only(green, g_lead, st.databases, False)
    for role in ("patroni", "etcd", "pgbackrest", "fencer"):  # green has its own fencing watcher
        eng.remove_labelled(blue.scope, role=role, volumes=True)
    serving = generation_spec(green, green.scope, green.postgres_version, blue.ports.model_dump())
    gap = handover(blue, green, serving)
    eng.remove_labelled(blue.scope, volumes=True)  # what is left: its network, repository volume
    store_spec(serving)  # `--scope <base>` and `--scope <green>` read green on the clients' ports
    write_pointer(base_of(blue.scope), serving)
    # The CA stays: every generation of a cluster shares it (`share_ca`), and clients' DSNs name it.
    clear_generation_dir(blue.scope, keep=("tls",))
    note(f"blue {blue.scope} removed; {serving.scope} serves the clients' ports (handover gap {gap}s)")
    return serving, gap


def handover(blue: ClusterSpec, green: ClusterSpec, serving: ClusterSpec) -> float:
    """The clients' ports, from blue's HAProxy (routed to green) to green's own, recreated on them."""
    eng = docker_hosts.engines(blue).default
    image = ensure_image(serving)
    subnet = eng.ensure_network(serving.scope, serving.network)[0]
    t0 = time.monotonic()
    for role in ("pooler", "haproxy"):
        eng.remove_labelled(blue.scope, role=role)
    place_member(serving, "haproxy", serving.haproxy_member, image, subnet)
    gap = round(wait_writable_on(serving, serving.postgres_version, serving.major.cutover_timeout_s) - t0, 2)
    if serving.runs_pooler:
        ensure_pooler(serving, image)
    else:
        eng.remove_container(green.container(green.pooler_member))
    if serving.metrics.enabled:  # green's exporter moves from its offset port to the clients' one
        place_member(serving, "metrics", serving.metrics_member, image, subnet)
    return gap


def _versions(spec: ClusterSpec, tries: int = 3, pause_s: float = 2.0) -> int | None:
    """The leader's PostgreSQL major, for the result; None (and a note why) when it cannot be asked.

    Asked again after a failure: on a busy machine the leader's REST answer or the `docker exec`
    can time out once, and the result would show no version for an upgrade that went well."""
    for attempt in range(1, tries + 1):
        try:
            return pg_logical.server_major(spec, leader(spec))
        except PghaError as exc:
            if attempt == tries:
                note(f"{spec.scope}: PostgreSQL version not read ({str(exc).splitlines()[0][:200]})")
                return None
            time.sleep(pause_s)
    return None


@flow(name="major-upgrade", description="Blue/green major upgrade through logical replication, with a way back.")
@mutating_flow("major-upgrade")
def major_upgrade(spec: ClusterSpec = ClusterSpec(), target: int = 17,  # noqa: B008
                  request: Request = Request.UPGRADE, replica_identity_full: bool = False) -> MajorUpgradeResult:
    """Upgrade to `target` (request upgrade), go back (rollback) or drop blue (finish); resumes a killed run."""
    blue = spec
    if (why := major.hosts_refusal(blue)) is not None:  # a deployment run meets the CLI's refusal too
        raise UsageError(why)
    st = load_major_state(blue.scope)
    decision = major.next_action(st, request)
    if st is not None:
        target = st.target
    green = major.green_spec(blue, target)
    note(f"{decision.action.value}: {decision.reason}")
    res = MajorUpgradeResult(action=decision.action.value, reason=decision.reason, phase=st.phase.value if st else "",
                             blue_scope=blue.scope, green_scope=green.scope)
    a = decision.action
    if a == Action.NOTHING and st is None and request != Request.UPGRADE:
        raise StateError(decision.reason)
    if a == Action.NOTHING:
        pass
    elif a in (Action.DISCARD_GREEN, Action.RESTART, Action.REOPEN_BLUE):
        if a == Action.REOPEN_BLUE:
            route(blue, None)
            pg_logical.set_read_only(blue, leader(blue), st.databases if st else [], False)
            route(blue, blue)
        discard_green(blue, green, st)
        major_state_file(blue.scope).unlink(missing_ok=True)
        st = None
        res.phase = ""
    if a in (Action.START, Action.RESTART):
        st, res = _upgrade(blue, green, target, replica_identity_full, res)
    elif a == Action.ROLL_BACK:
        assert st is not None
        res.version_before = _versions(green)
        res.write_gap_s = roll_back(blue, green, st)
        discard_green(blue, green, st)
        major_state_file(blue.scope).unlink(missing_ok=True)
        res.version_after, res.phase = _versions(blue), ""
    elif a == Action.FINISH:
        assert st is not None
        # Finishing drops blue, the way back: a deployment run pauses for the typed scope.
        require_approval(blue, "major-upgrade finish (the old cluster and its data are removed)")
        serving, res.handover_gap_s = finish(blue, green, st)
        major_state_file(blue.scope).unlink(missing_ok=True)  # the pointer says who serves now; nothing is in progress
        res.version_after, res.phase = _versions(serving), Phase.FINISHED.value
    op = current()
    res.events, res.elapsed_s = op.events, op.elapsed()
    create_table_artifact(key=f"{blue.scope}-major-upgrade", table=[
        {"field": k, "value": str(v)} for k, v in res.to_json().items() if not isinstance(v, (list, dict))],
        description=f"major upgrade of {blue.scope}: {a.value}")
    return res


def _upgrade(blue: ClusterSpec, green: ClusterSpec, target: int, replica_identity_full: bool,
             res: MajorUpgradeResult) -> tuple[MajorState, MajorUpgradeResult]:
    verdict = major_preflight(blue, target, replica_identity_full)
    require_healthy(blue, "the major upgrade")
    res.notes = verdict.notes
    res.version_before = _versions(blue)
    st = MajorState(phase=Phase.GREEN, target=target, source=res.version_before or blue.postgres_version,
                    green_scope=green.scope, databases=pg_logical.databases(blue, leader(blue)))
    save_major_state(blue.scope, st)
    try:
        res.durations = build_green(blue, green, st, verdict.set_replica_identity)
    except PghaError as exc:
        why = str(exc).splitlines()[0]
        note(f"FAILED before cutover: {why}")
        discard_green(blue, green, st)
        major_state_file(blue.scope).unlink(missing_ok=True)
        raise MajorUpgradeFailed(f"major upgrade failed before cutover ({why}); green removed, blue untouched "
                                 "and serving") from None
    t = time.monotonic()
    try:
        res.write_gap_s, laps = cut_over(blue, green, st)
        res.durations.update(laps)
    except PghaError as exc:
        why = str(exc).splitlines()[0]
        note(f"FAILED during cutover: {why}; returning to blue")
        try:
            roll_back(blue, green, st)
            discard_green(blue, green, st)
            major_state_file(blue.scope).unlink(missing_ok=True)
        except PghaError as exc2:
            raise MajorUpgradeFailed(f"cutover failed ({why}) and the return to blue failed too: "
                                     f"{str(exc2).splitlines()[0]}; run `pgha upgrade --major --rollback`") from None
        raise MajorUpgradeFailed(f"cutover failed ({why}); clients back on blue, green removed") from None
    res.durations["cutover_s"] = round(time.monotonic() - t, 1)
    wait_healthy(green, 120)
    g_lead = leader(green)
    res.bytes_copied = pg_logical.database_bytes(green, g_lead, st.databases)
    res.version_after, res.phase = _versions(green), st.phase.value
    after_cutover(green, res)
    return st, res


def after_cutover(green: ClusterSpec, res: MajorUpgradeResult) -> None:
    """Green's own first full backup and its verified restore (green has its own stanza), then its audit.

    The clients are on green by now: a failure here does not undo the upgrade (the reverse
    replication still allows `--rollback`); it fails the run loudly, saying where things stand.
    """
    where = f"clients are on {green.scope} (PostgreSQL {res.version_after})"
    if green.backup.enabled:
        t = time.monotonic()
        try:
            b = backup(green, type=BackupType.FULL, verify=True)
        except PghaError as exc:
            raise MajorUpgradeFailed(f"{where}, but its first backup failed: {str(exc).splitlines()[0]}; "
                                     f"run `pgha backup --scope {green.scope}`") from None
        res.backup_label = b.label
        res.backup_verified = bool(b.verification and b.verification.ok)
        res.durations["backup_s"] = round(time.monotonic() - t, 1)
        if not res.backup_verified:
            why = b.verification.error if b.verification else "no verification ran"
            raise MajorUpgradeFailed(f"{where}, but the restore of its first backup {b.label} did not verify: "
                                     f"{why}; run `pgha backup --scope {green.scope}`")
        note(f"green's first backup {b.label} taken and its restore verified")
    else:
        note(f"green's backup skipped: backup.enabled is false in the spec of {green.scope}")
    report = run_audit(green)
    res.audit = f"{report.status}: {report.summary or report.message}"
    note(f"audit of {green.scope}: {res.audit}")
