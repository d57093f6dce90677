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


ONE_LINE = """\
# a comment
deb http://ftp.example.org/debian trixie main
deb-src http://src.example.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian.gpg] http://security.example.org/debian-security trixie-security main
"""
DEB822 = """\
Types: deb
URIs: http://deb822.example.org/debian/
Suites: trixie trixie-updates
Components: main
"""


def test_mirrors_come_from_the_hosts_apt_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGHA_DEBIAN_MIRROR", raising=False)
    monkeypatch.delenv("PGHA_DEBIAN_SECURITY_MIRROR", raising=False)
    monkeypatch.setattr(images, "APT_DIR", tmp_path)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    # deb822 only: its URI (trailing slash dropped); no security source -> the main mirror's sibling.
    assert images.host_debian_mirror() == "http://deb822.example.org/debian"
    assert images.host_security_mirror() == "http://deb822.example.org/debian-security"
    # sources.list is read first; deb-src lines and [options] are handled.
    (tmp_path / "sources.list").write_text(ONE_LINE)
    assert images.apt_source_uris("debian") == ["http://ftp.example.org/debian", "http://deb822.example.org/debian"]
    assert images.host_security_mirror() == "http://security.example.org/debian-security"
    # The environment overrides what apt says.
    monkeypatch.setenv("PGHA_DEBIAN_MIRROR", "http://mirror.example/debian")
    monkeypatch.setenv("PGHA_DEBIAN_SECURITY_MIRROR", "http://sec.example/debian-security")
    assert images.host_debian_mirror() == "http://mirror.example/debian"
    assert images.host_security_mirror() == "http://sec.example/debian-security"


def test_without_apt_sources_the_default_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGHA_DEBIAN_MIRROR", raising=False)
    monkeypatch.delenv("PGHA_DEBIAN_SECURITY_MIRROR", raising=False)
    monkeypatch.setattr(images, "APT_DIR", tmp_path / "absent")
    assert images.host_debian_mirror() == images.DEFAULT_MIRROR
    assert images.host_security_mirror() == images.DEFAULT_MIRROR + "-security"
