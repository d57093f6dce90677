"""One mutating flow per cluster: a second holder is refused with the first one's name."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from stack.errors import StateError
from tasks.host.lock import mutating


def hold(state: str, ready: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event) -> None:
    import os

    os.environ["PGHA_STATE_DIR"] = state
    with mutating("lab", "drill flow run 'brave-otter'"):
        ready.set()
        release.wait(10)


def start_holder(tmp_path: Path) -> tuple[multiprocessing.process.BaseProcess, multiprocessing.synchronize.Event]:
    """Another process that holds cluster 'lab's lock until its release event is set."""
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=hold, args=(str(tmp_path), ready, release))
    p.start()
    assert ready.wait(10)
    return p, release


def test_second_holder_refused_naming_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    p, release = start_holder(tmp_path)
    try:
        with pytest.raises(StateError) as info, mutating("lab", "bootstrap"):
            pass
        assert "cluster lab is busy: drill flow run 'brave-otter' (pid" in str(info.value)
        # Another cluster is not blocked.
        with mutating("other", "bootstrap"):
            pass
    finally:
        release.set()
        p.join(10)
    with mutating("lab", "bootstrap"):  # released when the holder ended
        pass


def test_lock_released_when_holder_dies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    p, _ = start_holder(tmp_path)
    p.kill()
    p.join(10)
    time.sleep(0.1)
    with mutating("lab", "drill"):
        pass


def test_wait_for_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    p, release = start_holder(tmp_path)
    multiprocessing.get_context("fork").Process(target=lambda: (time.sleep(1), release.set())).start()
    t0 = time.monotonic()
    with mutating("lab", "drill", wait_seconds=10):
        assert time.monotonic() - t0 >= 0.5
    p.join(10)


def test_holder_name_outside_and_inside_a_flow_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.runtime.flow_run as fr
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    from tasks.host.lock import holder_name

    assert holder_name("drill") == "drill"  # no flow run: just the operation
    monkeypatch.setattr(fr, "name", "brave-otter", raising=False)
    monkeypatch.setattr(fr, "id", "79e7fa45", raising=False)
    with temporary_settings(updates={PREFECT_UI_URL: "http://127.0.0.1:4200"}):
        assert holder_name("drill") == ("drill flow run 'brave-otter' "
                                        "(id 79e7fa45, http://127.0.0.1:4200/runs/flow-run/79e7fa45)")
    with temporary_settings(updates={PREFECT_UI_URL: ""}):
        assert holder_name("drill") == "drill flow run 'brave-otter' (id 79e7fa45)"
