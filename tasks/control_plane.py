"""The control plane's containers: the Prefect server and the worker, supervised by the Docker engine.

The only module that creates, inspects or removes them. One control plane per state directory
and port (its `key`, a hash of both, names and labels everything), so two state directories on two
ports share one engine without touching each other's containers.

- `restart_policy=unless-stopped`: the engine starts them again after a crash, a SIGKILL, an OOM
  kill, its own restart or a reboot, as it does the cluster's containers; a container someone
  stopped on purpose (`docker stop`) stays stopped across an engine restart (`always` would start
  it again). `pgha server stop` removes them.
- Health checks (`pgha-control-health`): the server answers /api/health; the worker has
  heartbeated to the server within 90 s (it polls).
- Host networking: the server listens on 127.0.0.1:$PGHA_SERVER_PORT as before, and the worker
  reaches it and the clusters' ports published on 127.0.0.1. Before each connection to the
  server's port the worker's processes check that the socket listening there is the one the
  server's container published (`LISTENER_FILE`; stack/control/site/sitecustomize.py): its
  credentials never go to another process bound to that port.
- The server's SQLite database lives on a named volume (`pgha-prefect-db-<key>`), kept by
  `pgha server stop`.
- The worker gets the engine's socket, and the state directory and the checkout at the same
  paths as on the host: the flows it runs see the same clusters and files as the CLI.
- The API auth secret is a read-only mount of `<state>/server/api-auth` that the image's entrypoint
  exports into the process's environment; it is never in a container's env, labels or command.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks import docker_control
from tasks.docker_control import ContainerState
from tasks.docker_engine import MountSpec
from tasks.docker_hosts import local_engine
from tasks.engine_client import LABEL_CONFIG, LABEL_ROLE

LABEL_CONTROL = "pgha.control"  # the control plane's key (one per state directory and port)
LABEL_STATE_DIR = "pgha.state-dir"
LABEL_PORT = "pgha.server-port"
SERVER_ROLE, WORKER_ROLE = "prefect-server", "prefect-worker"
RESTART_POLICY = "unless-stopped"
AUTH_IN_CONTAINER = "/run/pgha/api-auth"
DB_IN_CONTAINER = "/var/lib/prefect"  # the server's PREFECT_HOME: prefect.db lives here
DB_IN_WORKER = "/var/lib/pgha-server-db"  # the same volume, read-only in the worker
# The inode of the server's listening socket, written by the server's container on its volume
# (`_HOLDS_PORT`), read by the worker's guard (stack/control/site/sitecustomize.py) before it connects.
LISTENER_FILE = "pgha-listener"
GUARD_DIR = Path("stack") / "control" / "site"  # in the checkout: on the worker's PYTHONPATH
DOCKER_SOCKET = "/var/run/docker.sock"  # where the worker's flows find the engine (docker-py's default)
# Passed from `pgha server start`'s environment to the worker (hence to every flow run), when set.
# Alert webhooks are not: they live in the server's notification block, applied by the CLI.
WORKER_PASSTHROUGH = ("PGHA_HEARTBEAT_URL", "PGHA_DEBIAN_MIRROR", "PGHA_DEBIAN_SECURITY_MIRROR",
                      "PGHA_NO_GLOBAL_LIMIT", "PGHA_DEBUG")


def engine_socket() -> str:
    """The engine's socket on this machine: $DOCKER_HOST's unix path, else Docker's default."""
    url = os.environ.get("DOCKER_HOST", "")
    return url.removeprefix("unix://") if url.startswith("unix://") else DOCKER_SOCKET


def key(state_dir: Path, port: int) -> str:
    """One control plane per state directory and port: two of them never share a container or a volume."""
    return hashlib.sha256(f"{state_dir.resolve()}|{port}".encode()).hexdigest()[:10]


@dataclass(frozen=True)
class ControlDef:
    """The Prefect server's or worker's container as pgha wants it (its digest is the config label)."""

    name: str
    image: str
    role: str  # SERVER_ROLE or WORKER_ROLE
    command: list[str]
    environment: dict[str, str]
    mounts: list[tuple[str, str, str, bool]]  # (kind, source, target, read-only)
    health: list[str]
    working_dir: str | None = None


@dataclass(frozen=True)
class ControlPlane:
    """What the control plane of one state directory is made of (pure: no engine call)."""

    state_dir: Path
    home: Path  # the checkout (PGHA_HOME)
    port: int
    image: str
    auth_file: Path
    pool: str
    worker_name: str
    server_env: dict[str, str]  # vacuum settings and the like; never a secret
    worker_env: dict[str, str]

    @property
    def key(self) -> str:
        return key(self.state_dir, self.port)

    @property
    def server_name(self) -> str:
        return f"pgha-prefect-server-{self.key}"

    @property
    def worker_container(self) -> str:
        return f"pgha-prefect-worker-{self.key}"

    @property
    def volume(self) -> str:
        return f"pgha-prefect-db-{self.key}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def labels(self, role: str) -> dict[str, str]:
        return {LABEL_CONTROL: self.key, LABEL_ROLE: role, LABEL_STATE_DIR: str(self.state_dir),
                LABEL_PORT: str(self.port)}

    def _common(self) -> dict[str, str]:
        return {"PREFECT_API_URL": self.api_url, "PREFECT_UI_URL": self.api_url.removesuffix("/api"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

    def server_def(self) -> ControlDef:
        env = {**self._common(), **self.server_env, "PREFECT_HOME": DB_IN_CONTAINER,
               "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(self.port)}
        return ControlDef(
            name=self.server_name, image=self.image, role=SERVER_ROLE,
            command=["server", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            environment=env,
            mounts=[("volume", self.volume, DB_IN_CONTAINER, False),
                    ("bind", str(self.auth_file), AUTH_IN_CONTAINER, True)],
            # The health check publishes the listening socket's inode (for the worker's guard) and
            # asks the server only once the socket is proven this container's own.
            health=["CMD", "python", "-c", _HOLDS_PORT, str(self.port), f"{DB_IN_CONTAINER}/{LISTENER_FILE}",
                    "pgha-control-health", "server"],
        )

    def worker_def(self) -> ControlDef:
        env = {**self._common(), **self.worker_env, "PGHA_HOME": str(self.home),
               # the guard: every Python process here connects to the server's port only after
               # checking the socket listening there is the server's (stack/control/site)
               "PYTHONPATH": f"{self.home}:{self.home / GUARD_DIR}",
               "PGHA_SERVER_LISTENER": f"{DB_IN_WORKER}/{LISTENER_FILE}",
               "PGHA_STATE_DIR": str(self.state_dir), "PGHA_SERVER_PORT": str(self.port),
               "PGHA_WORKER_NAME": self.worker_name, "PGHA_POOL": self.pool,
               "PGHA_SERVER_DB": f"{DB_IN_WORKER}/prefect.db",
               # Flow runs' own Prefect home (results of failed runs, local storage) in the state dir.
               "PREFECT_HOME": str(self.state_dir / "server" / "worker-home")}
        return ControlDef(
            name=self.worker_container, image=self.image, role=WORKER_ROLE,
            command=["worker", "worker", "start", "--pool", self.pool, "--type", "process",
                     "--name", self.worker_name],
            environment=env,
            mounts=[("bind", engine_socket(), DOCKER_SOCKET, False),
                    ("bind", str(self.state_dir), str(self.state_dir), False),
                    ("bind", str(self.home), str(self.home), False),
                    ("bind", str(self.auth_file), AUTH_IN_CONTAINER, True),
                    # read-only: the audit's server.database row sizes the file (tasks/server_db.py)
                    ("volume", self.volume, DB_IN_WORKER, True)],
            health=["CMD", "pgha-control-health", "worker"],
            working_dir=str(self.home),
        )


def config_hash(definition: ControlDef) -> str:
    """The digest a container's config label carries. Taken over the definition's fields as JSON, a
    `working_dir` it does not set left out, so a definition that did not change keeps its label."""
    fields = {k: v for k, v in asdict(definition).items() if not (k == "working_dir" and v is None)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _labels(plane: ControlPlane, role: str) -> dict[str, str]:
    return {LABEL_CONTROL: plane.key, LABEL_ROLE: role}


def _supervised(plane: ControlPlane, d: ControlDef) -> docker_control.Supervised:
    return docker_control.Supervised(
        name=d.name, image=d.image, command=d.command,
        labels={**plane.labels(d.role), LABEL_CONFIG: config_hash(d)}, environment=d.environment,
        mounts=[MountSpec(target=target, source=source, kind=kind, read_only=ro)
                for kind, source, target, ro in d.mounts],
        health=d.health, restart_policy=RESTART_POLICY, working_dir=d.working_dir)


def ensure(plane: ControlPlane, role: str) -> tuple[str, ContainerState]:
    """The container of `role` running; look first and act only when needed.

    A running container whose definition differs from the wanted one is kept (recreating the
    server or the worker would cut every run in flight): the caller says so.
    """
    d = plane.server_def() if role == SERVER_ROLE else plane.worker_def()
    engine = local_engine()
    if role == SERVER_ROLE:
        docker_control.ensure_volume(engine, plane.volume, plane.labels(SERVER_ROLE))
    c = docker_control.find(engine, _labels(plane, role))
    if c is not None and c.up:
        same = c.labels.get(LABEL_CONFIG) == config_hash(d)
        return ("running" if same else "running (definition changed: applies after `pgha server stop` and "
                "`pgha server start`)"), c
    if c is not None:  # stopped by hand, or created and never started: start the current definition
        docker_control.remove(engine, _labels(plane, role))
    return "started", docker_control.run(engine, _supervised(plane, d))


def remove(plane: ControlPlane, volume: bool = False) -> list[str]:
    """Stop and remove the containers (worker first); the database volume only when asked."""
    done = []
    for role in (WORKER_ROLE, SERVER_ROLE):
        name = docker_control.remove(local_engine(), _labels(plane, role), stop_timeout=30)
        if name is None:
            done.append(f"{role.removeprefix('prefect-')} was not running")
            continue
        done.append(f"{role.removeprefix('prefect-')} stopped and removed ({name})")
    if volume and docker_control.remove_volume(local_engine(), plane.volume):
        done.append(f"database volume {plane.volume} removed")
    return done


def describe(plane: ControlPlane, role: str) -> ContainerState | None:
    """How one container is supervised: name, state, health, restart policy and count, started at, pid."""
    return docker_control.find(local_engine(), _labels(plane, role))


def supervision(c: ContainerState | None) -> dict[str, object] | None:
    """`describe`'s answer as `pgha server status` shows it (None: no such container)."""
    if c is None:
        return None
    return {"container": c.container, "image": c.image, "state": c.state, "health": c.health,
            "restart_policy": c.restart_policy, "restart_count": c.restart_count, "started_at": c.started_at,
            "pid": c.pid}


def running(plane: ControlPlane, role: str) -> bool:
    c = describe(plane, role)
    return c is not None and c.state == "running"


# Run inside the server's container (host networking: /proc/net/tcp is the host's): is the
# listening socket on 127.0.0.1:PORT held by a process of this container? Exit 0 yes, 3 no.
# With a second argument, the socket's inode is written there (the worker's guard compares it with
# the socket listening on the port before it connects); with more, they are then run (the health
# check: the server is asked, with the credentials, only once its socket is proven; exit 1 if not).
_HOLDS_PORT = r"""
import os, sys
want = {"0100007F:%04X" % int(sys.argv[1]), "00000000:%04X" % int(sys.argv[1])}
inodes = set()
for line in open("/proc/net/tcp").read().splitlines()[1:]:
    f = line.split()
    if f[1] in want and f[3] == "0A":
        inodes.add(f[9])
held = None
for pid in (p for p in os.listdir("/proc") if p.isdigit()):
    try:
        fds = os.listdir("/proc/%s/fd" % pid)
    except OSError:
        continue
    for fd in fds:
        try:
            link = os.readlink("/proc/%s/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            held = link[8:-1]
if held is None or len(inodes) != 1:
    print("not held")
    sys.exit(1 if len(sys.argv) > 3 else 3)
if len(sys.argv) > 2:
    try:
        old = open(sys.argv[2]).read().strip()
    except OSError:
        old = ""
    if old != held:  # a file per writer (the health check and a verb's check may run at once)
        tmp = "%s.%d" % (sys.argv[2], os.getpid())
        with open(tmp, "w") as out:
            out.write(held + "\n")
        os.replace(tmp, sys.argv[2])
if len(sys.argv) > 3:
    os.execvp(sys.argv[3], sys.argv[3:])
print("held")
sys.exit(0)
"""


def server_holds_port(plane: ControlPlane) -> bool:
    """Whether 127.0.0.1:<port> is held by this control plane's server container, asked of the engine
    (pgha's proof that the server it is about to send credentials to is the one it started: a
    process another user runs can take the port only while the server is not bound to it)."""
    for _ in range(3):  # a busy engine may cut an exec's output short: asked again
        r = docker_control.exec_in(local_engine(), _labels(plane, SERVER_ROLE),
                                   ["python", "-c", _HOLDS_PORT, str(plane.port), f"{DB_IN_CONTAINER}/{LISTENER_FILE}"])
        if r is None:  # no server runs, or the engine refused
            return False
        if r.code == 0 and r.out == "held":
            return True
        if r.code == 3 and r.out == "not held":
            return False
    return False


def volume_path(plane: ControlPlane) -> str | None:
    """Where the database volume lives on the engine's host (its Mountpoint), if it exists."""
    return docker_control.volume_path(local_engine(), plane.volume)


def logs_tail(container: str, tail: int) -> str:
    return local_engine().logs(container, tail=tail)


def logs_hint(plane: ControlPlane) -> str:
    return f"docker logs {plane.server_name} / docker logs {plane.worker_container}"


SERVER_PREFIXES = ("PREFECT_SERVER_", "PREFECT_API_SERVICES_")  # the server's own tuning, from the caller
WORKER_PREFIXES = ("PREFECT_WORKER_",)
NEVER = ("PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_HOST",
         "PREFECT_SERVER_API_PORT")


def environ_passthrough(role: str) -> dict[str, str]:
    """What the caller's environment gives the server (its PREFECT_SERVER_* settings) or the worker
    (PGHA_HEARTBEAT_URL and a few more, PREFECT_WORKER_*); never an auth string."""
    if role == SERVER_ROLE:
        return {k: v for k, v in os.environ.items() if k.startswith(SERVER_PREFIXES) and k not in NEVER}
    return {k: v for k, v in os.environ.items()
            if (k in WORKER_PASSTHROUGH or k.startswith(WORKER_PREFIXES)) and v and k not in NEVER}
