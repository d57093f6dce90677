"""The fencing watcher's adapter: the files it ships, its counters, its decisions.

The watcher itself is `tasks/fencer_agent.py` plus the pure `stack/fencing.py`, copied into
the fencer container's config directory; this module reads them for the topology and asks
the running fencer what it did (its stats file and its JSON log lines).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stack import fencing, layout
from stack.errors import PghaError
from stack.spec import ClusterSpec
from tasks import fencer_agent
from tasks.node_exec import node


def agent_files() -> dict[str, str]:
    """The agent's sources as the fencer runs them (fencer.py imports fencing.py beside it)."""
    return {"fencer.py": Path(fencer_agent.__file__).read_text(), "fencing.py": Path(fencing.__file__).read_text()}


def stats(spec: ClusterSpec) -> dict[str, Any]:
    """The running fencer's counters (heartbeat, events, decisions by outcome); raises when it has none."""
    n = node(spec, spec.fencer_member)
    if not n.running():
        raise PghaError(f"the fencer {n.container} is not running")
    r = n.run(["cat", layout.FENCER_STATS], timeout=5)
    if not r.ok:
        raise PghaError(f"the fencer has written no counters yet ({r.tail(1)})")
    try:
        return dict(json.loads(r.out))
    except ValueError:
        raise PghaError("the fencer's counters are not JSON") from None


def decisions(spec: ClusterSpec, since: float | None = None) -> list[dict[str, Any]]:
    """The decisions the fencer logged (one JSON object per event), oldest first."""
    text = node(spec, spec.fencer_member).logs(tail=500, since=since)
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "outcome" in row:
            out.append(row)
    return out
