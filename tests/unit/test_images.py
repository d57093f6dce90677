"""Image tags follow the build files and the base; the host's apt mirror is found."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stack.spec import ClusterSpec, parse_spec
from tasks import images


def test_tag_changes_with_build_files_base_and_major(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "image"
    shutil.copytree(images.IMAGE_DIR, copy)
    monkeypatch.setattr(images, "IMAGE_DIR", copy)
    spec = ClusterSpec()
    t1 = images.image_tag(spec, "debian:trixie-slim")
    assert t1.startswith("pgha/node:pg17-")
    assert images.image_tag(spec, "debian:trixie-slim") == t1
    assert images.image_tag(spec, "pgha/base:trixie") != t1
    assert images.image_tag(parse_spec({"postgres_version": 15}), "debian:trixie-slim").startswith("pgha/node:pg15-")
    (copy / "Dockerfile").write_text((copy / "Dockerfile").read_text() + "\n# changed\n")
    assert images.image_tag(spec, "debian:trixie-slim") != t1


def test_mirror_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_DEBIAN_MIRROR", "http://mirror.example/debian")
    assert images.host_debian_mirror() == "http://mirror.example/debian"
