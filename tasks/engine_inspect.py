"""What an engine says about a cluster: logs, published ports, container states, memory pressure,
network addresses.

The Docker adapter's inspection job (the base of `tasks.docker_engine.Engine`): read-only
queries for `status`, the audit's snapshot (`tasks.observe`), the report and the port checks
before a bootstrap. Nothing here changes a resource.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker.errors
from docker.models.containers import Container

from stack.audit_obs import ContainerObs, PressureObs
from stack.errors import StateError
from tasks.engine_client import LABEL_CLUSTER, LABEL_MEMBER, EngineClient, engine_call


class EngineInspect(EngineClient):
    """An engine's read-only queries about a cluster's containers and networks."""

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

    def audit_containers(self, scope: str) -> list[ContainerObs]:
        """Each cluster container's member, state, health, id, restart count and log options."""
        rows: list[ContainerObs] = []
        for ct in self.cluster_containers(scope):
            log = ct.attrs.get("HostConfig", {}).get("LogConfig") or {}
            rows.append(ContainerObs(
                name=str(ct.name), member=ct.labels.get(LABEL_MEMBER, ""), status=ct.status,
                health=health_of(ct), container_id=ct.id or "",
                restart_count=int(ct.attrs.get("RestartCount") or 0),
                log_driver=str(log.get("Type") or ""), log_options=dict(log.get("Config") or {}),
                health_pending=health_pending(ct),
            ))
        return rows

    def memory_pressure(self, scope: str, since: float) -> list[PressureObs]:
        """Each running cluster container's memory use (inactive page cache excluded), limit,
        last-exit OOM kill, and the engine's `oom` events since `since` (unix time)."""
        ooms: dict[str, int] = {}
        with engine_call(f"events of {scope}"):
            for ev in self.client.events(since=int(since), until=int(time.time()), decode=True,
                                         filters={"label": f"{LABEL_CLUSTER}={scope}", "event": "oom"}):
                member = ((ev.get("Actor") or {}).get("Attributes") or {}).get(LABEL_MEMBER, "")
                ooms[member] = ooms.get(member, 0) + 1
        def row(ct: Container) -> PressureObs:
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
            return PressureObs(member=member, used_bytes=used, limit_bytes=limit,
                               oom_killed=bool((ct.attrs.get("State") or {}).get("OOMKilled")),
                               oom_events=ooms.get(member, 0))

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


def health_of(ct: Container) -> str:
    """The container's healthcheck status ('' when it has none)."""
    return str(((ct.attrs.get("State") or {}).get("Health") or {}).get("Status", ""))


def health_pending(ct: Container) -> bool:
    """`starting` with no check run yet: Docker keeps the last results in State.Health.Log."""
    health = (ct.attrs.get("State") or {}).get("Health") or {}
    return health.get("Status") == "starting" and not health.get("Log")


def _published(ct: Container) -> set[int]:
    out: set[int] = set()
    for bindings in (ct.attrs.get("HostConfig", {}).get("PortBindings") or {}).values():
        for b in bindings or []:
            if b.get("HostPort"):
                out.add(int(b["HostPort"]))
    return out
