"""`pgha lab`: several simulated hosts on one machine (pure planning: names, ports, the spec).

A lab host is a container on the local engine running its own `dockerd` (Docker in Docker),
on a lab network pgha makes; the cluster's members run inside those engines with host
networking, so each lab host's address on the lab network is that "machine's" address. Each
lab host publishes its HAProxy R/W and R/O ports on 127.0.0.1 of the real machine (distinct
ports per host), so host-side code and tests use loopback only.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

LAB_RE = re.compile(r"^[a-z][a-z0-9-]{0,20}$")
MAX_HOSTS = 7
# Inside every lab host (host networking): HAProxy's R/W, R/O and stats ports. 5432 is
# PostgreSQL's own on each host, so HAProxy takes Patroni's classic 5000/5001/7000.
INNER_RW, INNER_RO, INNER_STATS = 5000, 5001, 7000
FIRST_HOST_OCTET = 11  # lab host i gets <subnet>.(10+i)


class LabHost(BaseModel):
    name: str
    container: str
    docker: str
    address: str
    rw_port: int
    ro_port: int
    state: str = ""


class LabStatus(BaseModel):
    name: str
    network: str
    subnet: str
    spec: str
    hosts: list[LabHost]

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)


def check_name(name: str) -> str | None:
    if not LAB_RE.match(name):
        return f"lab name '{name}' must be 1-21 lowercase letters, digits and dashes, starting with a letter"
    return None


def check_hosts(n: int) -> str | None:
    if not 1 <= n <= MAX_HOSTS:
        return f"--hosts must be between 1 and {MAX_HOSTS}, not {n}"
    return None


def host_names(n: int) -> list[str]:
    return [f"h{i}" for i in range(1, n + 1)]


def container_name(lab: str, host: str) -> str:
    return f"pgha-lab-{lab}-{host}"


def volume_name(lab: str, host: str) -> str:
    return f"pgha-lab-{lab}-{host}-docker"


def network_name(lab: str) -> str:
    return f"pgha-lab-{lab}"


def client_ports(port_base: int, n: int) -> list[tuple[int, int]]:
    """(rw, ro) on 127.0.0.1 of the real machine for each lab host: base, base+1, base+2, ..."""
    return [(port_base + 2 * i, port_base + 2 * i + 1) for i in range(n)]


def host_address(subnet: str, index: int) -> str:
    """Address of lab host `index` (0-based) on a /24 lab subnet such as 10.213.7.0/24."""
    prefix = subnet.split("/")[0].rsplit(".", 1)[0]
    return f"{prefix}.{FIRST_HOST_OCTET + index}"


def subnet_candidates(name: str, count: int = 40) -> list[str]:
    """/24 subnets to try for the lab network (a stable start per name, then the next ones)."""
    start = sum(name.encode()) % 200
    return [f"10.213.{(start + i) % 250}.0/24" for i in range(count)]


def spec_data(scope: str, hosts: list[LabHost]) -> dict[str, Any]:
    """A ready ClusterSpec (as YAML data) for a cluster over the lab's hosts.

    One Patroni node and one etcd member per host (an even host count leaves one host without
    etcd: etcd wants an odd membership); fewer than 3 hosts cannot survive losing one, which
    the spec then says it accepts. Backups need S3 across hosts, and fencing watches one
    engine: both off here.
    """
    n = len(hosts)
    data: dict[str, Any] = {
        "scope": scope,
        "nodes": min(n, 9),
        "etcd_members": n if n % 2 else max(n - 1, 1),
        "profile": "fast",
        "ports": {"rw": INNER_RW, "ro": INNER_RO, "stats": INNER_STATS},
        "backup": {"enabled": False},
        "fencing": False,
        "hosts": [{"name": h.name, "docker": h.docker, "address": h.address, "client_address": "127.0.0.1",
                   "rw_port": h.rw_port, "ro_port": h.ro_port} for h in hosts],
    }
    if n < 3:
        data["allow_unsafe_placement"] = True
    return data
