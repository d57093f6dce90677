"""NodeExec: the one way pgha runs a command inside a container (`docker exec`).

Every command is bounded by `timeout` seconds inside the container (coreutils `timeout`),
so a hung tool never hangs a flow; a failure raises `ExecError` with the command's name and
the last lines it printed (never its arguments, which may name files but never carry a
password: secrets reach containers only as mounted 0600 files).

A busy engine can lose the end of an exec's output stream (seen here: `pgbackrest info` and
`etcdctl endpoint health` answering nothing, exit 0, twice in a row). So every command runs
under a small `sh` wrapper that writes its exit code last on stderr (`EXIT_MARK`): a stream
without the mark was cut, and the result says so (`lost`, exit `EXIT_LOST`) instead of passing
for an empty success. Reads ask again (`retries_if_lost`); a command with effects never is.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass

import docker.errors
import requests

from stack.audit_sizes import DU_MARK, parse_df_du
from stack.errors import DockerError, ExecError
from stack.retry import OUTPUT_CUT
from stack.spec import ClusterSpec
from tasks.docker_engine import Engine
from tasks.docker_hosts import engines


@dataclass(frozen=True)
class ExecResult:
    code: int
    out: str
    err: str
    lost: bool = False  # the output stream ended before the command's exit mark: its output is incomplete

    @property
    def ok(self) -> bool:
        return self.code == 0 and not self.lost

    def tail(self, n: int = 3) -> str:
        """The last `n` non-empty lines of stderr (else stdout), joined on one line."""
        return last_lines(self.err or self.out, n)


def last_lines(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:600] if lines else "(no output)"


EXIT_UNKNOWN = 255  # the engine never recorded the command's exit: a failure, not a success
EXIT_LOST = 254  # the command's output was cut before its exit mark: a failure, whatever it did
EXIT_MARK = "pgha-exec-exit:"
# $0 names the wrapper, $1 is the timeout, the rest the command: nothing is re-quoted.
_WRAPPER = f'n=$1; shift; timeout "$n" "$@"; rc=$?; printf "\\n{EXIT_MARK}%d\\n" "$rc" >&2; exit "$rc"'


def split_mark(err: str) -> tuple[str, int | None]:
    """stderr without the wrapper's exit mark, and the code the mark carries (None: no mark, cut)."""
    at = err.rfind(f"\n{EXIT_MARK}")
    if at < 0:
        return err, None
    try:
        code = int(err[at + 1 + len(EXIT_MARK):].strip())
    except ValueError:
        return err, None
    return err[:at], code


def _exit_code(api: docker.APIClient, exec_id: str, wait_s: float = 5.0) -> int:
    """The exit code of an exec whose stream lost the wrapper's mark, from the engine. docker-py's
    `exec_run` inspects once, right after the output stream closes, and on a busy engine the exit
    is not recorded yet: its `None` read as 0 made an exec with no output look like a success.
    Asked again until the engine has it."""
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

    def run(self, cmd: list[str], user: str | None = None, timeout: int = 10, retries_if_lost: int = 0) -> ExecResult:
        """Run `cmd`; returns its exit code and output (a non-zero exit is not an error here).

        `retries_if_lost`: how many times a command whose output was cut is run again — only for
        reads, which may run twice; the last result (lost or not) is returned.
        """
        r = self._run_once(cmd, user, timeout)
        for _ in range(retries_if_lost):
            if not r.lost:
                break
            time.sleep(0.2)
            r = self._run_once(cmd, user, timeout)
        return r

    def _run_once(self, cmd: list[str], user: str | None, timeout: int) -> ExecResult:
        ct = self.engine.find_container(self.container)
        if ct is None:
            raise DockerError(f"container {self.container} does not exist")
        api = ct.client.api
        try:
            ex = api.exec_create(ct.id, ["sh", "-c", _WRAPPER, "pgha-exec", str(timeout), *cmd], user=user or "")
            out, err = api.exec_start(ex["Id"], demux=True) or (None, None)
            stdout = out.decode(errors="replace") if out else ""
            stderr, marked = split_mark(err.decode(errors="replace") if err else "")
            if marked is not None:  # the mark carries the exit code: the engine need not be asked
                return ExecResult(marked, stdout, stderr)
            code = _exit_code(api, ex["Id"])
        except docker.errors.APIError as exc:
            raise DockerError(f"exec in {self.container}: {exc.explanation or exc}") from None
        except requests.exceptions.RequestException as exc:
            raise DockerError(f"exec in {self.container}: its host's engine does not answer "
                              f"({type(exc).__name__})") from None
        # The stream ended before the mark: what came is not all there was.
        return ExecResult(code if code != 0 else EXIT_LOST, stdout,
                          stderr + ("\n" if stderr else "") + f"({OUTPUT_CUT})",
                          lost=True)

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

    def copy_to(self, other: NodeExec, path: str, into: str) -> None:
        """Copy the file `path` of this container into directory `into` of `other` (across engines too)."""
        self.engine.copy_path(self.container, path, other.engine, other.container, into)

    def logs(self, tail: int = 30, since: float | None = None) -> str:
        return self.engine.logs(self.container, tail=tail, since=since)

    def disk_usage(self, path: str, sizes: tuple[str, ...] = ()) -> tuple[int, int, list[int | None]] | None:
        """(used, available) bytes of the filesystem holding `path`, and the size on disk of each of
        `sizes` (None: unreadable), in one exec; None when not running or `df` is unreadable."""
        if not self.running():
            return None
        script = f"df -Pk {shlex.quote(path)}" + "".join(
            f"; echo {DU_MARK}; du -sk {shlex.quote(p.rstrip('/') + '/')} 2>/dev/null" for p in sizes)
        r = self.run(["sh", "-c", script], timeout=30, retries_if_lost=1)
        return parse_df_du(r.out, len(sizes))


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
