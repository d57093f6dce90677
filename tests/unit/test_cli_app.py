"""The CLI's one decorator and its usage errors: one line, the right exit code, the API always stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import cli.core as cli_app
from cli.app import app
from cli.core import Done, command
from stack.errors import StateError, WaitTimeout
from stack.results import ScaleResult


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def wait_ready(self) -> None:
        self.calls.append("ready")

    def stop(self) -> None:
        self.calls.append("stop")


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(cli_app, "API", fake)
    return fake


def verb_app(behaviour: BaseException | None) -> typer.Typer:
    """A one-verb app whose verb runs a 'flow' and then raises `behaviour` (or returns a result)."""
    t = typer.Typer(cls=cli_app.PghaGroup)

    def shown(done: Done[ScaleResult]) -> None:
        print(f"plan: {done.result.plan}")

    @t.command()
    @command(shown, flows=True)
    def go(as_json: bool = typer.Option(False, "--json")) -> Done[ScaleResult]:
        cli_app.warm()
        cli_app.run_flow(lambda: None)
        if behaviour is not None:
            raise behaviour
        return Done(ScaleResult(plan="add pg-4", nodes=4, events=["pg-4 streaming"], elapsed_s=9.5))

    @t.command()
    def other() -> None:  # a second verb, so `go` is a subcommand as in pgha
        pass

    return t


@pytest.mark.parametrize(("exc", "code", "line"), [
    (StateError("cluster x is busy"), 3, "pgha: error: cluster x is busy"),
    (KeyboardInterrupt(), 130, "pgha: interrupted"),
    (RuntimeError("boom\nsecond line"), 1, "pgha: internal error: RuntimeError: boom (PGHA_DEBUG=1 shows the traceback)"),
])
def test_errors_are_one_line_with_their_exit_code_and_the_api_stops(api: FakeApi, exc: BaseException, code: int,
                                                                     line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGHA_DEBUG", raising=False)
    res = CliRunner().invoke(verb_app(exc), ["go"])
    assert res.exit_code == code
    assert res.output.strip().splitlines() == [line]
    assert api.calls == ["start", "start", "ready", "stop"]


def test_wait_timeout_also_prints_its_logs(api: FakeApi) -> None:
    res = CliRunner().invoke(verb_app(WaitTimeout("pg-1 to stream", 30, "starting", logs="FATAL: no pg_hba entry")), ["go"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        "pgha: error: timed out after 30s waiting for pg-1 to stream; last seen: starting", "FATAL: no pg_hba entry"]


def test_internal_error_traceback_only_with_pgha_debug(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_DEBUG", "1")
    res = CliRunner().invoke(verb_app(RuntimeError("boom")), ["go"])
    assert res.exit_code == 1 and isinstance(res.exception, RuntimeError)
    assert api.calls[-1] == "stop"


def test_result_rendered_or_dumped_as_json(api: FakeApi) -> None:
    res = CliRunner().invoke(verb_app(None), ["go"])
    assert res.exit_code == 0 and res.output == "plan: add pg-4\n"
    res = CliRunner().invoke(verb_app(None), ["go", "--json"])
    assert res.exit_code == 0
    assert json.loads(res.output) == {"plan": "add pg-4", "nodes": 4, "events": ["pg-4 streaming"], "elapsed_s": 9.5}
    assert api.calls.count("stop") == 2


@pytest.mark.parametrize(("args", "line"), [
    (["scale", "--nodes", "0"], "pgha: error: --nodes must be between 1 and 9, not 0 (see `root scale --help`)"),
    (["scale", "--nodes", "10"], "pgha: error: --nodes must be between 1 and 9, not 10 (see `root scale --help`)"),
    (["up", "--wait", "86401"], "pgha: error: --wait must be between 0 and 86400, not 86401 (see `root up --help`)"),
    (["drill", "switchover", "--interval-ms", "5"],
     "pgha: error: --interval-ms must be between 10 and 5000, not 5 (see `root drill --help`)"),
    (["upgrade", "--image", "x", "--node-timeout", "3601"],
     "pgha: error: --node-timeout must be between 10 and 3600, not 3601 (see `root upgrade --help`)"),
    (["drill", "meteor"], "pgha: error: invalid value for 'kind': 'meteor' is not one of 'switchover', 'switchover-pooled', 'graceful-stop', "
                          "'hard-kill', 'partition', 'replica-kill', 'etcd-member-loss', 'haproxy-restart', 'freeze', "
                          "'etcd-quorum-loss', 'host-loss', 'host-partition', 'site-switchover', 'site-loss'. "
                          "(see `root drill --help`)"),
    (["backup", "--type", "weekly"],
     "pgha: error: invalid value for '--type': 'weekly' is not one of 'full', 'diff', 'incr'. (see `root backup --help`)"),
    (["status", "--colour"], "pgha: error: no such option: --colour (see `root status --help`)"),
    (["restore"], "pgha: error: missing option '--to'. (see `root restore --help`)"),
])
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], line: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, api: FakeApi) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [line]
    assert api.calls == []  # refused before anything started


def test_updates_enum_matches_the_image_builder() -> None:
    from cli.cluster import Updates
    from tasks.images import UPDATES

    assert tuple(u.value for u in Updates) == UPDATES


def test_ephemeral_api_is_not_started_when_a_server_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.api import EphemeralApi

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    api = EphemeralApi()
    try:
        api.start()
        api.wait_ready()
        assert not api.running
    finally:
        api.stop()
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"


def test_ephemeral_api_starts_once_publishes_its_url_and_stops(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from cli.api import EphemeralApi

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    with temporary_settings(updates={PREFECT_HOME: tmp_path}):
        api = EphemeralApi()
        try:
            api.start()
            proc = api._proc
            api.start()  # idempotent: still the one process
            assert proc is not None and api._proc is proc
            assert os.environ["PREFECT_API_URL"] == api.url and os.environ["PREFECT_UI_URL"] == ""
            api.wait_ready()
        finally:
            api.stop()
        assert proc.poll() is not None  # ended, and reaped
        assert "PREFECT_API_URL" not in os.environ and "PREFECT_UI_URL" not in os.environ
        assert not PREFECT_API_URL.value()


def test_images_build_reads_pgha_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Like every verb: without --spec, $PGHA_SPEC names the spec (a bad one is refused in one line)."""
    bad = tmp_path / "env-spec.yaml"
    bad.write_text("scope: env-lab\netcd_members: 2\n")
    monkeypatch.setenv("PGHA_SPEC", str(bad))
    res = CliRunner().invoke(app, ["images", "build"])
    assert res.exit_code == 2, res.output
    assert "env-spec.yaml" in res.output and "etcd_members" in res.output and "Traceback" not in res.output


def test_the_ephemeral_api_asks_for_an_auth_string_made_for_this_process(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    """The spawned API gets PREFECT_SERVER_API_AUTH_STRING in its environment (never argv); this
    process's Prefect client gets the same string as PREFECT_API_AUTH_STRING, taken back on stop."""
    from prefect.settings import PREFECT_HOME, temporary_settings

    import cli.api as api_mod

    seen: dict[str, object] = {}

    class FakeProc:
        def __init__(self, argv: list[str], env: dict[str, str], **_: object) -> None:
            seen["argv"], seen["env"] = argv, env

        def poll(self) -> int:
            return 0

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    monkeypatch.setenv("PGHA_NO_SERVER", "1")
    monkeypatch.setattr(api_mod.subprocess, "Popen", FakeProc)
    with temporary_settings(updates={PREFECT_HOME: tmp_path}):
        api = api_mod.EphemeralApi()
        try:
            api.start()
            env = seen["env"]
            assert isinstance(env, dict)
            token = env["PREFECT_SERVER_API_AUTH_STRING"]
            assert token.startswith("pgha:") and len(token) > 40
            assert os.environ["PREFECT_API_AUTH_STRING"] == token
            assert not any(token in str(a) for a in seen["argv"])  # type: ignore[attr-defined]
            assert api_mod.EphemeralApi()._auth != token  # one per process (per API), never shared
        finally:
            api.stop()
        assert "PREFECT_API_AUTH_STRING" not in os.environ


def test_every_verb_is_in_the_table_of_areas() -> None:
    """`pgha VERB` imports only VERB's area (`cli.app.VERB_AREAS`): the table names every verb's module."""
    import typer.main

    import cli.app

    group = typer.main.get_command(app)
    registered = {}
    for info in app.registered_commands:
        registered[info.name or typer.main.get_command_name(info.callback.__name__)] = info.callback.__module__
    for info in app.registered_groups:
        registered[str(info.name)] = info.typer_instance.registered_commands[0].callback.__module__
    assert set(registered) == set(group.commands)  # type: ignore[attr-defined]
    assert {v: f"cli.{a}" for v, a in cli.app.VERB_AREAS.items()} == registered


def test_a_verb_run_imports_only_its_area() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['pgha', 'audit', '--help']\n"
            "import cli.app\n"
            "try:\n    cli.app.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('cli.') and m not in ('cli.app', 'cli.core', 'cli.api')))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stderr[-800:]
    assert r.stdout.strip().splitlines()[-1] == "['cli.drill', 'cli.render']"
    assert "--scope" in r.stdout
