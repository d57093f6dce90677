"""Docker engines: one `Engine` handle per host, and the cluster's map member → engine.

An `Engine` wraps one prefect-docker `DockerHost` (today: the local engine, from
`DOCKER_HOST` or the default socket) and is the only code that calls the engine's API:
networks, volumes, containers, images, logs. Every resource carries `pgha.cluster`,
`pgha.role` and `pgha.member`; nothing is found by name pattern. `ensure_*` methods look
first and act only when needed, so a retried task or a re-run flow converges. Running a
command inside a container is `tasks.node_exec`; which engine runs which member is
`tasks.docker_hosts`.
"""

from __future__ import annotations

import datetime as dt
import io
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests
from docker.constants import MINIMUM_DOCKER_API_VERSION
from docker.models.containers import Container
from docker.tls import TLSConfig
from docker.types import DriverConfig, Healthcheck, LogConfig, Mount

from stack.errors import DockerError, StateError
from stack.hosts import EngineSSH
from stack.layout import CONFIG_MOUNT, HAPROXY_FENCE_TMPFS
from stack.spec import LogsSpec
from stack.topology import ContainerDef
from tasks import config_volume
from tasks.docker_ssh import ssh_client

if TYPE_CHECKING:
    from prefect_docker import DockerHost

LABEL_CLUSTER = "pgha.cluster"
LABEL_ROLE = "pgha.role"
LABEL_MEMBER = "pgha.member"
LABEL_CONFIG = "pgha.config"  # hash of the container's definition, passwords redacted
LABEL_EPHEMERAL = "pgha.ephemeral"  # a tmpfs-backed volume: no data, removed with the containers
LOG_DRIVER = "json-file"  # `docker logs` reads it; rotated and capped by the spec's `logs:` options
# The cap of helpers that belong to no member (scratch boxes, config pushes, lab hosts) and are
# created without a spec's `logs:`: pgha's default.
DEFAULT_LOG_OPTIONS = LogsSpec().driver_options()

DOCKER_TIMEOUT = 60  # seconds for one engine API call


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


def labels(scope: str, role: str, member: str) -> dict[str, str]:
    return {LABEL_CLUSTER: scope, LABEL_ROLE: role, LABEL_MEMBER: member}


def tls_client(base_url: str, tls: TLSConfig, timeout: int = DOCKER_TIMEOUT) -> docker.DockerClient:
    """A docker-py client for an engine over TLS that verifies it with `tls`'s CA, and only that.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a session's own CA file on every
    request (psf/requests#3829; set on many machines, this one included), so docker-py's
    `TLSConfig(ca_cert=...)` would verify a private engine CA against the system bundle and
    fail. The client is made with the environment off (`trust_env`; also no HTTP(S)_PROXY for
    the engine). docker-py asks the engine's API version while the client is built, before that
    can be set: so a first client with a placeholder version asks (`/version` is unversioned),
    then the real one is built with the answer.
    """

    def build(version: str) -> docker.DockerClient:
        c = docker.DockerClient(base_url=base_url, tls=tls, timeout=timeout, version=version)
        c.api.trust_env = False
        return c

    probe = build(MINIMUM_DOCKER_API_VERSION)
    try:
        version = str(probe.api.version(api_version=False)["ApiVersion"])
    except requests.exceptions.RequestException as exc:
        raise docker.errors.DockerException(f"Error while fetching server API version: {exc}") from None
    finally:
        probe.close()
    return build(version)


def engine_answers(url: str, tls: TLSConfig | None = None, timeout: int = 5) -> str:
    """"ok" when the engine at `url` answers a ping (over TLS with `tls`'s files), else why not, in
    one short line (a wait's last state seen)."""
    try:
        client = (tls_client(url.replace("tcp://", "https://"), tls, timeout=timeout) if tls is not None
                  else docker.DockerClient(base_url=url, timeout=timeout))
        try:
            client.ping()
        finally:
            client.close()
        return "ok"
    except (docker.errors.DockerException, OSError) as exc:
        return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _why(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc).splitlines()[0][:300]


@contextmanager
def engine_call(what: str) -> Iterator[None]:
    """Turn the engine's refusal of one operation into a one-line DockerError."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise DockerError(f"{what}: {_why(exc)}") from None


class Engine:
    """One Docker engine (one host), reached through a prefect-docker `DockerHost`."""

    def __init__(self, name: str = "local", host: DockerHost | None = None, config_volumes: bool = False,
                 ssh: EngineSSH | None = None, url: str | None = None, timeout: int = DOCKER_TIMEOUT) -> None:
        self.name = name
        self._host = host
        # Without a DockerHost: `url` (a lab host's socket) with `timeout`, else DOCKER_HOST.
        self._url, self._timeout = url, timeout
        self.ssh = ssh  # an ssh:// engine's key and known_hosts (the spec's `ssh:` block; None: the user's)
        # An engine of `hosts:` (another machine): members mount a config volume filled through
        # the API (`push_config`), not a directory of this machine (tasks/config_volume.py).
        self.config_volumes = config_volumes
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._push_locks: dict[str, threading.Lock] = {}

    def __repr__(self) -> str:
        return f"Engine({self.name}, {self.base_url or 'from DOCKER_HOST'})"

    @property
    def host(self) -> DockerHost:
        """The prefect-docker block (created on first use: importing it loads Prefect)."""
        if self._host is None:
            from prefect_docker import DockerHost

            self._host = DockerHost(timeout=DOCKER_TIMEOUT)
        return self._host

    @property
    def base_url(self) -> str | None:
        return self._host.base_url if self._host is not None else self._url

    def _connect(self) -> docker.DockerClient:
        # The local engine from DOCKER_HOST, exactly what DockerHost(timeout=...).get_client()
        # does, without loading Prefect for read-only verbs.
        if self._host is None:
            if self._url is not None:
                return docker.DockerClient(base_url=self._url, timeout=self._timeout)
            return docker.from_env(timeout=DOCKER_TIMEOUT)
        if self._host.base_url is not None and self._host.base_url.startswith("ssh://"):
            return ssh_client(self._host.base_url, self.ssh, self.name, int(self._host.timeout or DOCKER_TIMEOUT))
        tls = self._host.client_kwargs.get("tls")
        if tls is not None and self._host.base_url is not None:
            return tls_client(self._host.base_url, tls, int(self._host.timeout or DOCKER_TIMEOUT))
        return self._host.get_client()

    @property
    def client(self) -> docker.DockerClient:
        """The engine's client, connected on first use; one readable error when nothing answers."""
        with self._lock:
            if self._client is None:
                try:
                    c = self._connect()
                    c.ping()
                except (docker.errors.DockerException, OSError) as exc:
                    where = self.base_url or "the local engine"
                    hint = ("; run `make engine` (Debian, as root) or start dockerd" if self.base_url is None
                            else "; check the host's engine and how pgha reaches it (hosts[].docker)")
                    raise DockerError(
                        f"no Docker engine answers at {where} (host {self.name}: "
                        + (str(exc).splitlines() or ["no answer"])[0][:120] + ")" + hint
                    ) from None
                self._client = c
            return self._client

    def check(self) -> None:
        """Raise DockerError now when the engine does not answer (a preflight)."""
        _ = self.client

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

    def find_container(self, name: str) -> Container | None:
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        except requests.exceptions.RequestException as exc:
            # Many hosts: a host that died took its engine with it (a drill, or a real loss).
            raise DockerError(f"host {self.name}'s engine does not answer ({type(exc).__name__})") from None

    def _get(self, name: str) -> Container:
        ct = self.find_container(name)
        if ct is None:
            raise DockerError(f"container {name} does not exist")
        return ct

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
            hc = Healthcheck(test=["CMD", *d.healthcheck], interval=5 * sec, timeout=3 * sec, retries=3,
                             start_period=30 * sec)
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
                        and d.image in current.image.tags and (not pushed or _mounts_config_volume(current))):
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

    def push_config(self, scope: str, role: str, member: str, name: str, image: str, local_dir: str,
                    current: Container | None = None) -> bool:
        """Make container `name`'s config volume hold `local_dir`'s files; True when it had to be written.

        THE one function that writes a member's config volume (engines of `hosts:`; callers:
        `ensure_container`, and `tasks.docker_hosts.sync_config` after a write to a running
        member's config dir). Skipped when the manifest the running container sees through its
        mount says the volume already holds these files. Otherwise a helper container (the member's
        image, no network, the volume mounted read-write, never started unless stale files must be
        removed) receives the tar through `put_archive` and is removed: nothing of the files passes
        through an argument, the environment, a label or a log.
        """
        vol = config_volume.volume_name(name)
        with self._lock:
            lock = self._push_locks.setdefault(vol, threading.Lock())
        with lock:
            snap = config_volume.snapshot(Path(local_dir))
            manifest = None
            if current is None:
                current = self.find_container(name)
            if current is not None and _mounts_config_volume(current):
                manifest = self.read_file(current, f"{CONFIG_MOUNT}/{config_volume.MANIFEST}")
            decided = config_volume.plan(snap, manifest)
            if not decided.push:
                return False
            self.ensure_volume(scope, role, member, vol, extra_labels={config_volume.LABEL_ETC: name})
            self._fill_volume(scope, member, name, image, snap.tar, list(decided.remove))
            return True

    def _fill_volume(self, scope: str, member: str, name: str, image: str, tar: bytes, remove: list[str]) -> None:
        vol = config_volume.volume_name(name)
        helper = config_volume.helper_name(name)
        with engine_call(f"fill config volume {vol}"):
            old = self.find_container(helper)
            if old is not None:
                old.remove(force=True, v=True)  # a push killed midway
            ct = self.client.containers.create(
                image, entrypoint=["rm", "-f", "--"], command=[f"{CONFIG_MOUNT}/{r}" for r in remove],
                name=helper, user="0:0", network_mode="none", detach=True, log_config=log_config(None),
                labels={**labels(scope, "config-push", member), config_volume.LABEL_ETC: name},
                mounts=[Mount(target=CONFIG_MOUNT, source=vol, type="volume")])
            try:
                if remove:  # files gone from the state directory go from the volume too
                    ct.start()
                    code = int(ct.wait(timeout=60).get("StatusCode", 1))
                    if code != 0:
                        raise DockerError(f"removing stale files from {vol} failed (exit {code})")
                if not ct.put_archive(CONFIG_MOUNT, tar):
                    raise DockerError(f"cannot copy the config files into {vol}")
            finally:
                ct.remove(force=True, v=True)  # v: an anonymous volume an image might declare; never a named one

    def read_file(self, ct: Container, path: str) -> bytes | None:
        """A small file's bytes from a container (running or not; None when it is absent)."""
        try:
            stream, _ = ct.get_archive(path)
            data = b"".join(stream)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise DockerError(f"read {path} in {ct.name}: {_why(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise DockerError(f"host {self.name}'s engine does not answer ({type(exc).__name__})") from None
        return config_volume.read_member(data, Path(path).name)

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

    def cluster_containers(self, scope: str, role: str | None = None) -> list[Container]:
        flt: list[str] = [f"{LABEL_CLUSTER}={scope}"] + ([f"{LABEL_ROLE}={role}"] if role else [])
        try:
            return list(self.client.containers.list(all=True, filters={"label": flt}, ignore_removed=True))
        except requests.exceptions.RequestException as exc:
            raise DockerError(f"host {self.name}'s engine does not answer ({type(exc).__name__})") from None

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

    def logs(self, name: str, tail: int = 30, since: float | None = None) -> str:
        ct = self.find_container(name)
        if ct is None:
            return f"(no container {name})"
        try:
            kw: dict[str, Any] = {"since": int(since)} if since is not None else {"tail": tail}
            return str(ct.logs(**kw).decode(errors="replace"))
        except docker.errors.APIError:
            return f"(no logs for {name})"

    def stream_logs(self, name: str, follow: bool = False, since: float | None = None,
                    tail: int | None = None) -> Iterator[bytes]:
        """A container's log as it comes (stdout and stderr, with timestamps); `follow` waits for more."""
        ct = self.find_container(name)
        if ct is None:
            raise StateError(f"container {name} does not exist")
        kw: dict[str, Any] = {"stream": True, "follow": follow, "timestamps": True}
        if since is not None:
            kw["since"] = int(since)
        if tail is not None:
            kw["tail"] = tail
        with engine_call(f"logs of {name}"):
            yield from ct.logs(**kw)

    def image_of(self, name: str) -> str:
        """The image tag a container was created from ('' when it does not exist)."""
        ct = self.find_container(name)
        return str(ct.attrs.get("Config", {}).get("Image", "")) if ct is not None else ""

    def copy_path(self, name: str, path: str, other: Engine, other_name: str, into: str) -> None:
        """Copy `path` of container `name` into directory `into` of `other_name` on `other` (owner and
        mode kept), through a host temporary file holding the engines' tar archive (never whole in
        memory; the read ends before the write starts, so a slow engine on one side cannot time
        out the other's connection)."""
        src, dst = self._get(name), other._get(other_name)
        try:
            with engine_call(f"copy {path} from {name} to {other_name}"), tempfile.TemporaryFile() as buf:
                stream, _ = src.get_archive(path)
                for chunk in stream:
                    buf.write(chunk)
                buf.seek(0)
                ok = dst.put_archive(into, buf)
        except requests.exceptions.RequestException as exc:
            raise DockerError(f"copy {path} from {name} to {other_name}: the engine does not answer "
                              f"({type(exc).__name__})") from None
        if not ok:
            raise DockerError(f"cannot copy {path} from {name} to {other_name}")

    def put_file(self, name: str, path: str, text: str, mode: int = 0o600) -> None:
        """Copy `text` into a container as a root-owned file (for files no mount carries)."""
        ct = self._get(name)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = text.encode()
            ti = tarfile.TarInfo(Path(path).name)
            ti.size, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = len(data), mode, 0, 0, "root", "root"
            tar.addfile(ti, io.BytesIO(data))
        with engine_call(f"copy {path} into {name}"):
            ok = ct.put_archive(str(Path(path).parent), buf.getvalue())
        if not ok:
            raise DockerError(f"cannot copy {path} into {name}")

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

    # ---- host ports ----

    def host_ports_of(self, scope: str) -> set[int]:
        """Host ports published by this cluster's containers."""
        ports: set[int] = set()
        for ct in self.cluster_containers(scope):
            ports |= _published(ct)
        return ports

    def port_owner(self, port: int) -> str | None:
        """The pgha cluster publishing `port`, if any.

        One listing call (not a list then one inspect per container): another cluster's
        container removed meanwhile must not fail the check with "No such container".
        """
        with engine_call("listing containers"):
            rows = self.client.api.containers(all=False, filters={"label": LABEL_CLUSTER})
        for row in rows:
            if any(p.get("PublicPort") == port for p in row.get("Ports") or []):
                return str((row.get("Labels") or {}).get(LABEL_CLUSTER))
        return None

    # ---- observations (audit) ----

    def audit_containers(self, scope: str) -> list[dict[str, Any]]:
        """Each cluster container's member, state, health, id, restart count and log options."""
        rows: list[dict[str, Any]] = []
        for ct in self.cluster_containers(scope):
            log = ct.attrs.get("HostConfig", {}).get("LogConfig") or {}
            rows.append({
                "name": ct.name, "member": ct.labels.get(LABEL_MEMBER, ""), "status": ct.status,
                "health": health_of(ct), "container_id": ct.id or "",
                "restart_count": int(ct.attrs.get("RestartCount") or 0),
                "log_driver": str(log.get("Type") or ""), "log_options": dict(log.get("Config") or {}),
            })
        return rows

    def memory_pressure(self, scope: str, since: float) -> list[dict[str, Any]]:
        """Each running cluster container's memory use (inactive page cache excluded), limit,
        last-exit OOM kill, and the engine's `oom` events since `since` (unix time)."""
        ooms: dict[str, int] = {}
        with engine_call(f"events of {scope}"):
            for ev in self.client.events(since=int(since), until=int(time.time()), decode=True,
                                         filters={"label": f"{LABEL_CLUSTER}={scope}", "event": "oom"}):
                member = ((ev.get("Actor") or {}).get("Attributes") or {}).get(LABEL_MEMBER, "")
                ooms[member] = ooms.get(member, 0) + 1
        def row(ct: Any) -> dict[str, Any]:
            member = ct.labels.get(LABEL_MEMBER, "")
            used: int | None = None
            limit: int | None = int(ct.attrs.get("HostConfig", {}).get("Memory") or 0)
            if ct.status == "running":
                try:
                    mem = ct.stats(stream=False, one_shot=True).get("memory_stats") or {}
                except docker.errors.APIError:
                    mem = {}
                if "usage" in mem:
                    st = mem.get("stats") or {}
                    inactive = st.get("inactive_file", st.get("total_inactive_file", 0))
                    used = int(mem["usage"]) - int(inactive or 0)
            return {"member": member, "used_bytes": used, "limit_bytes": limit,
                    "oom_killed": bool((ct.attrs.get("State") or {}).get("OOMKilled")),
                    "oom_events": ooms.get(member, 0)}

        # The engine answers a stats call in about a second per container, even one-shot (its
        # collector's tick): asked side by side, the whole cluster costs that second once.
        cts = self.cluster_containers(scope)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(cts)))) as pool:
            return list(pool.map(row, cts))

    def container_ips(self, network: str) -> dict[str, str]:
        """IPv4 address -> container name on a network (to tell which node a connection reached)."""
        try:
            net = self.client.networks.get(network)
        except docker.errors.NotFound:
            return {}
        out: dict[str, str] = {}
        for info in (net.attrs.get("Containers") or {}).values():
            ip = str(info.get("IPv4Address", "")).split("/")[0]
            if ip:
                out[ip] = str(info.get("Name", ""))
        return out

    def network_subnet(self, network: str) -> str | None:
        """The IPv4 subnet of a network, looked up (never created); None when it is gone or has none."""
        with engine_call(f"inspect network {network}"):
            for net in self.client.networks.list(names=[network]):
                if net.name == network:
                    cfg = (self.client.networks.get(net.id).attrs.get("IPAM") or {}).get("Config") or []
                    return next((str(c["Subnet"]) for c in cfg if ":" not in str(c.get("Subnet", ":"))), None)
        return None


def log_config(options: dict[str, str] | None) -> LogConfig:
    """The json-file driver with `options` (max-size, max-file); pgha's default cap when None."""
    return LogConfig(type=LOG_DRIVER, config=dict(options or DEFAULT_LOG_OPTIONS))


def _hardening_kwargs(d: ContainerDef) -> dict[str, Any]:
    """docker-py's create() arguments for the definition's hardening (none: the engine's defaults)."""
    h = d.hardening
    if h is None:
        return {}
    kw: dict[str, Any] = {
        "nano_cpus": h.nano_cpus, "mem_limit": h.memory_bytes, "memswap_limit": h.memory_bytes,
        "cap_drop": list(h.cap_drop), "cap_add": list(h.cap_add), "security_opt": list(h.security_opt),
        "read_only": h.read_only, "tmpfs": dict(h.tmpfs),
    }
    if h.shm_bytes:
        kw["shm_size"] = h.shm_bytes
    return kw


def _mounts_config_volume(ct: Container) -> bool:
    """The container mounts its config volume at /etc/pgha (not a directory of this machine)."""
    want = config_volume.volume_name(str(ct.name))
    return any(m.get("Destination") == CONFIG_MOUNT and m.get("Type") == "volume" and m.get("Name") == want
               for m in ct.attrs.get("Mounts") or [])


def health_of(ct: Container) -> str:
    """The container's healthcheck status ('' when it has none)."""
    return str(((ct.attrs.get("State") or {}).get("Health") or {}).get("Status", ""))


def _published(ct: Container) -> set[int]:
    out: set[int] = set()
    for bindings in (ct.attrs.get("HostConfig", {}).get("PortBindings") or {}).values():
        for b in bindings or []:
            if b.get("HostPort"):
                out.add(int(b["HostPort"]))
    return out
