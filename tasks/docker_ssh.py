"""ssh:// engines: docker-py clients that reach a host's engine through the system's ssh.

docker-py's own ssh transport cannot serve here: its shell-out (use_ssh_client=True) runs a bare
`ssh -p PORT -l USER -- HOST docker system dial-stdio` (no way to name a key or known_hosts, so
the operator's ~/.ssh and agent would decide), makes a new pool and so a new ssh process for
every request, never reaps them, and its module needs paramiko even when paramiko is unused
(not installed here: ssh:// could not even start). So this small transport: a urllib3 pool of
kept connections, each one ssh process running `docker system dial-stdio` with pgha's argv
(stack.hosts.ssh_argv: the spec's key, its known_hosts, StrictHostKeyChecking yes, BatchMode,
`-F none`; a bounded ControlMaster on request), mounted on a docker-py client. Only
`tasks.engine_client.EngineClient` (an engine's client) and the lab use it; nothing else knows ssh is involved.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import socket
import subprocess
import threading
import weakref
from pathlib import Path
from typing import IO, Any

import docker
import urllib3.connection
import urllib3.connectionpool
from docker.constants import DEFAULT_MAX_POOL_SIZE
from docker.transport.basehttpadapter import BaseHTTPAdapter

from stack.errors import DockerError
from stack.hosts import EngineSSH, ssh_argv, ssh_control_path, ssh_control_prefix, ssh_quote, ssh_target
from tasks.host.state import state_root

SSH_DIAL = ["docker", "system", "dial-stdio"]
SSH_PROBE_TIMEOUT = 30
SSH_BASE_URL = "http+docker://ssh"  # docker-py's own name: its hijacked streams (exec) read `.channel`


def ssh_control_dir() -> Path:
    """Where ControlMaster sockets live: `<state dir>/ssh`, 0700 (a socket there is a logged-in session)."""
    d = state_root() / "ssh"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    d.chmod(0o700)
    return d


def ssh_command(url: str, ssh: EngineSSH | None, command: list[str], multiplex: bool = False) -> list[str]:
    """The system ssh's argv to run `command` on an ssh:// engine's host (see stack.hosts.ssh_argv)."""
    control = ssh_control_path(str(ssh_control_dir()), url, ssh) if multiplex else None
    return ssh_argv(url, ssh, command, control)


class _KeptReader:
    """The ssh process's stdout as http.client's response file, minus `close()`: one response
    ending must not end the connection (http.client closes its file after every response)."""

    def __init__(self, stream: IO[bytes], channel: _SSHSocket) -> None:
        self._stream = stream
        self.channel = channel  # docker-py reads hijacked streams (exec, attach) through the socket

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def close(self) -> None:
        """Kept open: the connection (`_SSHSocket.close`) owns the stream."""


class _SSHSocket(socket.socket):
    """One connection to the engine: one ssh process running `docker system dial-stdio`.

    A socket.socket only for docker-py's socket helpers (settimeout, poll on fileno: an unbound
    socket polls at once, so their reads go straight to `recv`); the bytes go through the pipes.
    """

    def __init__(self, argv: list[str]) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self._argv = argv
        self.proc: subprocess.Popen[bytes] | None = None

    def connect(self, *_: Any) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "SSL_CERT_FILE")}
        # Its own session: Ctrl-C on pgha does not cut the engine's stream mid-request. ssh's own
        # messages are the probe's to report (`ssh_probe`), not stray lines on pgha's stderr.
        self.proc = subprocess.Popen(self._argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        if self.proc is None or self.proc.stdin is None or self.proc.stdout is None:
            raise OSError("ssh engine connection is closed")
        return self.proc.stdin, self.proc.stdout

    def sendall(self, data: Any, *_: Any) -> None:  # type: ignore[override]
        stdin, _ = self._pipes()
        stdin.write(data)
        stdin.flush()

    def send(self, data: Any, *_: Any) -> int:  # type: ignore[override]
        self.sendall(data)
        return len(data)

    def recv(self, n: int, *_: Any) -> bytes:  # type: ignore[override]
        _, stdout = self._pipes()
        return stdout.read1(n)  # type: ignore[attr-defined,no-any-return]  # what is there, like a socket

    def makefile(self, *_: Any, **__: Any) -> Any:  # type: ignore[override]
        _, stdout = self._pipes()
        return _KeptReader(stdout, self)

    def alive(self) -> bool:
        """The ssh process runs and nothing unasked-for waits on its stdout (EOF or stray bytes: dropped)."""
        proc = self.proc
        if proc is None or proc.poll() is not None or proc.stdout is None or proc.stdout.closed:
            return False
        readable, _, _ = select.select([proc.stdout.fileno()], [], [], 0)
        return not readable

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError, ValueError):
                    if stream is not None:
                        stream.close()
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        super().close()


class _SSHConnection(urllib3.connection.HTTPConnection):
    def __init__(self, argv: list[str], timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._argv = argv

    def connect(self) -> None:
        sock = _SSHSocket(self._argv)
        sock.connect()
        self.sock = sock

    @property
    def is_connected(self) -> bool:
        """urllib3 drops a kept connection that is not (its own check polls the socket, not the pipe)."""
        return isinstance(self.sock, _SSHSocket) and self.sock.alive()


class _SSHPool(urllib3.connectionpool.HTTPConnectionPool):
    def __init__(self, argv: list[str], timeout: float, maxsize: int) -> None:
        super().__init__("localhost", timeout=timeout, maxsize=maxsize)
        self._argv = argv

    def _new_conn(self) -> _SSHConnection:
        return _SSHConnection(self._argv, self.timeout.connect_timeout)  # type: ignore[arg-type,union-attr]


class _SSHAdapter(BaseHTTPAdapter):
    """requests' adapter for `http+docker://ssh`: one pool of kept ssh connections per client
    (`keep=False`: a new pool and ssh process per request, docker-py's way, for the benchmark)."""

    def __init__(self, argv: list[str], timeout: float, max_pool_size: int, keep: bool = True) -> None:
        self._argv = argv
        self.timeout = timeout
        self.max_pool_size = max_pool_size
        self._keep = keep
        self._pool: _SSHPool | None = None
        self._spent: list[_SSHPool] = []
        self._pool_lock = threading.Lock()
        super().__init__()
        _SSH_ADAPTERS.add(self)

    def get_connection(self, url: str, proxies: Any = None) -> _SSHPool:
        with self._pool_lock:
            if not self._keep:
                self._spent.append(_SSHPool(self._argv, self.timeout, self.max_pool_size))
                return self._spent[-1]
            if self._pool is None:
                self._pool = _SSHPool(self._argv, self.timeout, self.max_pool_size)
            return self._pool

    def close(self) -> None:
        super().close()
        with self._pool_lock:
            pools, self._pool, self._spent = [self._pool, *self._spent], None, []
        for pool in pools:
            if pool is not None:
                pool.close()  # closes every kept connection: each ssh process ends and is reaped


_SSH_ADAPTERS: weakref.WeakSet[_SSHAdapter] = weakref.WeakSet()


@atexit.register
def _close_ssh_adapters() -> None:
    """On exit, end every kept ssh connection (they would end anyway when their stdin closes)."""
    for adapter in list(_SSH_ADAPTERS):
        with contextlib.suppress(Exception):
            adapter.close()


def ssh_probe(url: str, ssh: EngineSSH | None, host: str, multiplex: bool = False) -> str:
    """The engine's API version, asked over ssh (`docker version` on the host); else one line
    naming the host, the URL, the key and known_hosts tried and ssh's own reason."""
    argv = ssh_command(url, ssh, ["docker", "version", "--format", "'{{.Server.APIVersion}}'"], multiplex)
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=SSH_PROBE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        reason = f"no answer in {SSH_PROBE_TIMEOUT} s"
    except OSError as exc:
        reason = f"cannot run ssh: {exc.strerror or exc}"
    else:
        version = r.stdout.strip()
        if r.returncode == 0 and version:
            return version
        lines = [ln.strip() for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        reason = (lines[-1] if lines else f"ssh exited {r.returncode}")[:200]
    tried = (f"ssh with key {ssh.key} and known_hosts {ssh.known_hosts}" if ssh is not None
             else "ssh with the user's ssh setup (no ssh: block)")
    raise DockerError(f"no Docker engine answers at {url} (host {host}): {tried}: {reason}")


def ssh_client(url: str, ssh: EngineSSH | None, host: str, timeout: int,
               multiplex: bool | None = None, keep: bool = True) -> docker.DockerClient:
    """A docker-py client for an ssh:// engine through the system ssh with pgha's argv.

    The probe comes first (a refused key, an unknown host key, a closed port: one line, before
    any API call); its answer is the client's API version, so building the client asks nothing.
    `multiplex` (default: the spec's `ssh.multiplex`) shares one ssh login among the connections.
    """
    if multiplex is None:
        multiplex = ssh is not None and ssh.multiplex
    version = ssh_probe(url, ssh, host, multiplex)
    return ssh_transport_client(ssh_command(url, ssh, SSH_DIAL, multiplex), timeout, version, keep)


def ssh_transport_client(argv: list[str], timeout: int, version: str, keep: bool = True) -> docker.DockerClient:
    """A docker-py client whose only transport is `_SSHAdapter` running `argv` (made with a
    placeholder URL and no request: `version` is given; every HTTP(S) adapter is removed)."""
    client = docker.DockerClient(base_url="tcp://localhost:1", timeout=timeout, version=version)
    api = client.api
    for prefix in list(api.adapters):
        api.adapters.pop(prefix).close()
    api.mount(SSH_BASE_URL, _SSHAdapter(argv, timeout, DEFAULT_MAX_POOL_SIZE, keep))
    api.base_url = SSH_BASE_URL
    return client


def ssh_end_masters(url: str) -> int:
    """End every ControlPersist master pgha keeps for this engine, whatever key opened it
    (`lab down`: the host goes away); how many were running."""
    ended = 0
    for sock in sorted(ssh_control_dir().glob(ssh_control_prefix(url) + "*")):
        _, host, _ = ssh_target(url)
        argv = ["ssh", "-F", "none", "-o", f"ControlPath={ssh_quote(str(sock))}", "-O", "exit", "--", host]
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False)
            ended += r.returncode == 0
        sock.unlink(missing_ok=True)
    return ended
