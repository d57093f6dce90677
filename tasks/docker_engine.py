"""Docker engine: networks, volumes, containers and exec, found and removed by label.

Every resource carries `pgha.cluster`, `pgha.role` and `pgha.member`; nothing is ever found
by name pattern. `ensure_*` functions look first and act only when needed, so a retried task
or a re-run flow converges.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from functools import lru_cache
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import Healthcheck, Mount

from stack.errors import DockerError, StateError
from stack.topology import ContainerDef

LABEL_CLUSTER = "pgha.cluster"
LABEL_ROLE = "pgha.role"
LABEL_MEMBER = "pgha.member"
LABEL_CONFIG = "pgha.config"  # hash of the container's definition, passwords redacted

DOCKER_TIMEOUT = 60  # seconds for one engine API call


class Outcome(StrEnum):
    CREATED = "created"
    RECREATED = "recreated"
    STARTED = "started"
    UNCHANGED = "unchanged"


@lru_cache(maxsize=1)
def client() -> docker.DockerClient:
    """The engine client; one readable error when no engine answers."""
    try:
        c = docker.from_env(timeout=DOCKER_TIMEOUT)
        c.ping()
        return c
    except (docker.errors.DockerException, OSError) as exc:
        raise DockerError(
            "no Docker engine answers (" + str(exc).splitlines()[0][:120] + "); "
            "run `make engine` (Debian, as root) or start dockerd"
        ) from None


def labels(scope: str, role: str, member: str) -> dict[str, str]:
    return {LABEL_CLUSTER: scope, LABEL_ROLE: role, LABEL_MEMBER: member}


def _cluster_filter(scope: str) -> dict[str, Any]:
    return {"label": f"{LABEL_CLUSTER}={scope}"}


def ensure_network(scope: str, name: str) -> tuple[str, Outcome]:
    """Create the cluster's bridge network if missing; return its subnet."""
    c = client()
    nets = [n for n in c.networks.list(names=[name]) if n.name == name]
    if nets:
        net = c.networks.get(nets[0].id)
        if (net.attrs.get("Labels") or {}).get(LABEL_CLUSTER) != scope:
            raise StateError(f"network {name} exists but does not belong to pgha cluster {scope}; remove or rename it")
        outcome = Outcome.UNCHANGED
    else:
        net = c.networks.create(name, driver="bridge", labels=labels(scope, "network", name), check_duplicate=True)
        net.reload()
        outcome = Outcome.CREATED
    configs = net.attrs.get("IPAM", {}).get("Config") or []
    if not configs or "Subnet" not in configs[0]:
        raise DockerError(f"network {name} has no IPv4 subnet")
    return str(configs[0]["Subnet"]), outcome


def ensure_volume(scope: str, role: str, member: str, name: str) -> Outcome:
    c = client()
    try:
        vol = c.volumes.get(name)
    except docker.errors.NotFound:
        c.volumes.create(name, labels=labels(scope, role, member))
        return Outcome.CREATED
    if (vol.attrs.get("Labels") or {}).get(LABEL_CLUSTER) != scope:
        raise StateError(f"volume {name} exists but does not belong to pgha cluster {scope}")
    return Outcome.UNCHANGED


def find_container(name: str) -> Container | None:
    try:
        return client().containers.get(name)
    except docker.errors.NotFound:
        return None


def _create(d: ContainerDef) -> Container:
    mounts = [Mount(target=path, source=vol, type="volume") for vol, path in d.volumes.items()]
    if d.config_dir:
        mounts.append(Mount(target="/etc/pgha", source=d.config_dir, type="bind", read_only=True))
    hc = None
    if d.healthcheck:
        sec = 1_000_000_000
        hc = Healthcheck(test=["CMD", *d.healthcheck], interval=5 * sec, timeout=3 * sec, retries=3, start_period=30 * sec)
    all_labels = {**labels(d.scope, d.role, d.member), LABEL_CONFIG: d.config_hash}
    return client().containers.create(
        d.image,
        command=[d.role, *d.command],
        name=d.name,
        hostname=d.name,
        labels=all_labels,
        mounts=mounts,
        network=d.network,
        ports={f"{cp}/tcp": ("127.0.0.1", hp) for cp, hp in d.ports.items()},
        healthcheck=hc,
        restart_policy={"Name": "unless-stopped"},
        dns_opt=d.dns_options,
        stop_signal="SIGTERM",
        detach=True,
    )


def ensure_container(d: ContainerDef) -> Outcome:
    """Make the container exist, match its definition and run; act only when needed."""
    try:
        current = find_container(d.name)
        if current is not None:
            lab = current.labels
            if lab.get(LABEL_CLUSTER) != d.scope:
                raise StateError(f"container {d.name} exists but does not belong to pgha cluster {d.scope}")
            if lab.get(LABEL_CONFIG) == d.config_hash and current.image.tags and d.image in current.image.tags:
                # Heal what an interrupted drill may have left: a detached network, a stopped container.
                reattached = connect(d.name, d.network)
                if current.status == "running" and not reattached:
                    return Outcome.UNCHANGED
                if current.status != "running":
                    current.start()
                return Outcome.STARTED
            # Definition changed: replace the container, keep its volumes.
            current.remove(force=True)
            _create(d).start()
            return Outcome.RECREATED
        _create(d).start()
        return Outcome.CREATED
    except docker.errors.APIError as exc:
        raise DockerError(f"container {d.name}: {exc.explanation or exc}") from None


def cluster_containers(scope: str, role: str | None = None) -> list[Container]:
    f = _cluster_filter(scope)
    if role:
        f = {"label": [f"{LABEL_CLUSTER}={scope}", f"{LABEL_ROLE}={role}"]}
    return list(client().containers.list(all=True, filters=f))


def remove_cluster(scope: str, volumes: bool) -> dict[str, list[str]]:
    """Remove every container and network (and volumes if asked) labelled with this scope."""
    c = client()
    removed: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
    for ct in cluster_containers(scope):
        ct.remove(force=True)
        removed["containers"].append(ct.name)
    for net in c.networks.list(filters=_cluster_filter(scope)):
        net.remove()
        removed["networks"].append(str(net.name))
    if volumes:
        for vol in c.volumes.list(filters=_cluster_filter(scope)):
            vol.remove(force=True)
            removed["volumes"].append(str(vol.name))
    return removed


def exec_in(name: str, cmd: list[str], user: str | None = None, timeout: int = 10) -> tuple[int, str, str]:
    """Run a command in a running container, bounded by `timeout` seconds inside it.

    Returns (exit code, stdout, stderr).
    """
    ct = find_container(name)
    if ct is None:
        raise DockerError(f"container {name} does not exist")
    try:
        res = ct.exec_run(["timeout", str(timeout), *cmd], user=user or "", demux=True)
    except docker.errors.APIError as exc:
        raise DockerError(f"exec in {name}: {exc.explanation or exc}") from None
    out, err = res.output if res.output else (None, None)
    return (
        int(res.exit_code or 0),
        out.decode(errors="replace") if out else "",
        err.decode(errors="replace") if err else "",
    )


def running(name: str) -> bool:
    ct = find_container(name)
    return ct is not None and ct.status == "running"


def logs(name: str, tail: int = 30) -> str:
    ct = find_container(name)
    if ct is None:
        return f"(no container {name})"
    try:
        return str(ct.logs(tail=tail).decode(errors="replace"))
    except docker.errors.APIError:
        return f"(no logs for {name})"


def host_ports_of(scope: str) -> set[int]:
    """Host ports published by this cluster's containers."""
    ports: set[int] = set()
    for ct in cluster_containers(scope):
        for bindings in (ct.attrs.get("HostConfig", {}).get("PortBindings") or {}).values():
            for b in bindings or []:
                if b.get("HostPort"):
                    ports.add(int(b["HostPort"]))
    return ports


def port_owner(port: int) -> str | None:
    """The pgha cluster publishing `port`, if any."""
    for ct in client().containers.list(filters={"label": LABEL_CLUSTER}):
        for bindings in (ct.attrs.get("HostConfig", {}).get("PortBindings") or {}).values():
            for b in bindings or []:
                if b.get("HostPort") == str(port):
                    return str(ct.labels.get(LABEL_CLUSTER))
    return None


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: a closed connection in TIME_WAIT is not "in use"; a listener is.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ---- fault injection and healing (drills) ----


@contextmanager
def _engine_call(what: str) -> Iterator[None]:
    """Turn the engine's refusal of one operation into a one-line DockerError."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise DockerError(f"{what}: {exc.explanation or exc}") from None


def _get(name: str) -> Container:
    ct = find_container(name)
    if ct is None:
        raise DockerError(f"container {name} does not exist")
    return ct


def stop(name: str, timeout: int = 30) -> None:
    """Graceful stop: SIGTERM, then SIGKILL after `timeout` seconds."""
    with _engine_call(f"stop {name}"):
        _get(name).stop(timeout=timeout)


def kill(name: str) -> None:
    """SIGKILL: the process dies without any chance to clean up."""
    with _engine_call(f"kill {name}"):
        _get(name).kill()


def start(name: str) -> bool:
    """Start the container if it is not running; True when it had to be started."""
    ct = _get(name)
    if ct.status == "running":
        return False
    with _engine_call(f"start {name}"):
        ct.start()
    return True


def restart(name: str, timeout: int = 10) -> None:
    with _engine_call(f"restart {name}"):
        _get(name).restart(timeout=timeout)


def attached(name: str, network: str) -> bool:
    ct = _get(name)
    return network in (ct.attrs.get("NetworkSettings", {}).get("Networks") or {})


def disconnect(name: str, network: str) -> None:
    with _engine_call(f"disconnect {name} from {network}"):
        client().networks.get(network).disconnect(name, force=True)


def connect(name: str, network: str) -> bool:
    """Attach the container to the network if it is not; True when it had to be attached."""
    if attached(name, network):
        return False
    with _engine_call(f"connect {name} to {network}"):
        client().networks.get(network).connect(name)
    return True


# ---- health audit ----


def audit_containers(scope: str) -> list[dict[str, Any]]:
    """Each cluster container's member, state, health, id and restart count."""
    rows: list[dict[str, Any]] = []
    for ct in cluster_containers(scope):
        state = ct.attrs.get("State", {}) or {}
        rows.append({
            "name": ct.name, "member": ct.labels.get(LABEL_MEMBER, ""), "status": ct.status,
            "health": (state.get("Health") or {}).get("Status", ""), "container_id": ct.id or "",
            "restart_count": int(ct.attrs.get("RestartCount") or 0),
        })
    return rows


def disk_used_pct(name: str, path: str) -> float | None:
    """Use of the filesystem holding `path` inside a running container, in percent (None: not running)."""
    if not running(name):
        return None
    code, out, _ = exec_in(name, ["df", "-P", path], timeout=5)
    lines = out.strip().splitlines()
    if code != 0 or len(lines) < 2:
        return None
    fields = lines[-1].split()
    try:
        used, avail = int(fields[2]), int(fields[3])
    except (IndexError, ValueError):
        return None
    # df's own percentage rounds up and counts reserved blocks; used/(used+avail) is what fills up.
    return 100.0 * used / max(used + avail, 1)


def container_ips(network: str) -> dict[str, str]:
    """IPv4 address -> container name on a network (to tell which node a connection reached)."""
    try:
        net = client().networks.get(network)
    except docker.errors.NotFound:
        return {}
    out: dict[str, str] = {}
    for info in (net.attrs.get("Containers") or {}).values():
        ip = str(info.get("IPv4Address", "")).split("/")[0]
        if ip:
            out[ip] = str(info.get("Name", ""))
    return out
