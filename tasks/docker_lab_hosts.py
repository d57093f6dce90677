"""The lab's resources on the local engine: its network, its hosts' containers and volumes.

The Docker adapter's lab job (`tasks.docker_lab` decides what a lab is made of; this module
asks the engine). Everything carries `pgha.lab=<name>` and is found and removed by that label.
A lab host is a Docker-in-Docker container run with the flags measured to work on machines
whose capability bounding set lacks CAP_SYS_RESOURCE (`--privileged` fails there).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import docker.errors
from docker.types import IPAMConfig, IPAMPool

from stack.errors import DockerError, StateError
from tasks.docker_engine import Engine, MountSpec
from tasks.engine_client import engine_call, log_config

LABEL_LAB = "pgha.lab"


@dataclass(frozen=True)
class LabHostRun:
    """One lab host's container as the engine is asked to run it."""

    container: str
    hostname: str
    image: str
    network: str
    address: str
    labels: dict[str, str]
    mounts: list[MountSpec]
    ports: dict[int, tuple[str, int]]  # container port -> (host address, host port)
    command: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LabContainer:
    name: str
    status: str


@dataclass
class LabRemoved:
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)


def _flt(lab: str) -> dict[str, str]:
    return {"label": f"{LABEL_LAB}={lab}"}


def has_resources(engine: Engine, lab: str) -> bool:
    """Any container or network labelled with this lab."""
    c = engine.client
    with engine_call(f"lab {lab}"):
        return bool(c.containers.list(all=True, filters=_flt(lab)) or c.networks.list(filters=_flt(lab)))


def ensure_network(engine: Engine, lab: str, net_name: str, subnets: Iterable[str]) -> str:
    """The lab's bridge network (made on the first free subnet of `subnets`); its subnet."""
    c = engine.client
    with engine_call(f"lab {lab}"):
        for n in c.networks.list(names=[net_name]):
            if n.name == net_name:
                if (n.attrs.get("Labels") or {}).get(LABEL_LAB) != lab:
                    raise StateError(f"network {net_name} exists but is not lab {lab}'s")
                return str(c.networks.get(n.id).attrs["IPAM"]["Config"][0]["Subnet"])
    last = ""
    for subnet in subnets:
        try:
            c.networks.create(net_name, driver="bridge", labels={LABEL_LAB: lab},
                              ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)]), check_duplicate=True)
            return subnet
        except docker.errors.APIError as exc:
            last = str(exc.explanation or exc)  # overlapping pool: try the next /24
    raise DockerError(f"no free /24 for the lab network under 10.213.0.0/16 ({last[:200]})")


def ensure_host(engine: Engine, lab: str, run: LabHostRun, volume: str) -> None:
    """The lab host's container running (started if stopped, made with its volume if absent)."""
    c = engine.client
    with engine_call(f"lab {lab}"):
        if c.containers.list(all=True, filters={"name": f"^{run.container}$"}):
            ct = c.containers.get(run.container)
            if ct.labels.get(LABEL_LAB) != lab:
                raise StateError(f"container {run.container} exists but is not lab {lab}'s")
            if ct.status != "running":
                ct.start()
            return
        try:
            c.volumes.get(volume)
        except docker.errors.NotFound:
            c.volumes.create(volume, labels={LABEL_LAB: lab})
        hc = c.api.create_host_config(
            cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            tmpfs={"/run": "", "/tmp": ""},  # noqa: S108 - tmpfs mounts inside the lab host
            mounts=[m.docker() for m in run.mounts], port_bindings=run.ports,
            log_config=log_config(None),  # dockerd's own log; the cluster's containers inside are capped by the spec
        )
        # `--security-opt systempaths=unconfined` is the CLI's name for "no masked or read-only /proc paths".
        hc["MaskedPaths"], hc["ReadonlyPaths"] = [], []
        created = c.api.create_container(
            run.image, name=run.container, hostname=run.hostname, labels=run.labels,
            ports=list(run.ports), host_config=hc, command=run.command or None,
            networking_config=c.api.create_networking_config(
                {run.network: c.api.create_endpoint_config(ipv4_address=run.address)}),
        )
        c.api.start(created["Id"])


def containers(engine: Engine, lab: str) -> list[LabContainer]:
    """The lab's containers (its hosts), running or not."""
    with engine_call(f"lab {lab}"):
        return [LabContainer(str(ct.name), str(ct.status))
                for ct in engine.client.containers.list(all=True, filters=_flt(lab))]


def remove_all(engine: Engine, lab: str) -> LabRemoved:
    """Remove every container, network and volume labelled with this lab."""
    c = engine.client
    removed = LabRemoved()
    # The lab hosts and then their /var/lib/docker volumes (an image and a cluster each) go at once.
    with engine_call(f"lab {lab}"), ThreadPoolExecutor(max_workers=8) as pool:
        cts = c.containers.list(all=True, filters=_flt(lab))
        list(pool.map(lambda ct: ct.remove(force=True, v=True), cts))
        removed.containers = [str(ct.name) for ct in cts]
        for net in c.networks.list(filters=_flt(lab)):
            net.remove()
            removed.networks.append(str(net.name))
        vols = c.volumes.list(filters=_flt(lab))
        list(pool.map(lambda v: v.remove(force=True), vols))
        removed.volumes = [str(v.name) for v in vols]
    return removed
