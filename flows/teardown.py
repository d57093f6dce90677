"""teardown: remove a cluster's containers and network; its volumes only when asked and confirmed.

Destroying data needs an explicit confirmation: `volumes=true` runs only with `confirm` equal
to the scope (the CLI's `--yes` sets it; a deployment run must type it). Even then the backup
repository volume and the secrets it needs (passwords, CA and keys in the state directory)
are kept unless `purge_backups`: the state directory is moved aside to
`<state root>/<scope>.removed-<UTC time>/`, never deleted while a repository that needs it
exists (`stack.teardown` decides). An earlier incarnation's moved-aside directory is deleted
once its repository is gone (`stack.housekeeping.obsolete_removed_dirs`).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.steps.approval import in_deployment_run, require_approval
from flows.steps.ops import mutating_flow
from flows.steps.standby import admit_on_primary
from stack import generations
from stack.backup import repo_volume
from stack.errors import UsageError
from stack.results import TeardownResult
from stack.spec import ClusterSpec
from stack.teardown import StateFate, confirm_refusal, state_fate
from tasks import docker_hosts
from tasks.host.generations import stored_spec
from tasks.host.lock import WaitSeconds
from tasks.teardown import move_state_aside, prune_removed_state, remove_resources, remove_state, repository_kept


def of_generation(spec: ClusterSpec, scope: str) -> ClusterSpec:
    """`spec` as generation `scope` (repository names and S3 paths are per scope)."""
    return spec if scope == spec.scope else spec.model_copy(update={"scope": scope})


@flow(name="teardown", description="Remove a pgha cluster; data volumes stay unless volumes=true with "
                                   "confirm=<scope>; the backup repository and its secrets stay unless "
                                   "purge_backups=true.")
@mutating_flow("teardown")
def teardown(spec: ClusterSpec = ClusterSpec(), volumes: bool = False,  # noqa: B008
             wait_seconds: WaitSeconds = 0, purge_backups: bool = False, confirm: str = "") -> TeardownResult:
    if volumes and in_deployment_run():
        # A deployment run (UI, schedule, automation): the scope typed in the paused run's form is
        # the confirmation; it is asked before anything changes.
        require_approval(spec, "teardown with volumes")
        confirm = spec.scope
    if confirm == generations.base_of(spec.scope):
        confirm = spec.scope  # the cluster's own name confirms the teardown of its serving generation
    if (why := confirm_refusal(spec.scope, volumes, purge_backups, confirm)) is not None:
        raise UsageError(why)
    gens = [of_generation(spec, g) for g in generations.generations(spec.scope)]
    keep = [] if purge_backups else [repo_volume(g) for g in gens]
    removed = remove_resources(spec, volumes, keep)
    result = TeardownResult(scope=spec.scope, **removed)
    # Each generation's state directory by its own repository: the base's pointer goes with the base's.
    # The serving generation last: its fate is the one the result reports.
    for g in sorted(gens, key=lambda g: g.scope == spec.scope):
        fate = state_fate(volumes, purge_backups, repository_kept(g) if volumes else True)
        if fate == StateFate.DELETE:
            # The data and the repository are gone, so are the passwords and configs that
            # belonged to them (the lock file goes too: unlinking it while held is harmless).
            result.state_removed = remove_state(g.scope) or result.state_removed
        elif fate == StateFate.MOVE_ASIDE:
            result.kept += [v for v in [repo_volume(g)] if any(e.volume_exists(v) for e in docker_hosts.engines(g).all())]
            if g.backup.s3 is not None and g.scope == spec.scope:
                result.kept.append(f"s3://{g.backup.s3.bucket}{g.backup.s3.path}")
            moved = move_state_aside(g.scope)
            if g.scope == spec.scope or moved:
                result.state_moved_to = moved or result.state_moved_to
            result.state_removed = bool(moved) or result.state_removed
        if fate != StateFate.DELETE:  # DELETE removed them all already
            try:
                for gone in prune_removed_state(g):
                    get_run_logger().info("deleted %s: the backup repository it belonged to is gone", gone)
            except Exception as exc:  # noqa: BLE001 - best effort: the teardown itself is done; the next one prunes
                get_run_logger().warning("moved-aside state directories not pruned: %s", exc)
    if result.state_removed and spec.standby_of is not None and spec.multi_host:
        readmit_primary(spec.standby_of.scope)
    get_run_logger().info("removed %d containers, %d networks, %d volumes of %s", len(result.containers),
                          len(result.networks), len(result.volumes), spec.scope)
    return result


def readmit_primary(scope: str) -> None:
    """A standby site over hosts is gone with its state: the primary site's running nodes re-read a
    pg_hba without its hosts. Best effort: the teardown is done either way, and the primary's next
    `pgha up` pushes the same file."""
    log = get_run_logger()
    try:
        nodes = admit_on_primary(stored_spec(scope))
        log.info("the primary site %s's nodes (%s) no longer admit this site's hosts", scope, ", ".join(nodes))
    except Exception as exc:  # noqa: BLE001 - best effort, said
        log.warning("the primary site %s's nodes still admit this site's hosts until its next `pgha up` "
                    "(their configuration could not be reloaded: %s)", scope, exc)
