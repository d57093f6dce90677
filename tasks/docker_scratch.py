"""Scratch resources of the Docker adapter: a sleeping helper container on its own internal
network and volume, made for one block and removed when it ends (also after a killed run).

Verification and restores use it so that nothing they do touches a live cluster's network.
Everything carries `pgha.cluster=<scope>` and `pgha.role=<role>`, so what a killed earlier
run left is found and removed by label before a new box is made.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tasks.docker_engine import Engine, MountSpec
from tasks.node_exec import ExecResult, NodeExec

HOST_NETWORK = "host"  # `network=HOST_NETWORK`: the box shares its engine host's network (many hosts)


@dataclass
class Scratch:
    """A sleeping helper container and what it was made with."""

    node: NodeExec
    scope: str  # label pgha.cluster of everything it creates
    network: str
    volume: str
    role: str
    removed: list[str] = field(default_factory=list)  # filled when the block ends

    def run(self, cmd: list[str], user: str = "postgres", timeout: int = 60) -> ExecResult:
        return self.node.run(cmd, user=user, timeout=timeout)


@contextmanager
def scratch(engine: Engine, scope: str, role: str, name: str, image: str, data_target: str,
            data_volume: str | None = None, read_only: dict[str, str] | None = None,
            network: str | None = None, internal: bool = True,
            log_options: dict[str, str] | None = None) -> Iterator[Scratch]:
    """A scratch container `name` with a data volume at `data_target` and `read_only` volumes
    (volume -> path); its network (internal) and own volume are removed on exit. Its log is
    capped by `log_options` (the spec's `logs:`; None: pgha's default cap).

    A given `data_volume` (a live node's, for a restore) is used and kept; otherwise the
    container gets its own volume, removed with it. A given `network` (an S3 repository's
    route) is joined and kept; `internal=False` gives the box's own network a default route
    (an S3 repository reached through it).
    """
    engine.remove_labelled(scope, role, volumes=True)  # what a killed earlier run left
    net, vol = network or f"{name}-net", data_volume or f"{name}-data"
    s = Scratch(NodeExec(engine, name), scope, net, vol, role)
    try:
        if network is None:
            engine.ensure_network(scope, net, internal=internal, role=role)
        if data_volume is None:
            engine.ensure_volume(scope, role, name, vol)
        mounts = [MountSpec(target=data_target, source=vol)]
        mounts += [MountSpec(target=path, source=v, read_only=True) for v, path in (read_only or {}).items()]
        engine.run_scratch(name, image, scope, role, net, mounts, log_options)
        yield s
    finally:
        if engine.remove_container(name):
            s.removed.append(name)
        if network is None and engine.remove_network(net):
            s.removed.append(net)
        if data_volume is None and engine.remove_volume(vol):
            s.removed.append(vol)
