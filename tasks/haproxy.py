"""HAProxy: backend states from its stats CSV, read through the stats port on 127.0.0.1."""

from __future__ import annotations

import csv
import io
import urllib.error
import urllib.request

from stack.audit import Backend
from stack.errors import HaproxyError
from stack.layout import CONFIG_MOUNT
from stack.spec import ClusterSpec
from tasks.node_exec import node


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
