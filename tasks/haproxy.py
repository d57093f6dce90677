"""HAProxy: backend states from its stats CSV, read through the stats port on 127.0.0.1."""

from __future__ import annotations

import csv
import io

import httpx

from stack.audit import Backend
from stack.errors import HaproxyError
from stack.layout import CONFIG_MOUNT
from stack.spec import ClusterSpec
from tasks.node_exec import node

BACKENDS = ("primary", "replicas")  # the `listen` sections of haproxy.cfg (stack/render.py)


def parse_stats(text: str) -> list[dict[str, str]]:
    """HAProxy's stats CSV (`/;csv`) as one dict per proxy/server row, keyed by column name.

    The header line starts with `# ` and every line ends with a comma, so each row also
    has an empty-named column; values are kept as the strings HAProxy wrote (`status` may
    read `UP`, `DOWN`, `MAINT (resolution)`, `no check`).
    """
    return list(csv.DictReader(io.StringIO(text.removeprefix("# "))))


def stats_rows(spec: ClusterSpec) -> list[dict[str, str]]:
    """HAProxy's stats CSV (127.0.0.1:<stats>), one dict per proxy/server row."""
    url = f"http://127.0.0.1:{spec.ports.stats}/;csv"
    try:
        # trust_env=False: a proxy set in the environment must never carry a loopback call.
        resp = httpx.get(url, timeout=3.0, trust_env=False)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        raise HaproxyError(f"HAProxy stats on 127.0.0.1:{spec.ports.stats} unreachable: {exc}") from None
    return parse_stats(resp.text)


def _servers(rows: list[dict[str, str]]) -> list[tuple[str, str, dict[str, str]]]:
    """(backend, server, row) for the server rows of pgha's two backends."""
    return [(r.get("pxname", ""), r.get("svname", ""), r) for r in rows
            if r.get("pxname", "") in BACKENDS and r.get("svname", "") not in ("FRONTEND", "BACKEND")]


def backend_states(spec: ClusterSpec) -> dict[str, dict[str, str]]:
    """{'primary': {'pg-1': 'UP', ...}, 'replicas': {...}} as HAProxy sees them."""
    states: dict[str, dict[str, str]] = {px: {} for px in BACKENDS}
    for px, sv, row in _servers(stats_rows(spec)):
        states[px][sv] = row.get("status", "")
    return states


def audit_backends(spec: ClusterSpec) -> tuple[dict[str, Backend], dict[str, Backend]]:
    """(primary, replicas) servers with their status and UP->DOWN transition counts."""
    found: dict[str, dict[str, Backend]] = {px: {} for px in BACKENDS}
    for px, sv, row in _servers(stats_rows(spec)):
        chk = row.get("chkdown") or "0"
        found[px][sv] = Backend(status=row.get("status", ""), chkdown=int(chk) if chk.isdigit() else 0)
    return found["primary"], found["replicas"]


def reload(spec: ClusterSpec) -> None:
    """Check the mounted haproxy.cfg, then reload HAProxy in place (no session dropped).

    HAProxy runs in master-worker mode (`-W`): SIGUSR2 makes the master start new workers on
    the new file while old workers serve their existing connections until they close.
    """
    n = node(spec, spec.haproxy_member)
    r = n.run(["haproxy", "-c", "-q", "-f", f"{CONFIG_MOUNT}/haproxy.cfg"])
    if not r.ok:
        raise HaproxyError(f"the new haproxy.cfg does not validate: {r.tail(2)}")
    r = n.run(["kill", "-USR2", "1"], user="root")
    if not r.ok:
        raise HaproxyError(f"reloading HAProxy failed: {r.tail(1)}")
