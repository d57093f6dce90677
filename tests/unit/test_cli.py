"""CLI: user mistakes give one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_bad_spec_one_line(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("nodes: 0\n")
    res = runner.invoke(app, ["up", "--spec", str(f)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgha: error: invalid spec")
    assert "Traceback" not in res.output


def test_unknown_scope_is_refused(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    res = runner.invoke(app, ["status", "--scope", "nothing-here"])
    assert res.exit_code == 2
    assert "no cluster 'nothing-here'" in res.output


def test_dsn_hides_password_by_default(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    res = runner.invoke(app, ["dsn"])
    assert res.exit_code == 0
    ca = f"sslmode=verify-full&sslrootcert={tmp_path}/hy-home-db/tls/ca.crt"
    assert res.output.strip() == f"postgresql://postgres@127.0.0.1:5432/postgres?{ca}"
    res = runner.invoke(app, ["dsn", "--ro"])
    assert res.output.strip() == f"postgresql://postgres@127.0.0.1:5433/postgres?{ca}"
    res = runner.invoke(app, ["dsn", "--show-password"])
    assert res.exit_code == 3 and "run `pgha up` first" in res.output


def test_verb_context_resolves_the_spec_and_refuses_a_busy_cluster(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`Verb`: the spec of --scope/--spec; `not_busy` refuses at once while another flow holds the lock,
    and is skipped with --wait (the flow waits for the lock itself)."""
    from cli.core import Verb
    from stack.errors import PghaError
    from tasks.host.lock import mutating

    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("PGHA_SPEC", raising=False)
    f = tmp_path / "spec.yaml"
    f.write_text("scope: verb-ctx\nnodes: 2\netcd_members: 1\npooler: {enabled: false}\n")
    verb = Verb.open("pause", f, None)
    assert verb.spec.scope == "verb-ctx" and verb.spec.nodes == 2
    assert verb.not_busy() is verb  # nobody holds the lock
    with mutating("verb-ctx", "pgha restart"):
        with pytest.raises(PghaError, match="pgha restart"):
            verb.not_busy()
        assert Verb.open("pause", f, None, wait=30).not_busy().spec == verb.spec
    with pytest.raises(PghaError, match="contradicts"):
        Verb.open("pause", f, "another-scope")
