"""`pgha server start`'s work pool through Prefect's API client: found, created with the process
worker's default job template, or one readable ServerError when the server does not answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

import tasks.prefect_server as ps
from tasks.prefect_endpoint import ServerError


class _Client:
    def __init__(self, read: BaseException | None = None, create: BaseException | None = None) -> None:
        self.read, self.create = read, create
        self.created: list[Any] = []

    def read_work_pool(self, name: str) -> object:
        if self.read is not None:
            raise self.read
        return object()

    def create_work_pool(self, work_pool: Any) -> object:
        if self.create is not None:
            raise self.create
        self.created.append(work_pool)
        return work_pool


def _use(monkeypatch: pytest.MonkeyPatch, client: _Client) -> None:
    @contextmanager
    def fake() -> Iterator[_Client]:
        yield client

    monkeypatch.setattr(ps, "_client", fake)


def test_an_existing_pool_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    c = _Client()
    _use(monkeypatch, c)
    assert ps.ensure_pool() == f"work pool {ps.POOL} exists" and c.created == []


def test_a_missing_pool_is_created_as_a_process_pool_with_its_default_template(monkeypatch: pytest.MonkeyPatch) -> None:
    c = _Client(read=ObjectNotFound(None))
    _use(monkeypatch, c)
    assert ps.ensure_pool() == f"work pool {ps.POOL} created"
    (pool,) = c.created
    assert (pool.name, pool.type) == (ps.POOL, "process")
    assert "job_configuration" in pool.base_job_template and "variables" in pool.base_job_template


def test_a_pool_made_meanwhile_counts_as_existing(monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, _Client(read=ObjectNotFound(None), create=ObjectAlreadyExists(None)))
    assert ps.ensure_pool() == f"work pool {ps.POOL} exists"


@pytest.mark.parametrize("where", ["read", "create"])
def test_a_server_that_does_not_answer_is_one_readable_error(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    down = httpx.ConnectError("refused")
    _use(monkeypatch, _Client(read=down) if where == "read" else _Client(read=ObjectNotFound(None), create=down))
    with pytest.raises(ServerError, match=f"work pool {ps.POOL}: the server at .* did not answer"):
        ps.ensure_pool()
