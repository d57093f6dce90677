"""The major upgrade's result asks the leader's version again after a transient failure."""

from __future__ import annotations

import pytest

import flows.major_upgrade as M
from stack.errors import DockerError
from stack.spec import ClusterSpec


def test_version_asked_again_after_a_failure_then_none(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[object] = [DockerError("docker exec timed out"), 15]

    def server_major(spec: ClusterSpec, member: str) -> int:
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return int(str(a))

    monkeypatch.setattr(M, "leader", lambda spec: "pg-1")
    monkeypatch.setattr(M.pg_logical, "server_major", server_major)
    assert M._versions(ClusterSpec(), pause_s=0) == 15
    answers[:] = [DockerError("down")] * 3
    assert M._versions(ClusterSpec(), pause_s=0) is None
    assert answers == []
