"""No pgha command leaves a process behind, and its captured pipes close when it returns.

Each command runs with a PREFECT_HOME of its own; afterwards no process may name that
directory in its command line or environment (the ephemeral Prefect API a command starts
inherits it), and the command's stdout/stderr pipes must reach EOF as soon as it exits: an
orphaned API server holds them open, which made `subprocess.run(capture_output=True)` in
the tests wait until their timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

from tests.integration.conftest import ROOT, remove_scope, without_shared_api

SCOPE = "pgha-it-nl"
SPEC = {"scope": SCOPE, "nodes": 1, "etcd_members": 1, "ports": {"rw": 25600, "ro": 25601, "stats": 28600}, "pooler": {"enabled": False}}
PIPE_GRACE_S = 10  # after the command exits, its pipes must close within this


def processes_naming(marker: str) -> list[str]:
    """'pid: command line' of every process whose command line or environment contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker.encode() in cmdline or marker.encode() in environ:
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
            found.append(f"{entry.name}: {shown}")
    return found


def run(env: dict[str, str], *args: str, timeout: float = 600) -> tuple[int, str, str]:
    """Run pgha; fail if it outlives `timeout` or if its pipes stay open after it exits."""
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        code = proc.wait(timeout=timeout)
        exited = time.monotonic()
        try:
            out, err = proc.communicate(timeout=PIPE_GRACE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`pgha {' '.join(args)}` exited ({code}) but its stdout/stderr stayed open for "
                        f"{PIPE_GRACE_S}s: a process it started still holds them: {processes_naming(env['PREFECT_HOME'])}")
        assert time.monotonic() - exited < PIPE_GRACE_S
        return code, out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def assert_nothing_left(home: str, what: str) -> None:
    deadline = time.monotonic() + 3  # a process ending right now may still show for a moment
    while (left := processes_naming(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"{what} left processes behind: {left}"


@pytest.fixture
def env(base_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    home = tmp_path / "prefect-home-nl"
    yield {**without_shared_api(base_env), "PREFECT_HOME": str(home), "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
           "PGHA_STATE_DIR": str(tmp_path / "state")}
    # A failed run must not leave its orphans either: only processes naming this test's own home.
    for row in processes_naming(str(home)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(row.split(":", 1)[0]), signal.SIGKILL)


def test_commands_leave_no_process_and_close_their_pipes(env: dict[str, str], tmp_path: Path,
                                                        engine: docker.DockerClient) -> None:
    remove_scope(engine, SCOPE)
    spec = tmp_path / "nl.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    home = env["PREFECT_HOME"]
    try:
        # Refused after its API started (no cluster to back up): the error path stops it.
        code, _, err = run(env, "backup", "--spec", str(spec), timeout=300)
        assert code != 0 and err.strip().splitlines()[-1].startswith("pgha: error: "), err
        assert_nothing_left(home, "a refused `pgha backup`")

        # As on a loaded machine, where the API's start outlasts Prefect's startup timeout
        # (then Prefect's SubprocessASGIServer leaves that process running and starts another).
        slow = {**env, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1"}
        code, out, err = run(slow, "up", "--spec", str(spec))
        assert_nothing_left(home, "`pgha up` with a slow API start")
        assert code == 0, f"{out[-2000:]}\n{err[-2000:]}"
        assert f"{SCOPE} is ready in" in out

        # A second up converges nothing and runs the flow again on a fresh API.
        code, out, err = run(env, "up", "--spec", str(spec))
        assert_nothing_left(home, "a second `pgha up`")
        assert code == 0 and "nothing changed" in out, f"{out[-2000:]}\n{err[-2000:]}"
    finally:
        code, out, err = run(env, "down", "--volumes", "--yes", "--purge-backups", "--spec", str(spec))
        remove_scope(engine, SCOPE)
    assert_nothing_left(home, "`pgha down --volumes`")
    assert code == 0, f"{out[-2000:]}\n{err[-2000:]}"
