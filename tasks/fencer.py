"""The fencing watcher's adapter: the files it ships, its counters, its decisions.

The watcher itself is `tasks/fencer_agent.py` plus the pure `stack/fencing.py`, copied into
the fencer container's config directory; this module reads them for the topology and asks
the running fencer what it did (its stats file and its JSON log lines).
"""

from __future__ import annotations

import json
from pathlib import Path

from stack import fencing, layout
from stack.errors import PghaError
from stack.spec import ClusterSpec
from tasks import fencer_agent
from tasks.node_exec import node


def agent_files() -> dict[str, str]:
    """The agent's sources as the fencer runs them (fencer.py imports fencing.py beside it)."""
    return {"fencer.py": Path(fencer_agent.__file__).read_text(), "fencing.py": Path(fencing.__file__).read_text()}


def parse_counters(text: str) -> fencing.Counters:
    """The watcher's stats file (`Counters.to_json`) read back, once; ValueError when it is not one.

    Here and not in stack/fencing.py: that file is shipped into the fencer container, and a change
    to it recreates every cluster's fencer at its next `pgha up`."""
    d = json.loads(text)
    if not isinstance(d, dict):
        raise ValueError("the counters are not a JSON object")
    try:
        return fencing.Counters(
            started_at=float(d.get("started_at") or 0), heartbeat_at=float(d.get("heartbeat_at") or 0),
            events=int(d.get("events") or 0),
            by_outcome={str(k): int(v) for k, v in dict(d.get("by_outcome") or {}).items()},
            last=dict(d.get("last") or {}))
    except (TypeError, AttributeError) as exc:
        raise ValueError(f"the counters have a field of the wrong type: {exc}") from None


def stats(spec: ClusterSpec, member: str | None = None) -> fencing.Counters:
    """A running fencer's counters (heartbeat, events, decisions by outcome); raises when it has none.

    `member`: one of `spec.fencer_members()` (with `hosts`, one watcher per node's host); default
    the local engine's `fencer`.
    """
    n = node(spec, member or spec.fencer_member)
    if not n.running():
        raise PghaError(f"the fencer {n.container} is not running")
    r = n.run(["cat", layout.FENCER_STATS], timeout=5, retries_if_lost=2)  # a read: asked again if cut short
    if not r.ok:
        raise PghaError(f"the fencer has written no counters yet ({r.tail(1)})")
    try:
        return parse_counters(r.out)
    except ValueError:
        raise PghaError("the fencer's counters are not JSON") from None


def all_stats(spec: ClusterSpec) -> dict[str, tuple[fencing.Counters | None, str]]:
    """Every watcher's counters, or why there are none: {member: (stats, error)} (the audit's rows)."""
    out: dict[str, tuple[fencing.Counters | None, str]] = {}
    for m in spec.fencer_members():
        try:
            out[m] = (stats(spec, m), "")
        except PghaError as exc:
            out[m] = (None, str(exc).splitlines()[0])
    return out
