"""Server, alerts and audit CLI: bad input refused in one line before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from tasks import prefect_server as ps
from tasks import prefect_workers as pw


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("args", [["up", "--wait", "-1"], ["down", "--wait", "90000"], ["drill", "switchover", "--wait", "-5"]])
def test_bad_wait_is_refused(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.output.strip().startswith("pgha: error: --wait must be between 0 and 86400, not ")


@pytest.mark.parametrize("value", ["80", "abc", "70000"])
def test_bad_server_port_is_refused(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    value: str) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PGHA_SERVER_PORT", value)
    res = runner.invoke(app, ["server", "start"])
    assert res.exit_code == 2
    assert res.output.strip() == f"pgha: error: PGHA_SERVER_PORT must be a port number 1024-65535, not {value!r}"
    assert not (tmp_path / "server" / "server.pid").exists()


def test_server_urls_follow_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGHA_SERVER_PORT", raising=False)
    assert ps.api_url() == "http://127.0.0.1:4200/api"
    monkeypatch.setenv("PGHA_SERVER_PORT", "24205")
    assert ps.ui_url() == "http://127.0.0.1:24205"
    env = ps.env()
    assert env["PREFECT_UI_URL"] == "http://127.0.0.1:24205" and env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert Path(env["PGHA_HOME"], "prefect.yaml").exists()


def test_stale_or_foreign_pid_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    p = pw.Proc("worker")
    assert p.pid() is None and p.stop() is False
    p.pid_file.write_text("999999999\n")  # no such process
    assert p.pid() is None
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        p.pid_file.write_text(f"{sleeper.pid}\n")  # alive, but not a prefect process: never signalled
        assert p.pid() is None
        assert p.stop() is False and sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not p.pid_file.exists()


def test_stop_ends_the_whole_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    # A stand-in whose command line says "prefect", with a child in its session, like the server.
    script = tmp_path / "prefect_standin.py"
    script.write_text("import subprocess, sys, time\n"
                      "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                      "time.sleep(60)\n")
    leader = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    p = pw.Proc("server")
    p.pid_file.write_text(f"{leader.pid}\n")
    try:
        deadline = time.monotonic() + 10  # until the child has exec'd (its cmdline names the script)
        while p.pid() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.pid() == leader.pid
        assert p.stop(timeout=10) is True
        leader.wait(5)
        assert not pw._group_alive(leader.pid)
    finally:
        if leader.poll() is None:
            os.killpg(leader.pid, 9)


def test_alerts_apply_without_webhook_is_refused(runner: CliRunner, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("PGHA_ALERT_WEBHOOK_URL", raising=False)
    res = runner.invoke(app, ["alerts", "apply"])
    assert res.exit_code == 2
    assert res.output.strip().startswith("pgha: error: no alert webhook configured: set PGHA_ALERT_WEBHOOK_URL")


def test_alerts_apply_without_server_is_refused(runner: CliRunner, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PGHA_SERVER_PORT", "24208")  # nothing listens there
    monkeypatch.setenv("PGHA_ALERT_WEBHOOK_URL", "http://127.0.0.1:24209/hook")
    res = runner.invoke(app, ["alerts", "apply"])
    assert res.exit_code == 3
    assert res.output.strip() == "pgha: error: no Prefect server answers on http://127.0.0.1:24208; run `make server` first"


def test_audit_of_unknown_scope_is_refused(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    res = runner.invoke(app, ["audit", "--scope", "nothing-here"])
    assert res.exit_code == 2
    assert "no cluster 'nothing-here'" in res.output


def test_deliberate_exit_code_is_not_an_internal_error(runner: CliRunner, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PGHA_SERVER_PORT", "24208")  # nothing listens there
    from tasks import control_plane as cp

    # No engine needed: no container of the server or worker, no database volume yet.
    monkeypatch.setattr(cp, "describe", lambda plane, role: None)
    monkeypatch.setattr(cp, "volume_path", lambda plane: None)
    res = runner.invoke(app, ["server", "status"])
    assert res.exit_code == 1
    assert "internal error" not in res.output and "server_healthy : False" in res.output


def test_alerts_apply_with_missing_or_bad_file_is_refused(runner: CliRunner, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    res = runner.invoke(app, ["alerts", "apply", "--file", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and res.output.strip().startswith("pgha: error: cannot read")
    bad = tmp_path / "bad.yaml"
    bad.write_text("alerts: [{name: x-alert, states: [Sad]}]\n")
    res = runner.invoke(app, ["alerts", "apply", "--file", str(bad)])
    assert res.exit_code == 2 and "unknown state 'Sad'" in res.output
