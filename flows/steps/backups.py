"""WAL archiving and the pgBackRest stanza, converged (used by bootstrap and the backup flows).

Owned by the backup flows. `ensure_archiving` is a sequence of tasks, so it runs inside
whichever flow calls it: `converge` on every `pgha up` (an older cluster gets archiving) and
so also restore's rebuild of an adopted data directory.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from stack import audit_backup, topology
from stack import backup as bk
from stack.errors import StateError
from stack.render import dcs_config
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import patroni, postgres
from tasks import pgbackrest as pbr
from tasks._prefect import ONCE, SIDE_EFFECT
from tasks.docker_hosts import engines
from tasks.host.secrets import cluster_secrets
from tasks.host.state import config_dir, write_private
from tasks.pgbackrest_restore import node_image


def _archive_state(spec: ClusterSpec, leader: str) -> tuple[str, str, bool]:
    """(archive_mode, archive_command) in the leader, and whether any member waits for a restart."""
    pending = any(m.pending_restart for m in patroni.cluster_view(spec).members)
    return postgres.show(spec, leader, "archive_mode"), postgres.show(spec, leader, "archive_command"), pending


@task(name="archive-parameters", **ONCE)
def set_archive_parameters(spec: ClusterSpec) -> list[str]:
    """Put the spec's archive parameters in Patroni's dynamic config; the names that changed.

    A cluster whose data directory Patroni adopted (restore --into) may have no dynamic
    config at all: it gets the spec's whole one.
    """
    cfg = patroni.dynamic_config(spec)
    changed = bk.archive_config_differs(cfg, spec)
    if changed and not cfg:
        patroni.replace_config(spec, dcs_config(spec))
    elif changed:
        patroni.edit_parameters(spec, changed)
    return sorted(changed)


@task(name="archive-mode-restart", **ONCE)
def apply_archive_parameters(spec: ClusterSpec, leader: str) -> list[str]:
    """Wait until Patroni applied the new settings; restart the members that need it; those restarted."""
    want = bk.archive_command(spec)
    # Applied means: already archiving with the new command, or (archive_mode needs a
    # restart; the command shows "(disabled)" until then) Patroni flags pending_restart.
    _, _, pending = wait_for("Patroni to apply the archive settings", lambda: _archive_state(spec, leader),
                             lambda v: v[2] or (v[0] == "on" and v[1] == want),
                             timeout=spec.timing.loop_wait * 3 + 30, interval=0.5)
    if not pending:
        return []
    restarted: list[str] = []

    def restart_flagged() -> dict[str, str]:
        # Each node applies the new config in its own loop, so one may be flagged a loop
        # after another: restart whoever is flagged, until every node archives.
        restarted.extend(patroni.restart_pending(spec))
        return {m: postgres.show(spec, m, "archive_mode") for m in pbr.running_nodes(spec)}

    wait_for("archive_mode on in every node after their restart", restart_flagged,
             lambda v: all(x == "on" for x in v.values()), timeout=spec.timing.loop_wait * 3 + 120, interval=1)
    return sorted(set(restarted))


@task(name="ensure-repo-host", **SIDE_EFFECT)
def ensure_repo_host(spec: ClusterSpec) -> str:
    """The repository host's container (backup.repo_host) runs and its `pgbackrest server` answers.

    From the nodes' image (the same pgBackRest); its files (config with the passphrase, the
    TLS material) 0600 in its config directory, copied to postgres by its start script. A
    changed definition recreates it (the repository volume is kept).
    """
    member = spec.repo_member
    conf, certs, pw = pbr.repo_host_files(spec)
    conf_dir = config_dir(spec.scope, member)
    planned = topology.repo_host(spec, node_image(spec), str(conf_dir), conf, certs, pw)
    for fname, text in planned.files.items():
        write_private(conf_dir / fname, text)
    outcome = engines(spec).of(member).ensure_container(planned.container)
    pbr.wait_repo_server(spec)
    get_run_logger().info("repository host %s on %s: %s", planned.container.name, spec.backup.repo_host,
                          outcome.value)
    return outcome.value


def ensure_archiving(spec: ClusterSpec) -> bk.Archiving:
    """Converge WAL archiving and the stanza (idempotent), once the cluster is whole.

    Repository files and TLS servers in the nodes, archive settings in Patroni's dynamic
    config (with a restart of the nodes that need one), the stanza.
    """
    if not spec.backup.enabled:
        return bk.Archiving(note="disabled in the spec")
    log = get_run_logger()
    if bk.uses_repo_host(spec):
        ensure_repo_host(spec)  # before the nodes archive into it
    nodes = pbr.prepare_nodes(spec)
    leader = patroni.cluster_view(spec).leader()
    if leader is None:
        raise StateError(f"cluster {spec.scope} has no leader; cannot configure WAL archiving")
    changed = set_archive_parameters(spec)
    restarted: list[str] = []
    if changed:
        log.info("archive parameters set in Patroni's dynamic config: %s", ", ".join(changed))
        restarted = apply_archive_parameters(spec, leader.name)
        patroni.wait_whole(spec)
    pbr.create_stanza(spec)
    # The first segments fail to archive until the stanza exists, and the archiver then backs off
    # for a minute: prove archiving works now (`pgbackrest check` switches WAL and waits for it),
    # so its last success is newer than those failures (the audit's backup.archiving row).
    if audit_backup.archiving_failing(postgres.archiver_stats(spec, cluster_secrets(spec.scope))):
        pbr.check(spec, pbr.runner_for(spec, leader.name))
    log.info("WAL archiving and stanza %s ready (%s)", spec.scope, ", ".join(f"{k}: {v}" for k, v in nodes.items()))
    return bk.Archiving(nodes=nodes, changed=changed, restarted=restarted)
