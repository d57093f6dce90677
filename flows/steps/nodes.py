"""Rolling steps of the flows on many nodes: nodes left out of service by an interrupted run put back.

The steps on one node (take out, recreate or restart, wait caught up, put back) are `tasks.rolling`'s."""

from __future__ import annotations

from flows.steps.ops import note
from stack.errors import PghaError
from tasks import patroni
from tasks.rolling import NodeCtx, put_back


def finish_leftovers(ctx: NodeCtx) -> None:
    """Nodes left with out-of-service tags by an interrupted run are put back."""
    for m in ctx.spec.node_names():
        try:
            tags = patroni.member_tags(ctx.spec, m)
        except PghaError:
            continue
        if any(tags.get(k) for k in patroni.OUT_TAGS):
            note(f"resuming: {m} still had its out-of-service tags; putting it back")
            put_back(ctx, m)
