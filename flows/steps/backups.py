"""WAL archiving and the pgBackRest stanza, converged (used by bootstrap and the backup flows).

Owned by the backup flows. `ensure_archiving` is a sequence of tasks, so it runs inside
whichever flow calls it: `converge` on every `pgha up` (an older cluster gets archiving) and
so also restore's rebuild of an adopted data directory.
"""

from __future__ import annotations

from prefect import get_run_logger

from stack import audit_backup
from stack import backup as bk
from stack import backup_decisions as bkd
from stack.errors import StateError
from stack.spec import ClusterSpec
from tasks import patroni, postgres
from tasks import pgbackrest as pbr
from tasks.archiving import apply_archive_parameters, set_archive_parameters
from tasks.host.secrets import cluster_secrets
from tasks.repo_host import ensure_repo_host


def ensure_archiving(spec: ClusterSpec) -> bkd.Archiving:
    """Converge WAL archiving and the stanza (idempotent), once the cluster is whole.

    Repository files and TLS servers in the nodes, archive settings in Patroni's dynamic
    config (with a restart of the nodes that need one), the stanza.
    """
    if not spec.backup.enabled:
        return bkd.Archiving(note="disabled in the spec")
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
    return bkd.Archiving(nodes=nodes, changed=changed, restarted=restarted)
