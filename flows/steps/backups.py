"""WAL archiving and the pgBackRest stanza, converged (used by bootstrap and the backup flows)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from stack import backup as bk
from stack.errors import StateError
from stack.render import dcs_config
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import patroni, postgres
from tasks import pgbackrest as pbr
from tasks._prefect import ONCE, SIDE_EFFECT
from tasks.node_exec import node


def running_nodes(spec: ClusterSpec) -> list[str]:
    return [m for m in spec.node_names() if node(spec, m).running()]


@task(name="pgbackrest-nodes", **SIDE_EFFECT)
def prepare_nodes(spec: ClusterSpec, from_standby: bool = True) -> dict[str, str]:
    """pgBackRest files and a running TLS server in every running node."""
    out: dict[str, str] = {}
    for member in running_nodes(spec):
        pbr.install_files(spec, member, from_standby)
        out[member] = "server started" if pbr.ensure_server(spec, member) else "server running"
    return out


@task(name="ensure-archiving", **ONCE)
def ensure_archiving(spec: ClusterSpec) -> dict[str, Any]:
    """Converge WAL archiving and the stanza (idempotent); called by bootstrap after the cluster is whole."""
    log = get_run_logger()
    if not spec.backup.enabled:
        return {"archiving": "disabled in the spec"}
    nodes = prepare_nodes(spec)
    lead = patroni.cluster_view(spec).leader()
    if lead is None:
        raise StateError(f"cluster {spec.scope} has no leader; cannot configure WAL archiving")
    leader = lead.name
    cfg = patroni.dynamic_config(spec)
    changed = bk.archive_config_differs(cfg, spec)
    restarted = False
    if changed:
        # A cluster bootstrapped before backups existed: set the parameters in the DCS, then
        # restart the nodes that need it (archive_mode needs a restart). A cluster whose
        # data directory Patroni adopted (restore --into) has no dynamic config at all: it
        # gets the spec's whole one.
        if cfg:
            patroni.edit_parameters(spec, changed)
        else:
            patroni.replace_config(spec, dcs_config(spec))
        log.info("archive parameters set in Patroni's dynamic config: %s", ", ".join(changed))
        want = bk.archive_command(spec)

        def applied() -> tuple[str, str, bool]:
            pending = any(m.pending_restart for m in patroni.cluster_view(spec).members)
            return postgres.show(spec, leader, "archive_mode"), postgres.show(spec, leader, "archive_command"), pending

        # Applied means: already archiving with the new command, or (archive_mode needs a
        # restart; the command shows "(disabled)" until then) Patroni flags pending_restart.
        state = wait_for("Patroni to apply the archive settings", applied,
                         lambda v: v[2] or (v[0] == "on" and v[1] == want),
                         timeout=spec.timing.loop_wait * 3 + 30, interval=0.5)
        if state[2]:
            patroni.restart_pending(spec)
            wait_for("archive_mode on in the leader after its restart",
                     lambda: postgres.show(spec, leader, "archive_mode"),
                     lambda v: v == "on", timeout=120, interval=0.5)
            restarted = True
        patroni.wait_whole(spec)
    pbr.stanza_create(spec, running_nodes(spec)[0])
    log.info("WAL archiving and stanza %s ready (%s)", spec.scope, ", ".join(f"{k}: {v}" for k, v in nodes.items()))
    return {"nodes": nodes, "changed": sorted(changed), "restarted": restarted}
