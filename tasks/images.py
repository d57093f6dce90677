"""Image builds: pgha's one node image, on a Debian base pulled or built with debootstrap.

The tag is `pgha/node:pg<major>-<hash>`, the hash covering the build files, the base image
and the package set, so any change to them gives a new tag and an old cluster keeps its
image until it is upgraded.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from stack.errors import ImageError
from stack.spec import ClusterSpec
from tasks import docker_images
from tasks.docker_engine import Engine
from tasks.docker_hosts import local_engine

IMAGE_DIR = Path(__file__).resolve().parent.parent / "stack" / "image"
REPO = "pgha/node"
BASE_REPO = "pgha/base"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_DIR = Path("/etc/apt")  # where the host's apt sources are read (a module name so tests can point it elsewhere)
UPDATES = ("none", "security")  # which extra apt suites a build takes its packages from


def _exists(ref: str, engine: Engine) -> bool:
    return docker_images.has_image(engine, ref)


def build_files_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(IMAGE_DIR.iterdir()):
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def image_tag(spec: ClusterSpec, base: str) -> str:
    h = hashlib.sha256(f"{build_files_digest()}|{base}|{spec.postgres_version}".encode()).hexdigest()[:12]
    return f"{REPO}:pg{spec.postgres_version}-{h}"


def host_debian_mirror() -> str:
    """The Debian mirror the host's apt already uses (so offline machines keep working)."""
    if env := os.environ.get("PGHA_DEBIAN_MIRROR"):
        return env
    candidates = apt_source_uris("debian")
    return candidates[0] if candidates else DEFAULT_MIRROR


def apt_source_uris(path_end: str) -> list[str]:
    """Mirror URIs ending in /<path_end> in the host's apt sources (one-line and deb822 formats)."""
    found: list[str] = []
    apt = APT_DIR
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))] if apt.exists() else []
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        found += re.findall(rf"^deb\s+(?:\[[^\]]*\]\s+)?(\S+/{path_end})/?\s", text, re.M)
        found += re.findall(rf"^URIs:\s*(\S+/{path_end})/?\s*$", text, re.M)
    return found


def host_security_mirror() -> str:
    """Where `<suite>-security` lives: $PGHA_DEBIAN_SECURITY_MIRROR, the host's apt sources, else
    the main mirror's sibling `.../debian-security` (the layout of every Debian mirror)."""
    if env := os.environ.get("PGHA_DEBIAN_SECURITY_MIRROR"):
        return env
    if found := apt_source_uris("debian-security"):
        return found[0]
    return host_debian_mirror().rstrip("/") + "-security"


def security_base_dockerfile(base: str, suite: str, mirror: str) -> str:
    """A one-layer base on top of `base` whose apt also reads `<suite>-security`.

    The node image's own build files stay the same; only its base differs, so the security
    build differs from the plain one by exactly the packages the security suite updates.
    """
    line = f"deb {mirror} {suite}-security main"
    return (f"FROM {base}\n"
            f"RUN echo '{line}' > /etc/apt/sources.list.d/pgha-security.list\n"
            'LABEL pgha.image="base" pgha.updates="security"\n')


def security_base_tag(base: str, suite: str) -> str:
    """One security base per plain base (a spec's base_image gets its own)."""
    return f"{BASE_REPO}:{suite}-security-{hashlib.sha256(base.encode()).hexdigest()[:8]}"


def _ensure_security_base(base: str, suite: str, log: list[str], engine: Engine) -> str:
    tag = security_base_tag(base, suite)
    if _exists(tag, engine):
        return tag
    mirror = host_security_mirror()
    log.append(f"building {tag} FROM {base} with {suite}-security from {mirror}")
    docker_images.build_dockerfile(engine, tag, security_base_dockerfile(base, suite, mirror))
    return tag


def _debootstrap(suite: str, tag: str, log: list[str]) -> None:
    if shutil.which("debootstrap") is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=False,
                           capture_output=True, timeout=300)
        if shutil.which("debootstrap") is None:
            raise ImageError("no base image and no debootstrap to build one: apt-get install debootstrap "
                             f"(as root), or pull debian:{suite}-slim")
    if os.geteuid() != 0:
        raise ImageError(f"building the base image with debootstrap needs root; or pull debian:{suite}-slim")
    mirror = host_debian_mirror()
    log.append(f"debootstrap {suite} from {mirror}")
    with tempfile.TemporaryDirectory(prefix="pgha-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        r = subprocess.run(["debootstrap", "--variant=minbase", suite, str(root), mirror],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            tail = " | ".join((r.stdout + r.stderr).strip().splitlines()[-3:])
            raise ImageError(f"debootstrap {suite} from {mirror} failed: {tail}")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise ImageError(f"docker import of the {suite} rootfs failed: {imp.stderr.strip()[:200]}")


def ensure_base(spec: ClusterSpec, log: list[str], engine: Engine) -> str:
    """A Debian base image for the spec's suite: given, local, pulled, or built offline."""
    if spec.base_image:
        if _exists(spec.base_image, engine):
            return spec.base_image
        if docker_images.pull(engine, spec.base_image):
            return spec.base_image
        raise ImageError(f"base image {spec.base_image} is neither present nor pullable")
    official = f"debian:{spec.suite}-slim"
    own = f"{BASE_REPO}:{spec.suite}"
    for ref in (official, own):
        if _exists(ref, engine):
            return ref
    if docker_images.pull(engine, official):
        log.append(f"pulled {official}")
        return official
    log.append(f"cannot pull {official}; building {own} with debootstrap")
    _debootstrap(spec.suite, own, log)
    return own


def _check_updates(updates: str) -> None:
    if updates not in UPDATES:
        raise ImageError(f"unknown image updates '{updates}'; choose one of {', '.join(UPDATES)}")


def resolve_image(spec: ClusterSpec, updates: str = "none", engine: Engine | None = None) -> str | None:
    """The tag the spec runs on if it is already present on `engine` (default: local), else None (no build)."""
    _check_updates(updates)
    engine = engine or local_engine()
    if spec.image and updates == "none":
        return spec.image if _exists(spec.image, engine) else None
    for base in (spec.base_image,) if spec.base_image else (f"debian:{spec.suite}-slim", f"{BASE_REPO}:{spec.suite}"):
        if not base or not _exists(base, engine):
            continue
        if updates == "security":
            sec = security_base_tag(base, spec.suite)
            if _exists(sec, engine) and _exists(image_tag(spec, sec), engine):
                return image_tag(spec, sec)
            continue
        if _exists(image_tag(spec, base), engine):
            return image_tag(spec, base)
    return None


def ensure_image(spec: ClusterSpec, updates: str = "none", engine: Engine | None = None) -> tuple[str, list[str]]:
    """The node image for this spec, built if missing. Returns (tag, what was done).

    `updates="security"` builds the same build files on a base whose apt also reads the
    suite's security archive (e.g. bookworm main has PostgreSQL 15.18, bookworm-security 15.20).
    """
    log: list[str] = []
    _check_updates(updates)
    engine = engine or local_engine()
    if spec.image and updates == "none":
        if not _exists(spec.image, engine):
            raise ImageError(f"image {spec.image} (spec key image) does not exist locally")
        return spec.image, log
    if (found := resolve_image(spec, updates, engine)) is not None:
        return found, log
    base = ensure_base(spec, log, engine)
    if updates == "security":
        base = _ensure_security_base(base, spec.suite, log, engine)
    tag = image_tag(spec, base)
    if _exists(tag, engine):
        return tag, log
    log.append(f"building {tag} FROM {base}")
    build_image(engine, IMAGE_DIR, tag, buildargs={"BASE": base, "PG_MAJOR": str(spec.postgres_version)},
                labels={"pgha.image": "node", "pgha.base": base})
    return tag, log


def build_image(engine: Engine, context: Path, tag: str, buildargs: dict[str, str], labels: dict[str, str]) -> None:
    """`docker build` of the directory `context` as `tag` on `engine` (`tasks.docker_images.build`)."""
    docker_images.build(engine, context, tag, buildargs, labels)
