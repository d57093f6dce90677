"""Integration files run side by side (pytest-xdist, --dist loadfile): no two may use the same port.

Two files that publish the same 127.0.0.1 port fail each other at random, depending on which
worker gets there first (a CI run lost test_repo_host.py to test_backup_hardening.py this way).
Every port number an integration file writes down (20000-29999), and every lab's port range
(`PORT_BASE` and two client ports per host, three with `--engine tcp`: its engines' TLS ports
follow), must belong to that file alone.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

IT = Path(__file__).resolve().parents[1] / "integration"
LOW, HIGH = 20000, 30000


def _ports_of(path: Path) -> set[int]:
    text = path.read_text()
    found = {node.value for node in ast.walk(ast.parse(text))
             if isinstance(node, ast.Constant) and type(node.value) is int and LOW <= node.value < HIGH}
    base = re.search(r"^[A-Z_, ]*PORT_BASE = .*?(\d+)$", text, re.M)  # LAB, SCOPE, PORT_BASE = "x", "y", 26900
    if base is not None:
        hosts = max((int(n) for n in re.findall(r'"--hosts", "(\d+)"', text)), default=3)
        per_host = 3 if '"--engine", "tcp"' in text else 2
        found |= set(range(int(base.group(1)), int(base.group(1)) + per_host * hosts))
    return found


def test_no_port_is_used_by_two_integration_files() -> None:
    users: dict[int, set[str]] = defaultdict(set)
    for path in sorted(IT.glob("*.py")):
        for port in _ports_of(path):
            users[port].add(path.name)
    shared = {port: sorted(files) for port, files in sorted(users.items()) if len(files) > 1}
    assert not shared, f"ports used by more than one integration file: {shared}"


def test_the_scan_sees_lab_ranges() -> None:
    lab = _ports_of(IT / "test_lab.py")
    assert {26900, 26901, 26904, 26905} <= lab


def test_the_scan_sees_a_tcp_lab_engine_ports() -> None:
    tcp = _ports_of(IT / "test_lab_tcp.py")
    assert {27200, 27203, 27204, 27205} <= tcp


def _unpooled_specs(path: Path) -> list[int]:
    """Lines of spec literals (a dict with "scope" and "nodes" or "ports") that would run the default
    pooler on 127.0.0.1:6432: neither `pooler` nor a `ports.pool` of their own, and no `hosts`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Dict):
            continue
        keys = {k.value: v for k, v in zip(node.keys, node.values, strict=True) if isinstance(k, ast.Constant)}
        if "scope" not in keys or not ({"nodes", "ports"} & keys.keys()) or {"pooler", "hosts"} & keys.keys():
            continue
        ports = keys.get("ports")
        if isinstance(ports, ast.Dict) and "pool" in {k.value for k in ports.keys if isinstance(k, ast.Constant)}:
            continue
        out.append(node.lineno)
    return out


def test_no_integration_spec_runs_the_default_pooler_on_6432() -> None:
    """The pooler is on by default on 6432: a spec that leaves it out collides with every other
    such spec. Say `pooler: {enabled: false}` where the pooler is not the point, or give it a
    `ports.pool` of the file's own."""
    found = {p.name: lines for p in sorted(IT.glob("*.py")) if (lines := _unpooled_specs(p))}
    assert not found, f"integration specs that would run the pooler on 6432 (file: lines): {found}"
