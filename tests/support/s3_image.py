"""The S3-compatible test server's image: Debian's moto (server mode) and HAProxy (TLS in front).

Built once per content hash on pgha's trixie base (or Debian's, when pulled); `make test-images`
builds it before the workers start (`python -m tests.support.s3_image`), so a fresh machine
builds it beside the node images instead of inside a test.
"""

from __future__ import annotations

import hashlib
import io

import docker

MOTO_APT = "python3-moto python3-flask python3-flask-cors haproxy"


def moto_image(engine: docker.DockerClient) -> str:
    """The image's tag, built if missing."""
    base = "pgha/base:trixie"
    try:
        engine.images.get(base)
    except docker.errors.ImageNotFound:
        base = "debian:trixie-slim"
    dockerfile = (f"FROM {base}\nRUN apt-get update && apt-get install -y --no-install-recommends {MOTO_APT} "
                  "&& rm -rf /var/lib/apt/lists/*\n")
    tag = f"pgha-test/s3:{hashlib.sha256(dockerfile.encode()).hexdigest()[:12]}"
    try:
        engine.images.get(tag)
    except docker.errors.ImageNotFound:
        engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag


if __name__ == "__main__":
    print(f"S3 test image {moto_image(docker.from_env())}")
