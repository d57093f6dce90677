"""The control image (`pgha/control:py<XY>-<hash>`): the Prefect server and worker, built offline.

Containers here cannot use PyPI (the TLS path the host's pip goes through is not trusted inside
a build), and no registry answers, so the image is made from what this machine already has:
a Debian base (pulled, or built with debootstrap as for the node image) whose python3 matches
the host venv's Python (3.11: bookworm, 3.13: trixie), and the files of the distributions the
host venv has installed for pgha (its dependency closure, read from their metadata and copied
into the build context). The tag hashes the build files, the base and every `name==version`,
so a changed dependency gives a new image.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

from stack.errors import ImageError
from tasks import docker_images
from tasks.docker_engine import Engine
from tasks.docker_hosts import local_engine
from tasks.images import BASE_REPO, _debootstrap, _exists, build_image

CONTROL_DIR = Path(__file__).resolve().parent.parent / "stack" / "control"
REPO = "pgha/control"
# Debian's python3 in each suite (Debian keeps one upstream release per suite for its whole life)
SUITE_OF_PYTHON = {(3, 11): ("bookworm", "3.11.2"), (3, 13): ("trixie", "3.13.5")}
ROOT_DIST = "pgha"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str = ROOT_DIST) -> tuple[list[md.Distribution], list[str]]:
    """The installed distributions `root` needs under the image's Python (its requirements,
    recursively, extras followed, environment markers evaluated for Debian's python3), without
    `root` itself (the worker runs pgha's code from the checkout); and the requirements this venv
    does not have because the host's Python does not need them (e.g. `async-timeout; python_full_version
    < '3.11.3'`), which the build fetches as wheels."""
    seen: dict[str, tuple[md.Distribution, set[str]]] = {}
    missing: dict[str, str] = {}
    _, full = python_suite()
    image_env = {"python_full_version": full, "python_version": full.rsplit(".", 1)[0]}

    def walk(name: str, extras: frozenset[str], spec: str = "") -> None:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing[_norm(name)] = f"{_norm(name)}{spec}"
            return
        key = _norm(dist.metadata["Name"])
        if key in seen and extras <= seen[key][1]:
            return
        seen.setdefault(key, (dist, set()))[1].update(extras)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({**image_env, "extra": e}) for e in (extras or {""})):
                continue
            walk(req.name, frozenset(req.extras), str(req.specifier))

    walk(root, frozenset())
    if _norm(root) not in seen:
        raise ImageError(f"{root} is not installed in this venv: pip install -e . first")
    return [d for k, (d, _) in sorted(seen.items()) if k != _norm(root)], sorted(missing.values())


def _pins(dists: list[md.Distribution], missing: list[str]) -> str:
    return "\n".join([*(f"{_norm(d.metadata['Name'])}=={d.version}" for d in dists), *missing])


def python_suite() -> tuple[str, str]:
    """(Debian suite, "X.Y.Z" of its python3) that runs the host venv's compiled packages."""
    ver = sys.version_info[:2]
    if ver not in SUITE_OF_PYTHON:
        raise ImageError(f"the control image copies this venv's packages, built for Python {ver[0]}.{ver[1]}; "
                         f"Debian ships {', '.join(f'{a}.{b}' for a, b in SUITE_OF_PYTHON)}: "
                         "make the venv with one of those")
    return SUITE_OF_PYTHON[ver]


def control_tag(base: str, pins: str) -> str:
    h = hashlib.sha256()
    for path in sorted(CONTROL_DIR.iterdir()):
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(f"|{base}|{pins}".encode())
    _, full = python_suite()
    return f"{REPO}:py{''.join(full.split('.')[:2])}-{h.hexdigest()[:12]}"


def _download(missing: list[str], dest: Path, full: str) -> None:
    """Wheels for the requirements the image's Python needs and this venv lacks, through the host's
    own pip configuration (its index or mirror; containers here reach no package index)."""
    dest.mkdir(parents=True, exist_ok=True)
    if not missing:
        return
    r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        "--python-version", full, "-d", str(dest), *missing],
                       capture_output=True, text=True, timeout=300, check=False)
    if r.returncode != 0:
        raise ImageError(f"the control image needs {', '.join(missing)} (not in this venv) and pip cannot fetch "
                         f"it: {r.stderr.strip()[-200:]}")


def _base(suite: str, engine: Engine, log: list[str]) -> str:
    for ref in (f"debian:{suite}-slim", f"{BASE_REPO}:{suite}"):
        if _exists(ref, engine):
            return ref
    if docker_images.pull(engine, f"debian:{suite}-slim"):
        return f"debian:{suite}-slim"
    log.append(f"cannot pull debian:{suite}-slim; building {BASE_REPO}:{suite} with debootstrap")
    _debootstrap(suite, f"{BASE_REPO}:{suite}", log)
    return f"{BASE_REPO}:{suite}"


def _copy_dists(dists: list[md.Distribution], dest: Path) -> int:
    """Every file each distribution installed under site-packages (per its RECORD), into `dest`."""
    n = 0
    for dist in dists:
        site = Path(str(dist.locate_file("")))
        for rel in dist.files or []:
            src = Path(str(dist.locate_file(rel)))
            try:
                inside = src.resolve().relative_to(site.resolve())
            except ValueError:
                continue  # console scripts (../../bin/...) and data files outside site-packages
            if "__pycache__" in inside.parts or not src.is_file():
                continue
            target = dest / inside
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            n += 1
    return n


def ensure_control_image(engine: Engine | None = None) -> tuple[str, list[str]]:
    """The control image for this venv, built if missing. Returns (tag, what was done)."""
    engine = engine or local_engine()
    log: list[str] = []
    suite, full = python_suite()
    py = full.rsplit(".", 1)[0]
    dists, missing = closure()
    pins = _pins(dists, missing)
    # The image alone is enough (an engine it was loaded into need not hold its base).
    found = [t for ref in (f"debian:{suite}-slim", f"{BASE_REPO}:{suite}")
             for t in [control_tag(ref, pins)] if _exists(t, engine)]
    if found:
        return found[0], log
    base = _base(suite, engine, log)
    tag = control_tag(base, pins)
    with tempfile.TemporaryDirectory(prefix="pgha-control-") as tmp:
        ctx = Path(tmp)
        for path in CONTROL_DIR.iterdir():
            if path.is_file():
                shutil.copy2(path, ctx / path.name)
        n = _copy_dists(dists, ctx / "site-packages")
        _download(missing, ctx / "wheels", full)
        (ctx / "pins.txt").write_text(pins + "\n")
        log.append(f"building {tag} FROM {base}: python {full}, {len(dists)} distributions ({n} files) "
                   f"from this venv{', fetched ' + ', '.join(missing) if missing else ''}")
        build_image(engine, ctx, tag, buildargs={"BASE": base, "PY": py},
                    labels={"pgha.image": "control", "pgha.base": base})
    return tag, log
