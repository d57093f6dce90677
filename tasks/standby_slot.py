"""A standby site's permanent replication slot on its primary site (Patroni's `slots` in the
primary's dynamic configuration): kept while the standby streams, removed after a promotion."""

from __future__ import annotations

from prefect import get_run_logger, task

from stack import site
from stack.spec import ClusterSpec
from tasks import patroni
from tasks._prefect import SIDE_EFFECT


@task(name="ensure-primary-slot", **SIDE_EFFECT)
def ensure_primary_slot(spec: ClusterSpec, primary: ClusterSpec) -> str:
    """A permanent physical slot for this standby on the primary site (Patroni's `slots`), so the
    primary keeps the WAL it has not received; "unchanged" when it is there."""
    if spec.standby_of is None or not spec.standby_of.slot:
        return "none"
    name = site.slot_name(spec)
    slots = patroni.dynamic_config(primary).get("slots") or {}
    if name in slots:
        return "unchanged"
    patroni.patch_config(primary, {"slots": {name: {"type": "physical"}}})
    get_run_logger().info("replication slot %s kept on the primary site %s", name, primary.scope)
    return "created"


def drop_primary_slot(spec: ClusterSpec, primary: ClusterSpec) -> str:
    """Remove the standby's permanent slot from the primary site's configuration (after a promotion:
    nothing streams through it any more, and it would keep WAL for ever)."""
    name = site.slot_name(spec)
    slots = patroni.dynamic_config(primary).get("slots") or {}
    if name not in slots:
        return "absent"
    patroni.patch_config(primary, {"slots": {name: None}})
    return "removed"
