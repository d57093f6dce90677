"""HAProxy: backend states from its stats CSV, read through the stats port on 127.0.0.1."""

from __future__ import annotations

import csv
import io
import urllib.error
import urllib.request

from stack.audit import Backend
from stack.errors import HaproxyError
from stack.spec import ClusterSpec


def stats_rows(spec: ClusterSpec) -> list[dict[str, str]]:
    """HAProxy's stats CSV (127.0.0.1:<stats>), one dict per proxy/server row."""
    url = f"http://127.0.0.1:{spec.ports.stats}/;csv"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - fixed loopback URL
            text = resp.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise HaproxyError(f"HAProxy stats on 127.0.0.1:{spec.ports.stats} unreachable: {exc}") from None
    return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


def backend_states(spec: ClusterSpec) -> dict[str, dict[str, str]]:
    """{'primary': {'pg-1': 'UP', ...}, 'replicas': {...}} as HAProxy sees them."""
    states: dict[str, dict[str, str]] = {"primary": {}, "replicas": {}}
    for row in stats_rows(spec):
        px, sv = row.get("pxname", ""), row.get("svname", "")
        if px in states and sv not in ("FRONTEND", "BACKEND"):
            states[px][sv] = row.get("status", "")
    return states


def audit_backends(spec: ClusterSpec) -> tuple[dict[str, Backend], dict[str, Backend]]:
    """(primary, replicas) servers with their status and UP->DOWN transition counts."""
    found: dict[str, dict[str, Backend]] = {"primary": {}, "replicas": {}}
    for row in stats_rows(spec):
        px, sv = row.get("pxname", ""), row.get("svname", "")
        if px in found and sv not in ("FRONTEND", "BACKEND"):
            chk = row.get("chkdown") or "0"
            found[px][sv] = Backend(status=row.get("status", ""), chkdown=int(chk) if chk.isdigit() else 0)
    return found["primary"], found["replicas"]
