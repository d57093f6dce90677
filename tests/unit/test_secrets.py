"""Passwords: generated once into a 0600 file, POSTGRES_PASSWORD honoured, never shown."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from stack.errors import StateError
from tasks.host.secrets import load_or_create


def test_generated_once_and_kept(tmp_path: Path) -> None:
    f = tmp_path / "c" / "secrets.json"
    a = load_or_create(f, env={})
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert len(set(a.values())) == 6 and all(len(v) >= 30 for v in a.values())
    assert load_or_create(f, env={}) == a


def test_postgres_password_used_then_checked(tmp_path: Path) -> None:
    f = tmp_path / "secrets.json"
    s = load_or_create(f, env={"POSTGRES_PASSWORD": "seed-pw"})
    assert s.superuser == "seed-pw"
    assert load_or_create(f, env={"POSTGRES_PASSWORD": "seed-pw"}).superuser == "seed-pw"
    with pytest.raises(StateError) as info:
        load_or_create(f, env={"POSTGRES_PASSWORD": "other"})
    assert "differs" in str(info.value) and "other" not in str(info.value) and "seed-pw" not in str(info.value)


def test_never_printed(tmp_path: Path) -> None:
    s = load_or_create(tmp_path / "s.json", env={"POSTGRES_PASSWORD": "visible?"})
    assert "visible?" not in repr(s) and "visible?" not in str(s) and "visible?" not in f"{s}"


def test_damaged_file_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    f.write_text("{not json")
    with pytest.raises(StateError, match="unreadable or damaged"):
        load_or_create(f, env={})
