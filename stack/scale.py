"""The spec a `pgha scale` leads to (pure): validated like any spec, before anything changes.

A copy with another node count skips pydantic's validators, and over several hosts those are
what says where the new node goes and whether it may: with `placement.patroni: spread` node
*i* lands on host *i* (round robin), and one host runs at most one Patroni node (host
networking: every node wants 5432 and 8008). So a cluster of 3 hosts grows to 3 nodes, not 4,
and an explicit placement map must name the new node first.
"""

from __future__ import annotations

from stack.errors import SpecError, UsageError
from stack.spec import ClusterSpec, parse_spec


def scaled_spec(spec: ClusterSpec, nodes: int) -> ClusterSpec:
    """`spec` with `nodes` Patroni nodes, validated; UsageError (one line) when that spec is refused."""
    if not 1 <= nodes <= 9:
        raise UsageError(f"nodes must be between 1 and 9, not {nodes}")
    data = spec.model_dump(mode="json")
    data["nodes"] = nodes
    try:
        return parse_spec(data, f"(scaled to {nodes} nodes)")
    except SpecError as exc:
        why = str(exc).split(": ", 2)[-1]  # drop "invalid spec (...): <field>:"
        raise UsageError(f"cannot scale {spec.scope} to {nodes} node{'s' if nodes > 1 else ''}: {why}") from None


def new_node_hosts(spec: ClusterSpec, new: ClusterSpec) -> dict[str, str]:
    """The nodes `new` adds to `spec`, each with the host it lands on ('' without hosts)."""
    return {m: new.host_of(m) or "" for m in new.node_names() if m not in spec.node_names()}
