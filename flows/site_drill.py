"""Site drills, run by `pgha drill site-switchover|site-loss --scope <standby site>`.

The standby site's `standby_of` names the primary site. A write probe commits every 50 ms
through the primary site's R/W port and, once that fails, the other site's (a client that knows
both sites' addresses), so what it saw measures the write gap, the writes lost (RPO) and, for a
site loss, the time from the failover command to the first write the promoted site took (RTO).

site-switchover: the controlled site switchover (`pgha site switchover`) under the probe; 0
acknowledged writes lost, the old primary site following the new one, or the drill fails.
site-loss: every container of the primary site (etcd, nodes, HAProxy, pooler) killed at once,
then the site failover as `pgha site failover --yes` does it, then the dead site rebuilt as a
standby of the promoted one (`pgha site rebuild`: its data rewound by Patroni, else cloned afresh;
a note says which, and what the rewind discarded), so both sites are manageable afterwards. When
the promotion itself fails, the killed containers are started again; either way the drill fails
loudly with the command the operator must run.

Run inside the `drill` flow (it holds the standby site's lock; this takes the primary site's).
"""

from __future__ import annotations

import time
import uuid

from prefect import get_run_logger

from flows.site import fail_over, rebuild_preflight, rebuild_site, site_lock, switch_sites, switchover_preflight
from flows.steps import preflight_once
from flows.steps.cluster import require_healthy
from flows.steps.drill_report import finish
from flows.steps.ops import current
from stack.drill import DrillKind, ProbeLog, longest_gap, lost_writes, rpo_seconds
from stack.errors import PghaError
from stack.results import DrillResult, SiteRebuildResult
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_hosts, faults, patroni, postgres
from tasks.docker_engine import Engine
from tasks.host.secrets import cluster_secrets
from tasks.postgres_probe import Probe


class SiteDrillFailed(PghaError):
    """The site drill lost acknowledged writes it must not lose, or left a site it could not restore."""


def run_site_drill(spec: ClusterSpec, kind: DrillKind, probe_interval_ms: int, heal_timeout_s: int,
                   wait_seconds: float, kill_hosts: bool = False) -> DrillResult:
    """The drill on the standby site `spec` and the primary site its `standby_of` names."""
    primary, demoted = preflight_once(switchover_preflight, spec, True)  # both sites healthy, the standby streaming close behind
    require_healthy(primary, "the site drill", settle_s=10)
    with site_lock(primary.scope, f"drill {kind.value}", wait_seconds):
        return _drill(spec, primary, demoted, kind, probe_interval_ms, heal_timeout_s, kill_hosts)


def _drill(spec: ClusterSpec, primary: ClusterSpec, demoted: ClusterSpec, kind: DrillKind, probe_interval_ms: int,
           heal_timeout_s: int, kill_hosts: bool = False) -> DrillResult:
    log = get_run_logger()
    secrets = cluster_secrets(primary.scope)  # the standby site has the same catalog passwords
    promoted = spec.model_copy(update={"standby_of": None})
    lead = patroni.cluster_view(primary).leader()
    old_leader = lead.name if lead else ""
    postgres.ensure_probe_table(primary, secrets)
    run_id = uuid.uuid4().hex[:12]
    writer = Probe(primary, secrets, run_id, write=True, interval=probe_interval_ms / 1000,
                   max_seconds=primary.timing.ttl * 3 + 2 * heal_timeout_s + 600, other=promoted)
    writer.start()
    notes: list[str] = []
    healed, action = False, None
    t_fault = t_cmd = t_end = time.monotonic()
    wall = time.time()
    first_write: float | None = None
    failover_s: float | None = None
    new_leader = ""
    try:
        wait_for("the write probe to warm up", lambda: len(writer.log.ok), lambda n: n >= 20, timeout=30,
                 interval=0.1)
        wall, t_fault = time.time(), time.monotonic()
        if kind == DrillKind.SITE_SWITCHOVER:
            log.info("site-switchover: %s demoted, %s promoted, under writes", primary.scope, spec.scope)
            out = switch_sites(spec, primary, demoted)
            new_leader, healed = out.leader, out.old_primary_follows
            notes.append(f"site switchover: {spec.scope} writable {out.write_gap_s}s after the demotion "
                         f"(caught up after {out.caught_up_s}s), demoted at {out.demoted_lsn}")
            if not healed:
                action = (f"`pgha site status --scope {primary.scope}`; if it does not stream, "
                          f"`pgha site rebuild --scope {primary.scope} --standby-of {spec.scope} --yes`")
            t_cmd = t_fault
        else:
            killed = _kill_hosts(primary) if kill_hosts else _kill_site(primary)
            notes.append(f"killed {'the hosts' if kill_hosts else 'every container'} of {primary.scope}: "
                         f"{', '.join(killed)}")
            t_cmd = time.monotonic()
            log.info("site-loss: %s killed (%d containers); site failover of %s", primary.scope, len(killed),
                     spec.scope)
            try:
                _, fence_action, new_leader, failover_s, _ = fail_over(spec, primary)
                if fence_action:
                    notes.append(f"failover: {fence_action}")
            except PghaError as exc:
                restored = _boot_hosts(primary) if kill_hosts else _restart_site(primary, killed)
                raise SiteDrillFailed(f"site-loss: the site failover failed ({str(exc).splitlines()[0]}); "
                                      f"{restored}") from None
        # The promoted site takes the writes: wait for the probe's first, then a few more.
        t_switched = time.monotonic()
        try:
            first_write = wait_for(f"writes acknowledged by {spec.scope}", lambda: _first_after(writer.log, t_cmd),
                                   lambda t: t is not None, timeout=60, interval=0.05)
            wait_for("steady writes on the new primary site", lambda: writer.log.ok[-1] if writer.log.ok else 0.0,
                     lambda t: t > max(t_switched, first_write or 0.0) + 1.0, timeout=30, interval=0.1)
        except PghaError as exc:
            then = (f"; {primary.scope} is dead: `pgha site rebuild --scope {primary.scope} --standby-of "
                    f"{spec.scope} --yes`" if kind == DrillKind.SITE_LOSS else "")
            raise SiteDrillFailed(f"{kind.value}: {spec.scope} was promoted but the probe saw no write on it "
                                  f"({str(exc).splitlines()[0]}); check `pgha site status --scope {spec.scope}`"
                                  f"{then}") from None
    finally:
        writer.stop()
        writer.join(10)
        t_end = time.monotonic()
    present = postgres.probe_ids(promoted, cluster_secrets(spec.scope), run_id)
    acked = list(zip(writer.log.acked_ids, writer.log.ok, strict=False))
    lost = lost_writes(writer.log.acked_ids, present)
    returned: list[int] = []
    rebuilt = None
    if kind == DrillKind.SITE_LOSS:
        if kill_hosts:
            returned = _site_returns(primary, run_id, notes)
        healed, action, rebuilt = _rebuild_old_site(spec.scope, primary, heal_timeout_s)
        notes.append(f"{primary.scope} rebuilt as a standby of {spec.scope}: {rebuilt.method} ({rebuilt.why}); "
                     f"{rebuilt.discarded}" if healed and rebuilt else f"not rebuilt: {action}")
    kept = None
    if returned and healed:
        kept = _still_there(primary, spec.scope, run_id, returned)
        if kept:
            what = "could not be read" if kept < 0 else f"{kept} of them are still there"
            action = action or (f"the returning {primary.scope} took {len(returned)} rows that the rebuild must "
                                f"discard; {what}: `pgha site status --scope {primary.scope}`")
            healed = False
    result = DrillResult(
        kind=kind.value, target=primary.scope, old_leader=old_leader or primary.scope, new_leader=new_leader,
        timeline_before=None, timeline_after=None,
        write_gap_s=round(longest_gap(writer.log.ok, t_fault - 1.0, t_end), 3), read_gap_s=0.0,
        writes_acked=len(writer.log.acked_ids), write_errors=len(writer.log.errors), lost_writes=lost,
        recovered_s=round(first_write - t_fault, 2) if first_write else None, healed=healed,
        rejoin="rebuilt" if kind == DrillKind.SITE_LOSS and healed else "follows" if healed else "",
        notes=notes + current().events, old_site=primary.scope, new_site=spec.scope,
        rpo_s=rpo_seconds(acked, present, t_fault) if kind == DrillKind.SITE_LOSS else None,
        rto_s=round(first_write - t_cmd, 2) if first_write and kind == DrillKind.SITE_LOSS else None,
        failover_s=failover_s, operator_action=action,
        rebuild=rebuilt.method if rebuilt else None,
        rebuild_discarded_commits=rebuilt.discarded_commits if rebuilt else None,
        returned_writes=len(returned) if kill_hosts and kind == DrillKind.SITE_LOSS else None, returned_kept=kept,
    )
    marks = {"command": t_cmd} | ({"write": first_write} if first_write else {})
    return finish(spec, result, writer.log, ProbeLog(), t_fault, t_end, wall, marks,
                  f"{primary.scope} -> {spec.scope}: {kind.value} drill",
                  f"{result.kind} drill: `{result.old_site}` → `{result.new_site}`", _table(result), SiteDrillFailed)


def _first_after(log: ProbeLog, t: float) -> float | None:
    return next((x for x in log.ok if x > t), None)


def _kill_site(primary: ClusterSpec) -> list[str]:
    """docker kill of every running container of the primary site at once (a site's power cut),
    on each of its engines (over hosts: every host's); `host/container` over hosts."""
    killed: list[str] = []
    for host, eng in _site_engines(primary):
        names = [ct.name for ct in eng.cluster_containers(primary.scope) if ct.status == "running"]
        for name in names:
            eng.kill(name)
        killed += [f"{host}/{n}" if host else n for n in names]
    return killed


def _site_engines(primary: ClusterSpec) -> list[tuple[str, Engine]]:
    engines = docker_hosts.engines(primary)
    return list(engines.by_host.items()) if primary.multi_host else [("", engines.default)]


def _restart_site(primary: ClusterSpec, killed: list[str]) -> str:
    """The killed containers started again (the promotion failed: the old primary site comes back)."""
    engines = dict(_site_engines(primary))
    try:
        for entry in killed:
            host, _, name = entry.rpartition("/")
            engines[host].start(name)
        postgres.wait_writable(primary, cluster_secrets(primary.scope), timeout=180)
    except PghaError as exc:
        return (f"{primary.scope} did not come back ({str(exc).splitlines()[0]}): `pgha up --scope {primary.scope}`, "
                "then `pgha site status`")
    return f"{primary.scope}'s containers started again and it accepts writes; check `pgha site status`"


def _rebuild_old_site(new_scope: str, old: ClusterSpec,
                      heal_timeout_s: int) -> tuple[bool, str | None, SiteRebuildResult | None]:
    """The dead site rebuilt as a standby of the promoted one (its data rewound, else cloned afresh);
    (it streams, else what to run; the rebuild's result)."""
    command = f"`pgha site rebuild --scope {old.scope} --standby-of {new_scope} --yes`"
    try:
        primary, demoted = rebuild_preflight(old, new_scope, True)
        out = rebuild_site(old, primary, demoted)
    except PghaError as exc:
        return False, f"{str(exc).splitlines()[0]}; run {command}", None
    if not out.streaming:
        try:
            wait_for(f"{old.scope} to stream from {new_scope}", lambda: _streams(demoted), lambda s: s,
                     timeout=heal_timeout_s, interval=1)
        except PghaError:
            return (False, f"{old.scope} was rebuilt ({out.method}) but does not stream from {new_scope}; "
                    f"`pgha site status`, or {command}", out)
    return True, None, out


# A lab host's engine restarts its containers when it boots (restart policy unless-stopped): the
# old primary site takes writes again; how long the drill waits for that before it rebuilds anyway.
RETURN_WAIT_S = 150.0
RETURNED_ROWS = 5  # rows the drill writes on the returning old site, which the rebuild must discard


def _kill_hosts(primary: ClusterSpec) -> list[str]:
    """The primary site's lab hosts killed (a machine dying with its engine and every container on it)."""
    return [faults.kill_host(primary, h.name) for h in primary.hosts or []]


def _boot_hosts(primary: ClusterSpec) -> str:
    try:
        done = [faults.boot_host(primary, h.name) for h in primary.hosts or []]
    except PghaError as exc:
        return f"{primary.scope}'s hosts did not boot ({str(exc).splitlines()[0]}): boot them, then `pgha site status`"
    return f"{primary.scope}'s hosts booted again ({', '.join(done)}); check `pgha site status`"


def _site_returns(primary: ClusterSpec, run_id: str, notes: list[str]) -> list[int]:
    """The old primary site's hosts booted again: its engine restarts its containers and its old
    leader takes writes again (what a rebooted site does). The drill writes a few rows on it, which
    the rebuild must discard; the ids written (none when it did not take writes in time)."""
    log = get_run_logger()
    notes.append(_boot_hosts(primary))
    old = primary.model_copy(update={"standby_of": None})
    secrets = cluster_secrets(primary.scope)
    try:
        wait_for(f"the returning {primary.scope} to take writes", lambda: postgres.wal_position(old, secrets),
                 lambda p: not p.in_recovery, timeout=RETURN_WAIT_S, interval=1)
        ids = list(range(-RETURNED_ROWS, 0))
        postgres.probe_insert(old, secrets, run_id, ids)
    except PghaError as exc:
        notes.append(f"{primary.scope} came back but took no write within {RETURN_WAIT_S:g}s "
                     f"({str(exc).splitlines()[0]})")
        return []
    log.info("site-loss: the returning %s took %d writes (two writable sites until the rebuild)", primary.scope,
             len(ids))
    notes.append(f"{primary.scope} came back as a primary and took {len(ids)} writes: two writable sites until "
                 "the rebuild stopped it")
    return ids


def _still_there(primary: ClusterSpec, new_scope: str, run_id: str, ids: list[int]) -> int:
    """How many of the rows the returning old site took are on it after the rebuild (0: discarded)."""
    from tasks.host.generations import stored_spec

    try:
        rebuilt = stored_spec(primary.scope)
        return len(postgres.probe_ids(rebuilt, cluster_secrets(primary.scope), run_id) & set(ids))
    except PghaError:
        return -1


def _streams(spec: ClusterSpec) -> bool:
    try:
        pos = postgres.wal_position(spec, cluster_secrets(spec.scope))
    except PghaError:
        return False
    return pos.in_recovery and pos.receiver == "streaming"


def _table(r: DrillResult) -> list[str]:
    return [
        "| write gap | lost writes | RPO | RTO | failover | old site |",
        "|---|---|---|---|---|---|",
        f"| {r.write_gap_s:.2f} s | {len(r.lost_writes)} | {r.rpo_s if r.rpo_s is not None else '-'} s | "
        f"{r.rto_s if r.rto_s is not None else '-'} s | {r.failover_s if r.failover_s is not None else '-'} s | "
        f"{r.rejoin or r.operator_action} |",
    ]
