"""The documentation's examples, run against a live cluster: a stale snippet fails the suite.

Getting started and every page under docs/howto/ (found by glob, so a new page is covered as
soon as it exists): each page is one test. Its ```sh / ```bash / ```shell and ```python blocks
(tests/support/doc_blocks.py) run in order in one `bash -euo pipefail` process, so an `export`
in one block holds in the next; a Python block runs with the venv's python in that same shell.
A block marked `<!-- docs-test: skip REASON -->` is not run; the test prints it with its reason.

What the blocks see is what a reader sees after `make up`: a Prefect server started by
`pgha server start` (own port, own PREFECT_HOME), one running cluster, `pgha` and `prefect`
first on PATH, and `PGHA_SPEC` naming that cluster's spec (2 nodes, 1 etcd, its own scope and
ports) so `pgha status` and friends find it. One module cluster serves every page; each page
starts once the cluster is healthy (a page that breaks it fails itself, not the next one).
Everything the pages brought up from this state directory is removed by label at the end.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

from tests.integration.conftest import QUICK_WORKER, ROOT, pgha, remove_scope, without_shared_api
from tests.support.doc_blocks import Block, Lang, parse_file

DOCS = ROOT / "docs"
PAGES = [DOCS / "getting-started.md", *sorted((DOCS / "howto").glob("*.md"))]

SCOPE = "pgha-it-docs"
SPEC = {"scope": SCOPE, "nodes": 2, "etcd_members": 1, "postgres_version": 17,
        "ports": {"rw": 27600, "ro": 27601, "stats": 27602, "pool": 27603}, "pooler": {"enabled": False}}
SERVER_PORT = 27609
# A `pgha restore --into NEW` in a page gives the new cluster the source's ports + 10: kept free for it.
RESTORE_INTO_PORTS = (27610, 27611, 27612, 27613)
BLOCK_TIMEOUT_S = 600  # the slowest block a page may hold (an in-place restore, a backup and its verification)
HEALTHY_WITHIN_S = 180
OUTPUT_TAIL = 200  # lines of a failed block's output shown


def _rel(page: Path) -> str:
    return str(page.relative_to(DOCS))


def _cleanup(engine: docker.DockerClient, state: Path) -> None:
    """Every cluster brought up from this state directory (the module's and any a page made), by label."""
    scopes = {SCOPE} | {d.name for d in state.iterdir() if d.is_dir() and d.name != "server"} if state.exists() else {SCOPE}
    for scope in sorted(scopes):
        remove_scope(engine, scope)


@pytest.fixture(scope="module")
def docs_env(engine: docker.DockerClient, base_env: dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`make up` for the docs: a Prefect server and the module's cluster; both gone afterwards."""
    work = tmp_path_factory.mktemp("docs")
    spec_file = work / f"{SCOPE}.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    venv_bin = str(Path(sys.executable).parent)
    env = dict(without_shared_api(base_env), **QUICK_WORKER, PGHA_STATE_DIR=str(work / "state"), PREFECT_HOME=str(work / "prefect"),
               PREFECT_LOCAL_STORAGE_PATH=str(work / "prefect" / "storage"), PGHA_SERVER_PORT=str(SERVER_PORT),
               PGHA_SPEC=str(spec_file), PATH=f"{venv_bin}:{base_env.get('PATH', '')}",
               PYTHONPATH=str(ROOT))  # this checkout's packages, as `python -m` from it would see them
    state = Path(env["PGHA_STATE_DIR"])
    remove_scope(engine, SCOPE)
    try:
        started = time.monotonic()
        res = pgha(env, "server", "start", timeout=600)
        assert res.returncode == 0, f"pgha server start failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        res = pgha(env, "up", timeout=900)
        assert res.returncode == 0, f"pgha up failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        print(f"\ndocs fixture: server and {SCOPE} up in {time.monotonic() - started:.0f}s")
        yield env
    finally:
        pgha(env, "down", "--volumes", "--yes", "--purge-backups", timeout=600)
        _cleanup(engine, state)
        pgha(env, "server", "stop", "--volumes", timeout=120)


def _wait_healthy(env: dict[str, str], page: str) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while True:
        res = pgha(env, "status", timeout=120)
        if res.returncode == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{SCOPE} is not healthy before {page} (an earlier page left it so):\n{res.stdout}{res.stderr}")
        time.sleep(3)


class Shell:
    """One `bash -euo pipefail` fed one block at a time; a block's output is read up to its end marker."""

    def __init__(self, env: dict[str, str], cwd: Path, tmp: Path) -> None:
        self.tmp = tmp
        self.token = f"@@docs-test-{os.getpid()}-{time.monotonic_ns()}@@"
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-euo", "pipefail"], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, n: int, block: Block, timeout: float) -> tuple[str, int | None]:
        """The block's output and its status: 0, the shell's exit code when it stopped, None on a timeout."""
        script = self.tmp / f"block-{n}.sh"
        if block.lang is Lang.PYTHON:
            (self.tmp / f"block-{n}.py").write_text(block.code)
            script.write_text(f'python "{self.tmp}/block-{n}.py"\n')
        else:
            script.write_text(block.code)
        assert self.proc.stdin is not None
        # stdin from /dev/null: a command that reads stdin must not eat the next blocks.
        try:
            self.proc.stdin.write(f'source "{script}" < /dev/null\necho "{self.token} $?"\n')
            self.proc.stdin.flush()
        except BrokenPipeError:  # the shell is gone already
            return "", self.proc.wait()
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                return "".join(out), None
            if line is None:
                return "".join(out), self.proc.wait()
            if self.token in line:
                before = line.split(self.token)[0]
                out.append(before)
                return "".join(out), 0
            out.append(line)

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the shell and whatever the block started
        except ProcessLookupError:
            pass
        self.proc.wait()


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_page_examples(page: Path, docs_env: dict[str, str], tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    name = _rel(page)
    blocks = parse_file(page)
    todo = [b for b in blocks if b.skip is None]
    with capsys.disabled():
        print(f"\n{name}: {len(todo)} block(s) to run, {len(blocks) - len(todo)} skipped")
        for b in blocks:
            if b.skip is not None:
                print(f"  skipped {name}:{b.line} `{b.first_line}`: {b.skip}")
    if not todo:
        return
    _wait_healthy(docs_env, name)
    shell = Shell(docs_env, ROOT, tmp_path)
    try:
        for n, b in enumerate(todo):
            started = time.monotonic()
            output, status = shell.run(n, b, BLOCK_TIMEOUT_S)
            took = time.monotonic() - started
            with capsys.disabled():
                print(f"  ran {name}:{b.line} `{b.first_line}` in {took:.1f}s"
                      + ("" if status == 0 else f": {'TIMEOUT' if status is None else f'exit {status}'}"))
            if status != 0:
                why = f"timed out after {BLOCK_TIMEOUT_S}s" if status is None else f"exited {status}"
                tail = "\n".join(output.splitlines()[-OUTPUT_TAIL:])
                pytest.fail(f"{name}:{b.line}: the {b.lang} block {why}\n--- block ---\n{b.code}"
                            f"--- output (last {OUTPUT_TAIL} lines) ---\n{tail}", pytrace=False)
    finally:
        shell.close()
