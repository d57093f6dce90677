"""Shared sequences every flow uses through public names: checks, waits, rolling steps.

Flows sequence these and decide; none of them touches an external system itself (that is
`tasks/`). This module is the only one in `flows/` that other flow modules import from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# ---- preflight once ----
# The CLI runs a flow's preflight before the flow starts (a refusal then costs no Prefect
# start-up and prints no flow-run traceback); the flow runs the same preflight as its first
# step, because a deployment run has no CLI in front of it. Within one process the second
# call returns the first one's result instead of checking everything again.
_checked: dict[str, Any] = {}


def _key(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    def plain(a: Any) -> Any:
        return a.model_dump(mode="json") if hasattr(a, "model_dump") else a

    return f"{fn.__module__}.{fn.__qualname__}:" + json.dumps([plain(a) for a in args], sort_keys=True, default=str)


def preflight_once(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` unless this process just ran it with the same arguments; then reuse its result.

    A result is reused once (the flow's own call consumes it), so a later operation in the
    same process checks again.
    """
    key = _key(fn, args)
    if key in _checked:
        return _checked.pop(key)  # type: ignore[no-any-return]
    result = fn(*args)
    _checked[key] = result
    return result


def forget_preflight(fn: Callable[..., Any], *args: Any) -> None:
    """Drop a remembered result (the CLI refused after the preflight, no flow will consume it)."""
    _checked.pop(_key(fn, args), None)


# ---- backups (owned by the backup flows) ----
# Used by bootstrap (so `pgha up` converges a cluster made before backups existed) and by
# the backup flow. The section's imports stay in it: the rest of the file has another owner.

from prefect import get_run_logger, task  # noqa: E402

from stack import backup as bk  # noqa: E402
from stack.errors import StateError  # noqa: E402
from stack.render import dcs_config  # noqa: E402
from stack.spec import ClusterSpec  # noqa: E402
from stack.wait import wait_for  # noqa: E402
from tasks import patroni  # noqa: E402
from tasks import pgbackrest as pbr  # noqa: E402
from tasks._prefect import ONCE  # noqa: E402


def _archive_state(spec: ClusterSpec, leader: str) -> tuple[str, str, bool]:
    """(archive_mode, archive_command) in the leader, and whether any member waits for a restart."""
    pending = any(m.pending_restart for m in patroni.cluster_view(spec).members)
    return (patroni.psql(spec, leader, "show archive_mode", timeout=10),
            patroni.psql(spec, leader, "show archive_command", timeout=10), pending)


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
        patroni.patch_config(spec, {"postgresql": {"parameters": changed}})
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
    restarted = patroni.restart_pending(spec)
    wait_for("archive_mode on in the leader after its restart",
             lambda: patroni.psql(spec, leader, "show archive_mode", timeout=10),
             lambda v: v == "on", timeout=120, interval=0.5)
    return restarted


def ensure_archiving(spec: ClusterSpec) -> bk.Archiving:
    """Converge WAL archiving and the stanza (idempotent), once the cluster is whole.

    Repository files and TLS servers in the nodes, archive settings in Patroni's dynamic
    config (with a restart of the nodes that need one), the stanza. A sequence of tasks, so
    it runs inside whichever flow calls it (bootstrap on every `pgha up`).
    """
    if not spec.backup.enabled:
        return bk.Archiving(note="disabled in the spec")
    nodes = pbr.prepare_nodes(spec)
    leader = patroni.cluster_view(spec).leader()
    if leader is None:
        raise StateError(f"cluster {spec.scope} has no leader; cannot configure WAL archiving")
    changed = set_archive_parameters(spec)
    restarted: list[str] = []
    if changed:
        get_run_logger().info("archive parameters set in Patroni's dynamic config: %s", ", ".join(changed))
        restarted = apply_archive_parameters(spec, leader.name)
        patroni.wait_whole(spec)
    pbr.create_stanza(spec)
    get_run_logger().info("WAL archiving and stanza %s ready (%s)", spec.scope,
                          ", ".join(f"{k}: {v}" for k, v in nodes.items()))
    return bk.Archiving(nodes=nodes, changed=changed, restarted=restarted)
