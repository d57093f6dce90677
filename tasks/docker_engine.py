"""Docker engines: one `Engine` handle per host, and the containers, networks and volumes it runs.

An `Engine` wraps one prefect-docker `DockerHost` (today: the local engine, from
`DOCKER_HOST` or the default socket, a socket URL for a lab host, ssh or TLS for `hosts:`).
The Docker adapter is split by job, composed here: reaching the engine is
`tasks.engine_client`, files in and out of containers `tasks.engine_files`, config pushes
`tasks.engine_config`, read-only queries (logs, ports, the audit's container states)
`tasks.engine_inspect`; this module makes and removes the resources. Every resource carries
`pgha.cluster`, `pgha.role` and `pgha.member`; nothing is found by name pattern. `ensure_*`
methods look first and act only when needed, so a retried task or a re-run flow converges.
Running a command inside a container is `tasks.node_exec`; which engine runs which member is
`tasks.docker_hosts`; images are `tasks.docker_images`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypedDict

import docker.errors
from docker.models.containers import Container
from docker.types import DriverConfig, Healthcheck, Mount

from stack.errors import DockerError, StateError
from stack.layout import CONFIG_MOUNT, HAPROXY_FENCE_TMPFS, HEALTH_INTERVAL_S
from stack.topology import ContainerDef
from tasks import config_volume
from tasks.engine_client import (
    LABEL_CLUSTER,
    LABEL_CONFIG,
    LABEL_EPHEMERAL,
    LABEL_ROLE,
    engine_call,
    labels,
    log_config,
)
from tasks.engine_config import ConfigPush, mounts_config_volume
from tasks.engine_inspect import EngineInspect


@dataclass(frozen=True)
class MountSpec:
    """One mount of a container pgha makes: a named volume (`kind="volume"`) or a host path (`"bind"`)."""

    target: str
    source: str
    kind: str = "volume"
    read_only: bool = False

    def docker(self) -> Mount:
        return Mount(target=self.target, source=self.source, type=self.kind, read_only=self.read_only)


class Outcome(StrEnum):
    CREATED = "created"
    RECREATED = "recreated"
    STARTED = "started"
    UNCHANGED = "unchanged"


class Engine(ConfigPush, EngineInspect):
    """One Docker engine (one host): its containers, networks and volumes (and, through its bases,
    its client, files, config pushes and read-only queries)."""

    # ---- networks and volumes ----

    def ensure_network(self, scope: str, name: str, internal: bool = False,
                       role: str = "network") -> tuple[str, Outcome]:
        """Create the bridge network if missing (labelled scope and role); return its subnet."""
        c = self.client
        with engine_call(f"network {name}"):
            nets = [n for n in c.networks.list(names=[name]) if n.name == name]
            if nets:
                net = c.networks.get(nets[0].id)
                if (net.attrs.get("Labels") or {}).get(LABEL_CLUSTER) != scope:
                    raise StateError(f"network {name} exists but does not belong to pgha cluster {scope}; "
                                     "remove or rename it")
                outcome = Outcome.UNCHANGED
            else:
                net = c.networks.create(name, driver="bridge", internal=internal,
                                        labels=labels(scope, role, name), check_duplicate=True)
                net.reload()
                outcome = Outcome.CREATED
        configs = net.attrs.get("IPAM", {}).get("Config") or []
        if not configs or "Subnet" not in configs[0]:
            raise DockerError(f"network {name} has no IPv4 subnet")
        return str(configs[0]["Subnet"]), outcome

    def remove_network(self, name: str) -> bool:
        with engine_call(f"remove network {name}"):
            for n in self.client.networks.list(names=[name]):
                if n.name == name:
                    n.remove()
                    return True
        return False

    def ensure_volume(self, scope: str, role: str, member: str, name: str,
                      extra_labels: dict[str, str] | None = None) -> Outcome:
        c = self.client
        try:
            vol = c.volumes.get(name)
        except docker.errors.NotFound:
            with engine_call(f"create volume {name}"):
                c.volumes.create(name, labels={**labels(scope, role, member), **(extra_labels or {})})
            return Outcome.CREATED
        if (vol.attrs.get("Labels") or {}).get(LABEL_CLUSTER) != scope:
            raise StateError(f"volume {name} exists but does not belong to pgha cluster {scope}")
        return Outcome.UNCHANGED

    def volume_exists(self, name: str) -> bool:
        try:
            self.client.volumes.get(name)
            return True
        except docker.errors.NotFound:
            return False

    def volume_created(self, name: str) -> dt.datetime | None:
        """When the volume was created (None: no such volume, or the engine does not say)."""
        try:
            raw = str(self.client.volumes.get(name).attrs.get("CreatedAt") or "")
        except docker.errors.NotFound:
            return None
        try:
            return dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return None

    def remove_volume(self, name: str) -> bool:
        """Delete a volume and its data; False when there was none."""
        try:
            vol = self.client.volumes.get(name)
        except docker.errors.NotFound:
            return False
        with engine_call(f"remove volume {name}"):
            vol.remove(force=True)
        return True

    def scope_has_resources(self, scope: str) -> bool:
        """Any container or volume labelled with this scope."""
        flt = {"label": f"{LABEL_CLUSTER}={scope}"}
        return bool(self.client.containers.list(all=True, filters=flt) or self.client.volumes.list(filters=flt))

    # ---- containers ----

    def _create(self, d: ContainerDef) -> Container:
        mounts = [Mount(target=path, source=vol, type="volume") for vol, path in d.volumes.items()]
        # Created by the first container that mounts it, as a tmpfs both containers share.
        mounts += [Mount(target=path, source=vol, type="volume", labels={**labels(d.scope, d.role, d.member),
                                                                       LABEL_EPHEMERAL: "true"},
                         driver_config=DriverConfig("local", {"type": "tmpfs", "device": "tmpfs",
                                                              "o": HAPROXY_FENCE_TMPFS}))
                   for vol, path in d.tmpfs_volumes.items()]
        if d.config_dir and self.config_volumes:
            mounts.append(Mount(target=CONFIG_MOUNT, source=config_volume.volume_name(d.name), type="volume",
                                read_only=True))
        elif d.config_dir:
            mounts.append(Mount(target="/etc/pgha", source=d.config_dir, type="bind", read_only=True))
        mounts += [Mount(target=path, source=src, type="bind", read_only=True) for src, path in d.binds.items()]
        hc = None
        if d.healthcheck:
            sec = 1_000_000_000
            hc = Healthcheck(test=["CMD", *d.healthcheck], interval=HEALTH_INTERVAL_S * sec, timeout=3 * sec,
                             retries=3, start_period=30 * sec)
        all_labels = {**labels(d.scope, d.role, d.member), LABEL_CONFIG: d.config_hash}
        if d.host_network:  # many hosts: the host's network namespace (no hostname, nothing to publish)
            return self.client.containers.create(
                d.image, command=[d.role, *d.command] if d.entrypoint is None else d.command,
                entrypoint=d.entrypoint, name=d.name, labels=all_labels, mounts=mounts, network_mode="host",
                healthcheck=hc, restart_policy={"Name": "unless-stopped"}, stop_signal="SIGTERM", detach=True,
                log_config=log_config(d.log_options), **_hardening_kwargs(d))
        return self.client.containers.create(
            d.image,
            command=[d.role, *d.command] if d.entrypoint is None else d.command,
            entrypoint=d.entrypoint,
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
            log_config=log_config(d.log_options),
            **_hardening_kwargs(d),  # limits, capabilities, read-only root, tmpfs
        )

    def ensure_container(self, d: ContainerDef) -> Outcome:
        """Make the container exist, match its definition and run; act only when needed."""
        with engine_call(f"container {d.name}"):
            current = self.find_container(d.name)
            if current is not None:
                lab = current.labels
                if lab.get(LABEL_CLUSTER) != d.scope:
                    raise StateError(f"container {d.name} exists but does not belong to pgha cluster {d.scope}")
            pushed = self.config_volumes and d.config_dir
            if pushed:  # the files first: a new container starts with them, a running one sees them
                self.push_config(d.scope, d.role, d.member, d.name, d.image, str(d.config_dir), current)
            if current is not None:
                if (current.labels.get(LABEL_CONFIG) == d.config_hash and current.image.tags
                        and d.image in current.image.tags and (not pushed or mounts_config_volume(current))):
                    # Heal what an interrupted drill may have left: a detached network, a stopped container.
                    reattached = False if d.host_network else self.connect(d.name, d.network)
                    reattached = any([self.connect(d.name, n) for n in d.extra_networks]) or reattached
                    if current.status == "running" and not reattached:
                        return Outcome.UNCHANGED
                    if current.status != "running":
                        current.start()
                    return Outcome.STARTED
                # Definition changed: replace the container, keep its volumes.
                current.remove(force=True)
                self._start_new(d)
                return Outcome.RECREATED
            self._start_new(d)
            return Outcome.CREATED

    def _start_new(self, d: ContainerDef) -> None:
        """Create the container, join its extra networks, then start it (it starts reaching them)."""
        ct = self._create(d)
        for net in d.extra_networks:
            self.client.networks.get(net).connect(ct)
        ct.start()

    def run_scratch(self, name: str, image: str, scope: str, role: str, network: str,
                    mounts: list[MountSpec], log_options: dict[str, str] | None = None) -> None:
        """Start a sleeping helper container (replacing a leftover of the same name); its log capped
        by `log_options` (the spec's `logs:`; None: pgha's default cap)."""
        with engine_call(f"scratch container {name}"):
            old = self.find_container(name)
            if old is not None:
                old.remove(force=True)
            # network "host": the engine host's namespace (no hostname of its own there).
            net: dict[str, Any] = {"network_mode": "host"} if network == "host" else {"hostname": name,
                                                                                     "network": network}
            ct = self.client.containers.create(image, entrypoint=["sleep", "infinity"], name=name,
                                               labels=labels(scope, role, name), mounts=[m.docker() for m in mounts],
                                               detach=True, log_config=log_config(log_options), **net)
            ct.start()

    def config_label(self, name: str) -> str | None:
        """The definition hash a container was created with (None when it does not exist)."""
        ct = self.find_container(name)
        return None if ct is None else ct.labels.get(LABEL_CONFIG, "")

    def remove_container(self, name: str) -> bool:
        """Remove the container (running or not); False when there was none."""
        ct = self.find_container(name)
        if ct is None:
            return False
        with engine_call(f"remove {name}"):
            ct.remove(force=True)
        return True

    def remove_labelled(self, scope: str, role: str | None = None, volumes: bool = False,
                        keep_volumes: set[str] | None = None) -> dict[str, list[str]]:
        """Remove every container and network (and volumes if asked) with these labels."""
        c = self.client
        flt = {"label": [f"{LABEL_CLUSTER}={scope}"] + ([f"{LABEL_ROLE}={role}"] if role else [])}
        removed: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
        with engine_call(f"remove the resources of {scope}"):
            for ct in c.containers.list(all=True, filters=flt):
                ct.remove(force=True)
                removed["containers"].append(str(ct.name))
            for net in c.networks.list(filters=flt):
                # A standby cluster's nodes (another scope, stack/site.py) may still sit on this
                # network: they lose their link to this site, and the network goes.
                net.reload()
                for cid in net.attrs.get("Containers") or {}:
                    net.disconnect(cid, force=True)
                net.remove()
                removed["networks"].append(str(net.name))
            # Config volumes (an engine of `hosts:`) hold no data, only copies of the state
            # directory's files: they always go with their containers; so do tmpfs volumes.
            etc = {"label": [*flt["label"], config_volume.LABEL_ETC]}
            ephemeral = {"label": [*flt["label"], LABEL_EPHEMERAL]}
            found = c.volumes.list(filters=flt if volumes else etc) if volumes or self.config_volumes else []
            if not volumes and role is None:
                found += c.volumes.list(filters=ephemeral)
            for vol in found:
                if vol.name in (keep_volumes or set()):
                    continue  # the backup repository `down --volumes` keeps
                if (vol.attrs.get("Labels") or {}).get(LABEL_EPHEMERAL):
                    if role is not None:
                        continue  # shared by several roles: it goes when the last of them does
                    try:
                        vol.remove(force=True)
                    except docker.errors.APIError:
                        continue  # still mounted by a container of another engine's run: harmless
                else:
                    vol.remove(force=True)
                removed["volumes"].append(str(vol.name))
        return removed

    def running(self, name: str) -> bool:
        try:
            ct = self.find_container(name)
        except DockerError:
            return False  # its host's engine is gone: nothing of it runs
        return ct is not None and ct.status == "running"

    def image_of(self, name: str) -> str:
        """The image tag a container was created from ('' when it does not exist)."""
        ct = self.find_container(name)
        return str(ct.attrs.get("Config", {}).get("Image", "")) if ct is not None else ""

    # ---- lifecycle and faults (drills) ----

    def stop(self, name: str, timeout: int = 30) -> None:
        """Graceful stop: SIGTERM, then SIGKILL after `timeout` seconds."""
        with engine_call(f"stop {name}"):
            self._get(name).stop(timeout=timeout)

    def kill(self, name: str) -> None:
        """SIGKILL: the process dies without any chance to clean up."""
        with engine_call(f"kill {name}"):
            self._get(name).kill()

    def start(self, name: str) -> bool:
        """Start the container if it is not running; True when it had to be started."""
        ct = self._get(name)
        if ct.status == "running":
            return False
        with engine_call(f"start {name}"):
            ct.start()
        return True

    def pause(self, name: str) -> None:
        """Freeze every process of the container (cgroup freezer): alive, but silent."""
        with engine_call(f"pause {name}"):
            self._get(name).pause()

    def unpause(self, name: str) -> bool:
        """Thaw a paused container; True when it was paused."""
        ct = self._get(name)
        if ct.status != "paused":
            return False
        with engine_call(f"unpause {name}"):
            ct.unpause()
        return True

    def restart(self, name: str, timeout: int = 10) -> None:
        with engine_call(f"restart {name}"):
            self._get(name).restart(timeout=timeout)

    def attached(self, name: str, network: str) -> bool:
        ct = self._get(name)
        return network in (ct.attrs.get("NetworkSettings", {}).get("Networks") or {})

    def disconnect(self, name: str, network: str) -> None:
        with engine_call(f"disconnect {name} from {network}"):
            self.client.networks.get(network).disconnect(name, force=True)

    def network_exists(self, network: str) -> bool:
        with engine_call(f"look up network {network}"):
            return any(n.name == network for n in self.client.networks.list(names=[network]))

    def connect(self, name: str, network: str, address: str | None = None) -> bool:
        """Attach the container to the network if it is not (at IPv4 `address` if given); True when
        it had to be attached."""
        if self.attached(name, network):
            return False
        with engine_call(f"connect {name} to {network}"):
            self.client.networks.get(network).connect(name, **({"ipv4_address": address} if address else {}))
        return True


class HardeningKwargs(TypedDict, total=False):
    """docker-py's create()/run() arguments that carry a definition's hardening."""

    nano_cpus: int
    mem_limit: int
    memswap_limit: int
    cap_drop: list[str]
    cap_add: list[str]
    security_opt: list[str]
    read_only: bool
    tmpfs: dict[str, str]
    shm_size: int


def _hardening_kwargs(d: ContainerDef) -> HardeningKwargs:
    """docker-py's create() arguments for the definition's hardening (none: the engine's defaults)."""
    h = d.hardening
    if h is None:
        return {}
    kw: HardeningKwargs = {
        "nano_cpus": h.nano_cpus, "mem_limit": h.memory_bytes, "memswap_limit": h.memory_bytes,
        "cap_drop": list(h.cap_drop), "cap_add": list(h.cap_add), "security_opt": list(h.security_opt),
        "read_only": h.read_only, "tmpfs": dict(h.tmpfs),
    }
    if h.shm_bytes:
        kw["shm_size"] = h.shm_bytes
    return kw

