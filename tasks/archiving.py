"""WAL archiving's settings in Patroni's dynamic configuration, set and applied (members that need a
restart for `archive_mode` restarted); steps of `flows.steps.backups.ensure_archiving`."""

from __future__ import annotations

from prefect import task

from stack import backup as bk
from stack import backup_decisions as bkd
from stack.render import dcs_config
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import patroni, postgres
from tasks import pgbackrest as pbr
from tasks._prefect import ONCE


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
    changed = bkd.archive_config_differs(cfg, spec)
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
