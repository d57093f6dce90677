"""Many hosts: a member's config directory as a tar for its engine, and whether a push is due.

On the local engine a member bind-mounts its rendered config directory
(`tasks.host.state.config_dir`) read-only at /etc/pgha. An engine of `hosts:` is another
machine (or, in the lab, another Docker daemon with its own filesystem), where that path does
not exist: there the directory becomes a Docker volume on that engine, `<container>-etc`, filled
through the engine API (`Engine.push_config`, the one function that writes it) and mounted
read-only at /etc/pgha as before. This module is the part without the engine: the tar (root
files 0600, directories 0700, the same layout as the state directory), its digest, and the
decision whether and what to push, read from the manifest the last push left in the volume.

The manifest (`.pgha-config`, JSON: the digest and the file names) holds no secret; it lets a
push be skipped when the volume already holds this content (one `get_archive` call instead of a
helper container) and lets files removed from the state directory be removed from the volume.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MANIFEST = ".pgha-config"
SUFFIX = "-etc"
LABEL_ETC = "pgha.etc"  # on config volumes and push helpers: `down` removes them with the containers


def volume_name(container: str) -> str:
    """The config volume of a member's container on its engine."""
    return f"{container}{SUFFIX}"


def helper_name(container: str) -> str:
    """The short-lived container that fills the volume (created, given the tar, removed)."""
    return f"{volume_name(container)}-push"


@dataclass(frozen=True)
class Snapshot:
    """A config directory as it will land in the volume."""

    tar: bytes = field(repr=False)  # the files, then the manifest last
    digest: str
    files: tuple[str, ...]  # relative paths of the regular files, sorted


def _entry(name: str, mode: int, kind: bytes, size: int = 0, mtime: float = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.mtime = kind, mode, size, int(mtime)
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def snapshot(root: Path, now: float | None = None) -> Snapshot:
    """Tar of every regular file under `root` (root:root, files 0600, directories 0700).

    The digest covers names and contents only (not times), so the same files give the same
    digest on every run. A write in progress (`*.tmp`, `write_private`'s temporary) is left out.
    """
    files: list[tuple[str, bytes]] = []
    dirs: list[str] = []
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                continue
            if p.is_dir():
                dirs.append(rel)
            elif p.is_file() and not p.name.endswith(".tmp") and rel != MANIFEST:
                files.append((rel, p.read_bytes()))
    h = hashlib.sha256()
    for rel, data in files:
        h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    digest = h.hexdigest()
    names = tuple(rel for rel, _ in files)
    t = time.time() if now is None else now
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            tar.addfile(_entry(d, 0o700, tarfile.DIRTYPE, mtime=t))
        for rel, data in files:
            tar.addfile(_entry(rel, 0o600, tarfile.REGTYPE, len(data), t), io.BytesIO(data))
        man = json.dumps({"digest": digest, "files": list(names)}).encode()
        tar.addfile(_entry(MANIFEST, 0o600, tarfile.REGTYPE, len(man), t), io.BytesIO(man))
    return Snapshot(tar=buf.getvalue(), digest=digest, files=names)


@dataclass(frozen=True)
class Plan:
    """What a push does: nothing, or write the tar after removing the stale files."""

    push: bool
    remove: tuple[str, ...] = ()  # relative paths in the volume no longer in the state directory
    reason: str = ""


def _safe(rel: object) -> bool:
    if not isinstance(rel, str) or not rel or rel.startswith("/"):
        return False
    return ".." not in PurePosixPath(rel).parts


def plan(snap: Snapshot, manifest: bytes | None) -> Plan:
    """Decide from the manifest the volume holds (None: none could be read)."""
    if manifest is None:
        return Plan(True, (), "the volume holds no pushed config")
    try:
        got = json.loads(manifest)
        digest, names = str(got["digest"]), list(got["files"])
    except (ValueError, KeyError, TypeError):
        return Plan(True, (), "the volume's manifest is unreadable")
    if digest == snap.digest:
        return Plan(False, (), "unchanged")
    stale = sorted({n for n in names if _safe(n)} - set(snap.files))
    return Plan(True, tuple(stale), "changed")


def read_member(archive: bytes, name: str) -> bytes | None:
    """One file's bytes out of the tar `get_archive` returns (None when it is not a regular file there)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
            for ti in tar.getmembers():
                if PurePosixPath(ti.name).name == name and ti.isfile():
                    fh = tar.extractfile(ti)
                    return fh.read() if fh is not None else None
    except tarfile.TarError:
        return None
    return None
