"""Reaching a Docker engine: the client (local socket, ssh, TLS), the one-line error, the labels.

The Docker adapter's connection job. `EngineClient` is the base of `tasks.docker_engine.Engine`:
it holds how one engine (one host) is reached, connects on first use and finds containers by
name or by label; the other jobs (`docker_engine`: containers, networks, volumes;
`engine_files`: files in and out of containers; `engine_config`: config pushes;
`engine_inspect`: what the engine says about a cluster) build on it. Every resource pgha makes
carries `pgha.cluster`, `pgha.role` and `pgha.member`, named here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import docker
import docker.errors
import requests
from docker.constants import MINIMUM_DOCKER_API_VERSION
from docker.models.containers import Container
from docker.tls import TLSConfig
from docker.types import LogConfig

from stack.errors import DockerError
from stack.hosts import EngineSSH
from stack.spec import LogsSpec
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


def labels(scope: str, role: str, member: str) -> dict[str, str]:
    return {LABEL_CLUSTER: scope, LABEL_ROLE: role, LABEL_MEMBER: member}


def log_config(options: dict[str, str] | None) -> LogConfig:
    """The json-file driver with `options` (max-size, max-file); pgha's default cap when None."""
    return LogConfig(type=LOG_DRIVER, config=dict(options or DEFAULT_LOG_OPTIONS))


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


def why(exc: docker.errors.APIError) -> str:
    """The engine's refusal in one line."""
    return str(exc.explanation or exc).splitlines()[0][:300]


@contextmanager
def engine_call(what: str) -> Iterator[None]:
    """Turn the engine's refusal of one operation into a one-line DockerError."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise DockerError(f"{what}: {why(exc)}") from None


class EngineClient:
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

    def cluster_containers(self, scope: str, role: str | None = None) -> list[Container]:
        flt: list[str] = [f"{LABEL_CLUSTER}={scope}"] + ([f"{LABEL_ROLE}={role}"] if role else [])
        try:
            return list(self.client.containers.list(all=True, filters={"label": flt}, ignore_removed=True))
        except requests.exceptions.RequestException as exc:
            raise DockerError(f"host {self.name}'s engine does not answer ({type(exc).__name__})") from None
