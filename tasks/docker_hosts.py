"""Which Docker engine runs which member: the cluster's map member -> `Engine`.

Without `hosts` every member runs on the local engine (DOCKER_HOST or the default socket).
With `hosts` (stack/hosts.py), each host is one `Engine` (one prefect-docker `DockerHost`:
unix://, tcp:// with the spec's TLS files, or ssh:// through the system's ssh client with the
spec's key and known_hosts), and
`placement` says which member runs where; HAProxy runs on every host.

Every engine of `hosts:` gets its members' config files through the engine API (a config
volume per member, tasks/config_volume.py), whatever its URL: an engine named in `hosts:` is a
machine of its own (a unix:// socket may be a forwarded remote socket, or a lab host's daemon)
whose filesystem pgha cannot assume to share. Without `hosts`, members bind-mount the state
directory as before. `sync_config` is what code that changes a running member's files calls.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from stack.errors import SpecError
from stack.hosts import EngineSSH, EngineTLS, HostSpec
from stack.spec import ClusterSpec
from tasks.docker_engine import Engine
from tasks.engine_client import DOCKER_TIMEOUT, LABEL_ROLE
from tasks.host.state import config_dir

if TYPE_CHECKING:
    from docker.tls import TLSConfig


@lru_cache(maxsize=1)
def local_engine() -> Engine:
    """The engine of this machine (DOCKER_HOST or the default socket), one handle per process."""
    return Engine("local")


@lru_cache(maxsize=64)
def _host_engine(name: str, url: str, ca: str | None, cert: str | None, key: str | None,
                 ssh: EngineSSH | None = None) -> Engine:
    """One handle per host and process (an ssh:// client is costly to open)."""
    from prefect_docker import DockerHost

    kwargs: dict[str, object] = {}
    # ssh://: the system's ssh through pgha's own transport (tasks.docker_ssh.ssh_client), with
    # the spec's `ssh:` files, else the user's ssh setup; never docker-py's (it needs paramiko).
    if ca and cert and key:
        kwargs["tls"] = tls_config(EngineTLS(ca=ca, cert=cert, key=key), name)
    return Engine(name, DockerHost(base_url=url.replace("tcp://", "https://") if kwargs.get("tls") else url,
                                   timeout=DOCKER_TIMEOUT, client_kwargs=kwargs), config_volumes=True, ssh=ssh)


def tls_config(t: EngineTLS, host: str) -> TLSConfig:
    """docker-py's mutual TLS for a tcp:// engine: the CA verifies the engine, the client
    certificate identifies pgha. A file that is missing or unreadable is a spec error (one line)."""
    from docker.tls import TLSConfig

    for field in ("ca", "cert", "key"):
        _readable(getattr(t, field), f"host {host}: tls.{field}")
    return TLSConfig(client_cert=(str(Path(t.cert).expanduser()), str(Path(t.key).expanduser())),
                     ca_cert=str(Path(t.ca).expanduser()), verify=True)


def ssh_files(s: EngineSSH, host: str) -> EngineSSH:
    """An ssh:// engine's key and known_hosts as absolute paths; a file that is missing or
    unreadable is a spec error (one line), as ssh's own "no such identity" would be a warning."""
    return s.model_copy(update={field: str(_readable(getattr(s, field), f"host {host}: ssh.{field}").resolve())
                                for field in ("key", "known_hosts")})


def _readable(name: str, what: str) -> Path:
    """The file `name` (~ expanded) when it can be opened; else SpecError, one line naming `what`."""
    path = Path(name).expanduser()
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise SpecError(f"{what} {path}: {exc.strerror or 'cannot be read'}") from None
    return path


def host_engine(host: HostSpec) -> Engine:
    if host.tls is not None:
        tls_config(host.tls, host.name)  # a missing file is refused at every call, not only the first
    ssh = ssh_files(host.ssh, host.name) if host.ssh is not None else None
    t = host.tls
    return _host_engine(host.name, host.docker, t.ca if t else None, t.cert if t else None, t.key if t else None, ssh)


class ClusterEngines:
    """Which engine runs which member of a cluster (members not in the map: the default)."""

    def __init__(self, spec: ClusterSpec, default: Engine) -> None:
        self.spec = spec
        self.default = default
        self._by_member: dict[str, Engine] = {}
        self.by_host: dict[str, Engine] = {}
        if spec.hosts is not None:
            self.by_host = {h.name: host_engine(h) for h in spec.hosts}
            self.default = self.by_host[spec.hosts[0].name]
            for m in [*spec.etcd_names(), *spec.node_names()]:
                self._by_member[m] = self.by_host[str(spec.host_of(m))]
            if spec.backup.repo_host is not None:
                self._by_member[spec.repo_member] = self.by_host[spec.backup.repo_host]
            for m, h in spec.fencer_hosts().items():  # one fencing watcher per node's host
                self._by_member[m] = self.by_host[h]

    def of(self, member: str) -> Engine:
        return self._by_member.get(member, self.default)

    def repository(self) -> Engine:
        """The engine holding the repository volume: the repository host's, else the default's."""
        return self.of(self.spec.repo_member) if self.spec.backup.repo_host is not None else self.default

    def placed(self, member: str) -> list[Engine]:
        """Every engine running `member`: HAProxy and the pooler beside it run on every host, anything else on one."""
        if member in (self.spec.haproxy_member, self.spec.pooler_member) and self.by_host:
            return list(self.by_host.values())
        return [self.of(member)]

    def on_host(self, host: str) -> Engine:
        return self.by_host[host]

    def all(self) -> list[Engine]:
        """Every distinct engine the cluster uses."""
        seen: dict[int, Engine] = {id(self.default): self.default}
        for e in [*self.by_host.values(), *self._by_member.values()]:
            seen.setdefault(id(e), e)
        return list(seen.values())

    def check(self) -> None:
        """Every engine answers (one line naming the host otherwise)."""
        for e in self.all():
            e.check()


def engines(spec: ClusterSpec) -> ClusterEngines:
    return ClusterEngines(spec, local_engine())


def site_peers(spec: ClusterSpec) -> str:
    """Over hosts: the other site's host addresses, comma-separated, that the nodes' pg_hba admits
    besides their own hosts (`stack.site.peer_addresses` over the specs stored on this machine:
    the primary site's, and every standby site's that follows this one)."""
    from stack.site import peer_addresses
    from tasks.host.generations import load_spec
    from tasks.host.state import state_root

    others: list[ClusterSpec] = []
    root = state_root()
    for path in sorted(root.glob("*/spec.yaml")) if root.is_dir() else []:
        if ".removed-" in path.parent.name:
            continue
        try:
            others.append(load_spec(path))
        except Exception:  # noqa: BLE001, S112 - another cluster's damaged state is not this one's concern
            continue
    return ",".join(peer_addresses(spec, others))


def node_subnets(spec: ClusterSpec) -> str:
    """The subnets the nodes' pg_hba admits, comma-separated: the cluster network's (created when
    missing); a standby cluster's nodes also sit on the primary site's network (stack/site.py), and
    reach one another there too, so its subnet is admitted as well. Over hosts: the other site's
    host addresses (`site_peers`; empty for a cluster that is no site of a pair)."""
    if spec.multi_host:
        return site_peers(spec)
    eng = engines(spec).default
    own = eng.ensure_network(spec.scope, spec.network)[0]
    if spec.standby_of is None:
        return own
    from stack.site import primary_network

    other = eng.network_subnet(primary_network(spec))
    return f"{own},{other}" if other else own


def sync_config(spec: ClusterSpec, member: str) -> list[str]:
    """After a write to `member`'s config dir: push it to the member's config volume on every
    engine where its container exists; the hosts pushed to.

    No-op without `hosts` (the member bind-mounts the directory itself). A member whose
    container does not exist yet gets its files when `ensure_container` creates it.
    """
    if spec.hosts is None:
        return []
    name = spec.container(member)
    pushed: list[str] = []
    for e in engines(spec).placed(member):
        if not e.config_volumes:
            continue
        ct = e.find_container(name)
        if ct is None:
            continue
        image = str(ct.attrs.get("Config", {}).get("Image", ""))
        role = ct.labels.get(LABEL_ROLE, member)
        if e.push_config(spec.scope, role, member, name, image, str(config_dir(spec.scope, member)), ct):
            pushed.append(e.name)
    return pushed


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port` of this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: a closed connection in TIME_WAIT is not "in use"; a listener is.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
