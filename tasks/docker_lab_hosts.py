"""The lab's resources on the local engine: its network, its hosts' containers and volumes.

The Docker adapter's lab job (`tasks.docker_lab` decides what a lab is made of; this module
asks the engine). Everything carries `pgha.lab=<name>` and is found and removed by that label.
A lab host is a Docker-in-Docker container run with the flags measured to work on machines
whose capability bounding set lacks CAP_SYS_RESOURCE (`--privileged` fails there).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import docker.errors
from docker.types import HostConfig, IPAMConfig, IPAMPool, Mount

from stack import lab_seed
from stack.errors import DockerError, StateError
from stack.wait import wait_for
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


def _host_config(engine: Engine, mounts: list[Mount], ports: dict[int, tuple[str, int]] | None = None,
                 network_mode: str | None = None) -> HostConfig:
    """A Docker-in-Docker container's host config: the flags measured to work without --privileged."""
    hc: HostConfig = engine.client.api.create_host_config(
        cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        tmpfs={"/run": "", "/tmp": ""},  # noqa: S108 - tmpfs mounts inside the lab host
        mounts=mounts, port_bindings=ports or {}, network_mode=network_mode,
        log_config=log_config(None),  # dockerd's own log; the cluster's containers inside are capped by the spec
    )
    # `--security-opt systempaths=unconfined` is the CLI's name for "no masked or read-only /proc paths".
    hc["MaskedPaths"], hc["ReadonlyPaths"] = [], []
    return hc


def ensure_host(engine: Engine, lab: str, run: LabHostRun, volume: str,
                fill: Callable[[str], None] | None = None) -> None:
    """The lab host's container running (started if stopped, made with its volume if absent).

    `fill(volume)` runs once the volume is made anew, before the container exists (the seed's copy)."""
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
            if fill is not None:
                fill(volume)
        hc = _host_config(engine, [m.docker() for m in run.mounts], run.ports)
        created = c.api.create_container(
            run.image, name=run.container, hostname=run.hostname, labels=run.labels,
            ports=list(run.ports), host_config=hc, command=run.command or None,
            networking_config=c.api.create_networking_config(
                {run.network: c.api.create_endpoint_config(ipv4_address=run.address)}),
        )
        c.api.start(created["Id"])


# ---- the seed: one inner engine's /var/lib/docker holding the node image (stack/lab_seed.py) ----


def _age(created: str) -> float:
    """Seconds since an engine timestamp (RFC 3339, nanoseconds allowed)."""
    when = dt.datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00" if "." in created[:26]
                                     else created.replace("Z", "+00:00"))
    return (dt.datetime.now(dt.UTC) - when).total_seconds()


def seed_state(engine: Engine, key: str) -> tuple[bool, float | None]:
    """(the seed volume exists, its maker's age in seconds or None), the volume looked at first."""
    c = engine.client
    with engine_call(f"lab seed {key}"):
        exists = bool(c.volumes.list(filters={"name": lab_seed.seed_volume(key), "label": f"{lab_seed.LABEL_SEED}={key}"}))
        makers = c.containers.list(all=True, filters={"name": f"^{lab_seed.seed_maker(key)}$"})
        if not makers:
            return exists, None
        return exists, _age(str(makers[0].attrs["Created"]))


def seed_volumes(engine: Engine) -> dict[str, str]:
    """Every seed volume on the engine: name -> its key."""
    with engine_call("lab seeds"):
        vols = engine.client.volumes.list(filters={"label": lab_seed.LABEL_SEED})
        return {str(v.name): str((v.attrs.get("Labels") or {}).get(lab_seed.LABEL_SEED, "")) for v in vols}


def remove_seed(engine: Engine, key: str) -> None:
    """The seed's maker and volume gone (a crash's leftovers, a failed make); whatever is in use stays."""
    c = engine.client
    for ct in c.containers.list(all=True, filters={"name": f"^{lab_seed.seed_maker(key)}$"}):
        try:
            ct.remove(force=True, v=False)
        except docker.errors.APIError:
            pass
    remove_volumes(engine, [lab_seed.seed_volume(key)])


def remove_volumes(engine: Engine, names: list[str]) -> list[str]:
    """Remove these volumes; the ones gone (a volume a copy still reads stays)."""
    gone = []
    for name in names:
        try:
            engine.client.volumes.get(name).remove(force=True)
            gone.append(name)
        except docker.errors.NotFound:
            gone.append(name)
        except docker.errors.APIError:
            pass
    return gone


def start_seed_maker(engine: Engine, key: str, image: str, node_tag: str, socket_dir: str) -> bool:
    """Create and start the seed's maker: a lab host (no network) whose /var/lib/docker is the seed
    volume, created with it and its labels. False when another run's maker holds the name (the lock)."""
    c = engine.client
    labels = {lab_seed.LABEL_SEED: key, lab_seed.LABEL_SEED_NODE: node_tag}
    mounts = [Mount(target="/var/lib/docker", source=lab_seed.seed_volume(key), type="volume", labels=labels),
              Mount(target="/sys/fs/cgroup", source="/sys/fs/cgroup", type="bind"),
              Mount(target="/run/lab", source=socket_dir, type="bind")]
    with engine_call(f"lab seed {key}"):
        try:
            created = c.api.create_container(image, name=lab_seed.seed_maker(key), labels=labels,
                                             host_config=_host_config(engine, mounts, network_mode="none"))
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # noqa: PLR2004 - Conflict: the name is taken
                return False
            raise
        c.api.start(created["Id"])
    return True


def stop_seed_maker(engine: Engine, key: str, timeout: int = 60) -> int:
    """Stop the maker (dockerd shuts down on SIGTERM); its exit code (0: a clean shutdown)."""
    with engine_call(f"lab seed {key}"):
        ct = engine.client.containers.get(lab_seed.seed_maker(key))
        ct.stop(timeout=timeout)
        return int(ct.wait(timeout=timeout + 30)["StatusCode"])


def mark_seed_complete(engine: Engine, key: str, image: str) -> None:
    """After the maker's engine stopped cleanly: its engine-id dropped, the marker written last."""
    mount = Mount(target="/seed", source=lab_seed.seed_volume(key), type="volume")
    code, out = run_helper(engine, image, lab_seed.finish_script(), [mount], labels={lab_seed.LABEL_SEED: key})
    if code:
        raise DockerError(f"the lab seed {key}'s marker: exit {code}: {out.strip()[-200:]}")


def remove_seed_maker(engine: Engine, key: str) -> None:
    with engine_call(f"lab seed {key}"):
        engine.client.containers.get(lab_seed.seed_maker(key)).remove(force=True, v=False)


def run_helper(engine: Engine, image: str, script: str, mounts: list[Mount], labels: dict[str, str],
               timeout: int = 600) -> tuple[int, str]:
    """A short-lived container of `image` running `sh -c script` with `mounts` (no network, CAP_SYS_ADMIN
    for overlay2's trusted.* xattrs); (its exit code, its output's tail). Removed afterwards."""
    c = engine.client
    with engine_call("lab seed helper"):
        hc = c.api.create_host_config(mounts=mounts, network_mode="none", cap_add=["SYS_ADMIN"],
                                      security_opt=["apparmor=unconfined"], log_config=log_config(None))
        created = c.api.create_container(image, entrypoint=["/bin/sh", "-c"], command=[script], labels=labels,
                                         host_config=hc)
        try:
            c.api.start(created["Id"])
            code = int(c.api.wait(created["Id"], timeout=timeout)["StatusCode"])
            out = c.api.logs(created["Id"], tail=5).decode(errors="replace")
        finally:
            try:
                c.api.remove_container(created["Id"], force=True)
            except docker.errors.APIError:
                pass
    return code, out


def fill_from_seed(engine: Engine, lab: str, key: str, image: str, volume: str) -> str:
    """Copy the seed into a new lab host's empty volume (a helper container, before its dockerd starts);
    "" when copied, else why not. A copy that failed half-way leaves the volume empty again."""
    mounts = [Mount(target="/seed", source=lab_seed.seed_volume(key), type="volume", read_only=True),
              Mount(target="/host", source=volume, type="volume")]
    try:
        code, out = run_helper(engine, image, lab_seed.copy_script(), mounts, labels={LABEL_LAB: lab})
    except DockerError as exc:
        code, out = -1, str(exc)
    if code == 0:
        return ""
    if code not in (lab_seed.COPY_NO_SEED, lab_seed.COPY_NOT_EMPTY):  # a partial copy: start empty
        with engine_call(f"lab {lab}"):
            engine.client.volumes.get(volume).remove(force=True)
            engine.client.volumes.create(volume, labels={LABEL_LAB: lab})
    return lab_seed.copy_failure(code, out)


def wait_maker_gone(engine: Engine, key: str, timeout: float) -> None:
    """Wait for another run's maker to finish (it is removed once the seed is complete or failed);
    WaitTimeout when it is still there after `timeout` seconds."""
    wait_for(f"the lab seed {key}'s maker (another `pgha lab up`)", lambda: seed_state(engine, key)[1],
             lambda age: age is None, timeout=timeout, interval=1.0,
             describe=lambda age: f"maker running for {age:.0f} s")


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
