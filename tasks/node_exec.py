"""NodeExec: the one way pgha runs a command inside a container (`docker exec`).

Every command is bounded by `timeout` seconds inside the container (coreutils `timeout`),
so a hung tool never hangs a flow; a failure raises `ExecError` with the command's name and
the last lines it printed (never its arguments, which may name files but never carry a
password: secrets reach containers only as mounted 0600 files).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import docker.errors
import requests

from stack.errors import DockerError, ExecError
from stack.spec import ClusterSpec
from tasks.docker_engine import Engine
from tasks.docker_hosts import engines


@dataclass(frozen=True)
class ExecResult:
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def tail(self, n: int = 3) -> str:
        """The last `n` non-empty lines of stderr (else stdout), joined on one line."""
        return last_lines(self.err or self.out, n)


def last_lines(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:600] if lines else "(no output)"


EXIT_UNKNOWN = 255  # the engine never recorded the command's exit: a failure, not a success


def _exit_code(api: docker.APIClient, exec_id: str, wait_s: float = 5.0) -> int:
    """The exit code of a finished exec. docker-py's `exec_run` inspects once, right after the
    output stream closes, and on a busy engine the exit is not recorded yet: its `None` read as
    0 made an exec with no output look like a success (an empty `pgbackrest info`, an empty
    etcd health report). Asked again until the engine has it."""
    deadline = time.monotonic() + wait_s
    while True:
        info = api.exec_inspect(exec_id)
        if not info.get("Running") and info.get("ExitCode") is not None:
            return int(info["ExitCode"])
        if time.monotonic() > deadline:
            return EXIT_UNKNOWN
        time.sleep(0.05)


class NodeExec:
    """Commands in one container of one engine."""

    def __init__(self, engine: Engine, container: str) -> None:
        self.engine = engine
        self.container = container

    def __repr__(self) -> str:
        return f"NodeExec({self.container} on {self.engine.name})"

    def running(self) -> bool:
        return self.engine.running(self.container)

    def run(self, cmd: list[str], user: str | None = None, timeout: int = 10) -> ExecResult:
        """Run `cmd`; returns its exit code and output (a non-zero exit is not an error here)."""
        ct = self.engine.find_container(self.container)
        if ct is None:
            raise DockerError(f"container {self.container} does not exist")
        api = ct.client.api
        try:
            ex = api.exec_create(ct.id, ["timeout", str(timeout), *cmd], user=user or "")
            out, err = api.exec_start(ex["Id"], demux=True) or (None, None)
            code = _exit_code(api, ex["Id"])
        except docker.errors.APIError as exc:
            raise DockerError(f"exec in {self.container}: {exc.explanation or exc}") from None
        except requests.exceptions.RequestException as exc:
            raise DockerError(f"exec in {self.container}: its host's engine does not answer "
                              f"({type(exc).__name__})") from None
        return ExecResult(code, out.decode(errors="replace") if out else "",
                          err.decode(errors="replace") if err else "")

    def check(self, cmd: list[str], what: str, user: str | None = None, timeout: int = 10) -> str:
        """Run `cmd` and return its stdout; raise ExecError naming `what` when it fails."""
        r = self.run(cmd, user=user, timeout=timeout)
        if not r.ok:
            hint = " (timed out)" if r.code == 124 else ""
            raise ExecError(f"{what} failed in {self.container} (exit {r.code}{hint}): {r.tail()}")
        return r.out

    def detach(self, cmd: list[str], user: str | None = None) -> None:
        """Start `cmd` in the background inside the container (a server it keeps running)."""
        ct = self.engine.find_container(self.container)
        if ct is None:
            raise DockerError(f"container {self.container} does not exist")
        try:
            ct.exec_run(cmd, user=user or "", detach=True)
        except docker.errors.APIError as exc:
            raise DockerError(f"cannot start {cmd[0]} in {self.container}: {exc.explanation or exc}") from None

    def put_file(self, path: str, text: str, mode: int = 0o600) -> None:
        self.engine.put_file(self.container, path, text, mode)

    def logs(self, tail: int = 30, since: float | None = None) -> str:
        return self.engine.logs(self.container, tail=tail, since=since)

    def disk_used_pct(self, path: str) -> float | None:
        """Use of the filesystem holding `path`, in percent (None: not running or unreadable)."""
        if not self.running():
            return None
        r = self.run(["df", "-P", path], timeout=5)
        lines = r.out.strip().splitlines()
        if not r.ok or len(lines) < 2:
            return None
        fields = lines[-1].split()
        try:
            used, avail = int(fields[2]), int(fields[3])
        except (IndexError, ValueError):
            return None
        # df's own percentage rounds up and counts reserved blocks; used/(used+avail) is what fills up.
        return 100.0 * used / max(used + avail, 1)


def node(spec: ClusterSpec, member: str) -> NodeExec:
    """The container of `member` on the engine that runs it."""
    return NodeExec(engines(spec).of(member), spec.container(member))


def first_running(spec: ClusterSpec, members: list[str]) -> NodeExec | None:
    """The first of `members` whose container runs (None: none does)."""
    for m in members:
        n = node(spec, m)
        if n.running():
            return n
    return None
