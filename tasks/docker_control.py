"""The control plane's containers on the local engine: run, find by label, describe, exec, remove.

The Docker adapter's control-plane job (`tasks.control_plane` defines the server's and the
worker's containers; this module asks the engine). Containers here run on the host's network
under the engine's restart policy with a health check; they are found by their labels only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import docker.errors
from docker.models.containers import Container
from docker.types import Healthcheck

from stack.errors import DockerError
from tasks.docker_engine import Engine, MountSpec
from tasks.engine_client import log_config

NS = 1_000_000_000


@dataclass(frozen=True)
class Supervised:
    """A container the engine supervises, to run: on the host's network, with a restart policy
    and a health check (every 10 s, 3 misses, 90 s to start)."""

    name: str
    image: str
    command: list[str]
    labels: dict[str, str]
    environment: dict[str, str]
    mounts: list[MountSpec]
    health: list[str]
    restart_policy: str
    working_dir: str | None = None


@dataclass(frozen=True)
class ContainerState:
    """How one container is supervised, as the engine says now."""

    container: str
    image: str | None
    state: str | None  # running, restarting, exited, created...
    health: str | None
    restart_policy: str | None
    restart_count: int
    started_at: str | None
    pid: int | None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        """Running, or being restarted by the engine."""
        return self.state in ("running", "restarting")


@dataclass(frozen=True)
class ExecOutput:
    code: int | None
    out: str


def _state(ct: Container) -> ContainerState:
    st = ct.attrs.get("State", {})
    return ContainerState(
        container=str(ct.name), image=ct.attrs.get("Config", {}).get("Image"), state=st.get("Status"),
        health=(st.get("Health") or {}).get("Status"),
        restart_policy=ct.attrs.get("HostConfig", {}).get("RestartPolicy", {}).get("Name"),
        restart_count=int(ct.attrs.get("RestartCount", 0) or 0), started_at=st.get("StartedAt"),
        pid=st.get("Pid") or None, labels=dict(ct.labels))


def _find(engine: Engine, labels: dict[str, str]) -> Container | None:
    found = engine.client.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]})
    return found[0] if found else None


def find(engine: Engine, labels: dict[str, str]) -> ContainerState | None:
    """The first container carrying every one of `labels` (running or not), as it is now."""
    ct = _find(engine, labels)
    return None if ct is None else _state(ct)


def run(engine: Engine, c: Supervised) -> ContainerState:
    """Start `c` (detached, with an init process and pgha's log cap)."""
    try:
        ct = engine.client.containers.run(
            c.image, c.command, name=c.name, detach=True, labels=c.labels, environment=c.environment,
            mounts=[m.docker() for m in c.mounts], network_mode="host", init=True, working_dir=c.working_dir,
            restart_policy={"Name": c.restart_policy},
            healthcheck=Healthcheck(test=c.health, interval=10 * NS, timeout=8 * NS, retries=3,
                                    start_period=90 * NS),
            log_config=log_config(None),
        )
    except docker.errors.APIError as exc:
        raise DockerError(f"cannot start {c.name}: {exc.explanation or exc}") from None
    ct.reload()  # docker-py hands back the container as created, before it started
    return _state(ct)


def remove(engine: Engine, labels: dict[str, str], stop_timeout: int | None = None) -> str | None:
    """Stop (if `stop_timeout`: gracefully, that many seconds) and remove the container found by
    `labels`; its name, None when there was none."""
    ct = _find(engine, labels)
    if ct is None:
        return None
    if stop_timeout is not None:
        try:
            ct.stop(timeout=stop_timeout)
        except docker.errors.APIError:
            pass
    ct.remove(force=True)
    return str(ct.name)


def exec_in(engine: Engine, labels: dict[str, str], cmd: list[str], user: str = "root") -> ExecOutput | None:
    """Run `cmd` in the running container found by `labels` (None: none runs, or the engine refused)."""
    ct = _find(engine, labels)
    if ct is None or ct.status != "running":
        return None
    try:
        r = ct.exec_run(cmd, user=user)
    except docker.errors.APIError:
        return None
    return ExecOutput(r.exit_code, (r.output or b"").decode(errors="replace").strip())


def ensure_volume(engine: Engine, name: str, labels: dict[str, str]) -> None:
    try:
        engine.client.volumes.get(name)
    except docker.errors.NotFound:
        engine.client.volumes.create(name, labels=labels)


def volume_path(engine: Engine, name: str) -> str | None:
    """Where a volume lives on the engine's host (its Mountpoint); None when there is no such volume."""
    try:
        return str(engine.client.volumes.get(name).attrs.get("Mountpoint"))
    except docker.errors.NotFound:
        return None


def remove_volume(engine: Engine, name: str) -> bool:
    try:
        engine.client.volumes.get(name).remove(force=True)
        return True
    except docker.errors.NotFound:
        return False
