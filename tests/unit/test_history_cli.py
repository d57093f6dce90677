"""`pgha history` reads one snapshot (Patroni's view and its /history, asked side by side)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tasks.observe as observe_mod
from cli.app import app
from stack.cluster import ClusterView, Member, MemberRole, TimelineSwitch
from stack.snapshot import ClusterSnapshot, Observed, PatroniState

SWITCH = TimelineSwitch(timeline=1, lsn=50331808, reason="no recovery target specified",
                        time="2026-12-07T09:00:00+00:00", new_leader="pg-2")


def _snapshot(spec: Any, parts: Any, deep: bool, patroni_error: str = "") -> ClusterSnapshot:
    view = ClusterView(members=[Member("pg-1", MemberRole.REPLICA, "streaming", 2),
                                Member("pg-2", MemberRole.LEADER, "running", 2)])
    patroni = Observed(None, patroni_error, True) if patroni_error else Observed(PatroniState(view=view), "", True)
    return ClusterSnapshot(scope=spec.scope, patroni=patroni, history=Observed([SWITCH], "", True))


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("PGHA_SPEC", raising=False)
    return tmp_path


def test_history_is_read_from_one_snapshot(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, ...]] = []

    def fake(spec: Any, parts: Any, deep: bool = True) -> ClusterSnapshot:
        asked.append(tuple(parts))
        return _snapshot(spec, parts, deep)

    monkeypatch.setattr(observe_mod, "observe", fake)
    r = CliRunner().invoke(app, ["history", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert asked == [observe_mod.HISTORY_PARTS] == [("patroni", "history")]
    assert (got["leader"], got["timeline"]) == ("pg-2", 2)
    assert [(row["timeline"], row["new_leader"]) for row in got["rows"]] == [(2, "pg-2")]


def test_patroni_not_answering_is_one_line(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observe_mod, "observe",
                        lambda spec, parts, deep=True: _snapshot(spec, parts, deep, "no Patroni node answers /cluster"))
    r = CliRunner().invoke(app, ["history"])
    assert r.exit_code == 1
    assert r.output.strip() == "pgha: error: no Patroni node answers /cluster"
