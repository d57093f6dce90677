"""The audit's connection through HAProxy is tried once more after a connect timeout, not after a refusal."""

from __future__ import annotations

from typing import Any

import pytest

import tasks.postgres as P
from stack.errors import PostgresError
from stack.spec import ClusterSpec


class _Conn:
    def __init__(self) -> None:
        self.sql: list[str] = []

    def __enter__(self) -> _Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str) -> None:
        self.sql.append(sql)


def _connect_answers(monkeypatch: pytest.MonkeyPatch, answers: list[Any]) -> list[Any]:
    def connect(*args: object, **kwargs: object) -> _Conn:
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    monkeypatch.setattr(P, "connect", connect)
    return answers


def test_a_connect_timeout_is_tried_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = _Conn()
    left = _connect_answers(monkeypatch, [PostgresError("127.0.0.1:5432: connection timeout expired"), conn])
    with P._audit_connect(ClusterSpec(), None) as c:  # type: ignore[arg-type]
        assert c is conn
    assert left == [] and conn.sql == [f"set statement_timeout = '{P.AUDIT_STATEMENT_TIMEOUT}'"]


def test_a_refusal_or_a_second_timeout_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = PostgresError("127.0.0.1:5432: connection refused")
    _connect_answers(monkeypatch, [refused, _Conn()])
    with pytest.raises(PostgresError, match="refused"), P._audit_connect(ClusterSpec(), None):  # type: ignore[arg-type]
        pass
    timeout = PostgresError("127.0.0.1:5432: connection timeout expired")
    _connect_answers(monkeypatch, [timeout, timeout, _Conn()])
    with pytest.raises(PostgresError, match="timeout expired"), P._audit_connect(ClusterSpec(), None):  # type: ignore[arg-type]
        pass
