"""`pgha lab`: several simulated hosts on one machine (pure planning: names, ports, the spec).

A lab host is a container on the local engine running its own `dockerd` (Docker in Docker),
on a lab network pgha makes; the cluster's members run inside those engines with host
networking, so each lab host's address on the lab network is that "machine's" address. Each
lab host publishes its HAProxy R/W and R/O ports on 127.0.0.1 of the real machine (distinct
ports per host), so host-side code and tests use loopback only.

How pgha reaches a lab host's engine (`--engine`): `unix` (the default) through a socket the
lab host's dockerd makes in a directory of the real machine; `tcp` as it would a remote machine,
over `tcp://` with mutual TLS: the lab host's dockerd also listens on 2376 with `--tlsverify`
(a lab CA, one server certificate per lab host, one client certificate for pgha), published
on 127.0.0.1 only at a port of its own after the R/W and R/O ports; `ssh` as it would a remote
machine over ssh://: the lab host also runs sshd (key-only, root), published on 127.0.0.1 at that
same port, and pgha logs in with a key pair made for the lab, checking a host key it made and
pinned in the lab's known_hosts (`docker system dial-stdio` on the lab host reaches its engine).
The lab itself keeps the socket (image loads, waits); the cluster's spec names the tcp:// or
ssh:// engines and the TLS or ssh files.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from stack import tls
from stack.hosts import EngineSSH, EngineTLS

LAB_RE = re.compile(r"^[a-z][a-z0-9-]{0,20}$")
MAX_HOSTS = 7
# Inside every lab host (host networking): HAProxy's R/W, R/O and stats ports. 5432 is
# PostgreSQL's own on each host, so HAProxy takes Patroni's classic 5000/5001/7000.
INNER_RW, INNER_RO, INNER_STATS = 5000, 5001, 7000
INNER_POOL = 6432  # the pooler's port inside every lab host (ports.pool), published like R/W and R/O
FIRST_HOST_OCTET = 11  # lab host i gets <subnet>.(10+i)
ENGINES = ("unix", "tcp", "ssh")
INNER_ENGINE = 2376  # dockerd's TLS port inside a lab host (--engine tcp)
INNER_SSH = 22  # sshd's port inside a lab host (--engine ssh)
# root: the engine's socket is root's, and a user in the docker group is root-equivalent anyway
# (it can start a container mounting /); a second account would add a name, not a boundary.
SSH_USER = "root"
# In a lab host (--engine ssh): its host key and the lab's authorized_keys, bind-mounted read-only
# from the lab's state dir; the entry script installs them for sshd (root-owned, 0600).
ENGINE_SSH_IN_HOST = "/etc/pgha-lab/ssh"
SSH_HOST_KEY = "ssh_host_ed25519_key"
# In a lab host (--engine tcp): the server's TLS files, bind-mounted read-only from the lab's state dir.
ENGINE_TLS_IN_HOST = "/etc/pgha-lab/tls"
# In a lab host: its dockerd's socket (lab-entry.sh), the engine_socket a fencing watcher mounts.
ENGINE_SOCKET_IN_HOST = "/run/lab/docker.sock"
ENGINE_CA_DAYS = 3650
ENGINE_LEAF_DAYS = 825


class LabHost(BaseModel):
    name: str
    container: str
    docker: str
    address: str
    rw_port: int
    ro_port: int
    state: str = ""
    # The lab's own way in (image loads, waits): the engine's unix socket. Empty in records
    # written before --engine existed, where `docker` is that socket.
    socket: str = ""
    engine_port: int | None = None  # --engine tcp: the engine's TLS port on 127.0.0.1
    pool_port: int | None = None  # the pooler's port on 127.0.0.1 (None: a lab made before it was published)
    tls: EngineTLS | None = None  # --engine tcp: pgha's client certificate for it
    ssh: EngineSSH | None = None  # --engine ssh: pgha's key and the lab's known_hosts

    @property
    def socket_url(self) -> str:
        return self.socket or self.docker


class LabStatus(BaseModel):
    name: str
    network: str
    subnet: str
    spec: str
    hosts: list[LabHost]
    engine: str = "unix"
    images: str = ""  # how each host got the node image at the last `lab up` (from the seed, loaded)

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


def check_engine(engine: str) -> str | None:
    if engine not in ENGINES:
        return f"--engine must be one of {', '.join(ENGINES)}, not '{engine}'"
    return None


def client_ports(port_base: int, n: int) -> list[tuple[int, int]]:
    """(rw, ro) on 127.0.0.1 of the real machine for each lab host: base, base+1, base+2, ..."""
    return [(port_base + 2 * i, port_base + 2 * i + 1) for i in range(n)]


def engine_ports(port_base: int, n: int) -> list[int]:
    """Each lab host's engine port on 127.0.0.1 (--engine tcp: TLS, --engine ssh: sshd): after
    every R/W and R/O port."""
    return [port_base + 2 * n + i for i in range(n)]


def pool_ports(port_base: int, n: int) -> list[int]:
    """Each lab host's pooler port on 127.0.0.1: after the R/W and R/O ports and the engine ports'
    places (kept whatever the engine, so one lab's ports do not move with --engine)."""
    return [port_base + 3 * n + i for i in range(n)]


def lab_ports(port_base: int, n: int, engine: str) -> list[int]:
    """Every 127.0.0.1 port a lab publishes (checked free before anything is made)."""
    ports = [p for pair in client_ports(port_base, n) for p in pair]
    return ports + (engine_ports(port_base, n) if engine in ("tcp", "ssh") else []) + pool_ports(port_base, n)


def engine_url(engine: str, socket: str, engine_port: int | None) -> str:
    """The engine URL the cluster's spec names: the socket, tcp:// or ssh:// on 127.0.0.1."""
    if engine == "tcp":
        return f"tcp://127.0.0.1:{engine_port}"
    if engine == "ssh":
        return f"ssh://{SSH_USER}@127.0.0.1:{engine_port}"
    return socket


def ssh_keypair(comment: str) -> tuple[str, str]:
    """A new ed25519 key pair: (private key in OpenSSH format, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode()} {comment}\n"


def known_hosts_line(port: int, host_public: str) -> str:
    """The pinned host key of a lab host's sshd as pgha reaches it: `[127.0.0.1]:port <type> <key>`."""
    kind, blob = host_public.split()[:2]
    return f"[127.0.0.1]:{port} {kind} {blob}\n"


def dockerd_args(engine: str) -> list[str]:
    """Extra dockerd flags for a lab host (after its unix socket, which the lab always keeps).

    File paths only: the key stays in a mounted 0600 file, never in argv or the environment.
    """
    if engine != "tcp":
        return []
    d = ENGINE_TLS_IN_HOST
    return ["-H", f"tcp://0.0.0.0:{INNER_ENGINE}", "--tlsverify", f"--tlscacert={d}/ca.crt",
            f"--tlscert={d}/server.crt", f"--tlskey={d}/server.key"]


def engine_server_names(address: str) -> tuple[list[str], list[str]]:
    """(DNS, IP) names a lab host's engine certificate covers: loopback (pgha, through the
    published port) and the host's lab address (the other lab hosts)."""
    dns, ips = tls.split_names([address])
    return ["localhost", *dns], ["127.0.0.1", *ips]


def engine_ca(lab: str) -> dict[str, str]:
    return tls.new_ca(f"pgha lab {lab} engine CA", ENGINE_CA_DAYS)


def engine_client(lab: str, ca: dict[str, str]) -> dict[str, str]:
    """pgha's one client certificate for every engine of the lab."""
    crt, key = tls.issue(ca, f"pgha lab {lab} client", [], [], ENGINE_LEAF_DAYS)
    return {"client.crt": crt, "client.key": key}


def engine_server(lab: str, host: str, address: str, ca: dict[str, str]) -> dict[str, str]:
    """A lab host's engine files (mounted in it): the CA that signs clients, its certificate and key."""
    dns, ips = engine_server_names(address)
    crt, key = tls.issue(ca, f"pgha lab {lab} {host} engine", dns, ips, ENGINE_LEAF_DAYS)
    return {"ca.crt": ca["ca.crt"], "server.crt": crt, "server.key": key}


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
    the spec then says it accepts. Backups need S3 or a repository host across hosts: off here.
    Fencing (one watcher per node's host) and the pooler (one per host) are off here too, so the
    lab's cluster holds only the
    members the lab tests count; a spec that turns it on finds each host's `engine_socket` (the
    lab host's dockerd socket) already set.
    """
    n = len(hosts)
    data: dict[str, Any] = {
        "scope": scope,
        "nodes": min(n, 9),
        "etcd_members": n if n % 2 else max(n - 1, 1),
        "profile": "fast",
        "ports": {"rw": INNER_RW, "ro": INNER_RO, "stats": INNER_STATS, "pool": INNER_POOL},
        "pooler": {"enabled": False},
        "backup": {"enabled": False},
        "fencing": False,
        "hosts": [_host_entry(h) for h in hosts],
    }
    if n < 3:
        data["allow_unsafe_placement"] = True
    return data


def _host_entry(h: LabHost) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": h.name, "docker": h.docker, "address": h.address, "client_address": "127.0.0.1",
                             "rw_port": h.rw_port, "ro_port": h.ro_port, "engine_socket": ENGINE_SOCKET_IN_HOST}
    if h.pool_port is not None:
        entry["pool_port"] = h.pool_port
    if h.tls is not None:
        entry["tls"] = h.tls.model_dump()
    if h.ssh is not None:
        entry["ssh"] = h.ssh.model_dump()
    return entry
