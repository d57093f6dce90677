"""What makes `pgha audit` quicker without changing what it does: the process's exit, the flow's
recorded parameters, the run's settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli.core import exit_code
from stack.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (1, 1), (130, 130), ("bye", 1)])
def test_exit_code_is_what_sys_exit_gives(code: object, status: int) -> None:
    assert exit_code(code) == status


def test_exit_now_joins_threads_runs_exit_handlers_and_flushes() -> None:
    """A non-daemon thread ends its work, an atexit handler runs, buffered output is written, the status
    is kept: what a normal exit does before it frees the modules (which `exit_now` skips)."""
    code = ("import atexit, sys, threading, time\n"
            "from cli.core import exit_now\n"
            "def late():\n    time.sleep(0.2)\n    sys.stdout.write('thread done\\n')\n"
            "threading.Thread(target=late).start()\n"
            "atexit.register(lambda: sys.stdout.write('atexit ran\\n'))\n"
            "sys.stdout.write('no newline yet')\n"
            "exit_now(3)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 3, r.stderr
    assert r.stdout == "no newline yetthread done\natexit ran\n"


def test_main_ends_fast_only_after_a_fast_exit_verb_ran() -> None:
    """`pgha audit --help` runs no verb: main raises SystemExit as before (callers in-process catch it)."""
    code = ("import sys; sys.argv = ['pgha', 'audit', '--help']\n"
            "import cli.app\n"
            "try:\n    cli.app.main()\nexcept SystemExit as exc:\n    print('raised', exc.code)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-800:]
    assert r.stdout.strip().splitlines()[-1] == "raised 0"


def test_a_fast_exit_verb_ends_the_process_with_its_status(tmp_path: Path) -> None:
    """The verb's output is all there and its exit status is the CLI's (1: a critical audit)."""
    code = ("import sys, atexit, typer\n"
            "import cli.app\n"
            "from cli.core import Done, app, command\n"
            "@app.command('fast-verb')\n"
            "@command(lambda done: print('rendered', done.result), fast_exit=True, failed=lambda r: r == 'bad')\n"
            "def fast_verb() -> Done[str]:\n    return Done('bad')\n"
            "@app.command('other-verb')\n"
            "def other() -> None:\n    pass\n"
            "atexit.register(lambda: print('atexit ran'))\n"
            "sys.argv = ['pgha', 'fast-verb']\n"
            "try:\n    cli.app.main()\nexcept SystemExit:\n    print('not reached')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 1, r.stderr[-800:]
    assert r.stdout.splitlines() == ["rendered bad", "atexit ran"]


def test_audit_flow_records_the_parameters_prefects_encoder_would() -> None:
    """The health-audit run's parameters as Prefect's FastAPI encoder gives them, without importing it."""
    from fastapi.encoders import jsonable_encoder

    from flows.audit import audit

    spec = parse_spec({"scope": "lab", "nodes": 3, "roles": [{"name": "app", "connection_limit": 50}],
                       "pooler": {"enabled": False}, "backup": {"retention_full": 3},
                       "audit": {"lag_warn_s": 2, "lag_critical_s": 5}})
    for params in ({"spec": spec}, {"spec": spec, "scope": "lab"}, {"scope": ""}):
        assert audit.serialize_parameters(params) == {k: jsonable_encoder(v) for k, v in params.items()}
    odd = {"spec": spec, "when": Path("/x")}  # not a model nor a plain value: Prefect's own way
    assert audit.serialize_parameters(odd)["when"] == "/x"


def test_audit_flow_serializes_without_fastapi() -> None:
    code = ("import sys\nfrom flows.audit import audit\nfrom stack.spec import ClusterSpec\n"
            "audit.serialize_parameters({'spec': ClusterSpec(), 'scope': ''})\n"
            "print('fastapi' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-800:]
    assert r.stdout.strip().splitlines()[-1] == "False"


def test_only_prefects_drain_notice_is_dropped() -> None:
    import logging

    from cli.drill import QuietDrain

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("EventsWorker", logging.WARNING, __file__, 1, msg, None, None)

    assert not QuietDrain().filter(record("Still processing items: 5 items remaining..."))
    assert QuietDrain().filter(record("Service 'EventsWorker' queue is full (5 items), dropping item"))
