"""Which Docker engine runs which member: the cluster's map member -> `Engine`.

Today every member of every cluster runs on the local engine (DOCKER_HOST or the default
socket); the many-hosts spec fills this map from its `hosts` and `placement`.
"""

from __future__ import annotations

import socket
from functools import lru_cache

from stack.spec import ClusterSpec
from tasks.docker_engine import Engine


@lru_cache(maxsize=1)
def local_engine() -> Engine:
    """The engine of this machine (DOCKER_HOST or the default socket), one handle per process."""
    return Engine("local")


class ClusterEngines:
    """Which engine runs which member of a cluster (members not in the map: the default)."""

    def __init__(self, spec: ClusterSpec, default: Engine) -> None:
        self.spec = spec
        self.default = default
        self._by_member: dict[str, Engine] = {}

    def of(self, member: str) -> Engine:
        return self._by_member.get(member, self.default)

    def all(self) -> list[Engine]:
        """Every distinct engine the cluster uses."""
        seen: dict[int, Engine] = {id(self.default): self.default}
        for e in self._by_member.values():
            seen.setdefault(id(e), e)
        return list(seen.values())

    def check(self) -> None:
        """Every engine answers (one line naming the host otherwise)."""
        for e in self.all():
            e.check()


def engines(spec: ClusterSpec) -> ClusterEngines:
    return ClusterEngines(spec, local_engine())


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
