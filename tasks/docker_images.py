"""Images on Docker engines: look up, pull, build, and copy between engines.

The Docker adapter's image job (`tasks.docker_engine` runs containers, networks and volumes):
the node, control and lab image builds (`tasks.images`, `tasks.control_image`,
`tasks.docker_lab`) decide what to build and from what; this module is where the engine is
asked. An engine's refusal is one `ImageError` line (a `DockerError`).
"""

from __future__ import annotations

import contextlib
import io
import queue
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker.errors

from stack.errors import DockerError, ImageError, StateError
from tasks.docker_engine import Engine
from tasks.engine_client import engine_call


def fan_out(source: Callable[[], Iterable[bytes]], sinks: list[Callable[[Iterator[bytes]], None]],
            depth: int = 16) -> list[BaseException | None]:
    """Feed one stream of chunks to every sink at once; [the source's error, then each sink's error].

    Each sink runs in its own thread and reads its own bounded queue (`depth` chunks), so the
    slowest sink sets the pace and memory stays bounded. A sink that fails is fed no more and
    its queue is drained, so the others go on; a source that fails ends every sink's stream early.
    """
    queues: list[queue.Queue[bytes | None]] = [queue.Queue(maxsize=depth) for _ in sinks]
    gone = [False] * len(sinks)

    def put(i: int, item: bytes | None) -> None:
        while not gone[i]:
            try:
                queues[i].put(item, timeout=1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for chunk in source():
                for i in range(len(sinks)):
                    put(i, chunk)
        finally:
            for i in range(len(sinks)):
                put(i, None)

    def consume(i: int) -> None:
        def chunks() -> Iterator[bytes]:
            while (chunk := queues[i].get()) is not None:
                yield chunk

        try:
            sinks[i](chunks())
        finally:
            gone[i] = True
            with contextlib.suppress(queue.Empty):
                while True:  # unblock the producer if this sink ended early
                    queues[i].get_nowait()

    with ThreadPoolExecutor(max_workers=len(sinks) + 1) as pool:
        futures = [pool.submit(produce), *(pool.submit(consume, i) for i in range(len(sinks)))]
    return [f.exception() for f in futures]


def has_image(engine: Engine, ref: str) -> bool:
    """Whether `engine` holds the image `ref` (ImageError when the engine cannot say)."""
    try:
        engine.client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise ImageError(f"cannot inspect image {ref}: {exc.explanation or exc}") from None


def image_id(engine: Engine, ref: str) -> str:
    """The image's ID (sha256:...), which changes when an image is rebuilt under the same tag."""
    try:
        return str(engine.client.images.get(ref).id)
    except docker.errors.APIError as exc:
        raise ImageError(f"cannot inspect image {ref}: {exc.explanation or exc}") from None


def image_env(engine: Engine, tag: str) -> list[str] | None:
    """The environment baked into an image (None when the image does not exist)."""
    try:
        img = engine.client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise StateError(f"cannot inspect image {tag}: {str(exc.explanation or exc).splitlines()[0][:300]}") from None
    return list(img.attrs.get("Config", {}).get("Env") or [])


def pull(engine: Engine, ref: str) -> bool:
    """`docker pull ref`; False when no registry gives it (none answers on offline machines)."""
    try:
        engine.client.images.pull(ref)
        return True
    except docker.errors.APIError:
        return False


def build_dockerfile(engine: Engine, tag: str, dockerfile: str) -> None:
    """`docker build` of a one-file context (the Dockerfile's text) as `tag`; one ImageError line on failure."""
    try:
        engine.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True)
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        raise ImageError(f"building {tag} failed: {str(exc)[:300]}") from None


def build(engine: Engine, context: Path, tag: str, buildargs: dict[str, str], labels: dict[str, str]) -> None:
    """`docker build` of the directory `context` as `tag` on `engine`; a failure is one ImageError
    line with the build's last output lines (the node, control and lab images build here)."""
    lines: list[str] = []
    try:
        for chunk in engine.client.api.build(path=str(context), tag=tag, rm=True, forcerm=True, decode=True,
                                             buildargs=buildargs, labels=labels):
            if "stream" in chunk:
                lines.append(str(chunk["stream"]).rstrip())
            if "error" in chunk:
                tail = " | ".join(x for x in lines[-4:] if x)
                raise ImageError(f"building {tag} failed: {str(chunk['error']).strip()[:300]} ({tail[:300]})")
    except docker.errors.APIError as exc:
        raise ImageError(f"building {tag} failed: {exc.explanation or exc}") from None


def copy_image(source: Engine, tag: str, targets: list[Engine], what: str = "host") -> dict[str, bool]:
    """`docker save | docker load` of `tag` from `source` into every engine of `targets` that lacks
    it (many hosts, lab hosts), from ONE export fanned out to the loads at once: the source tars
    the image once. {engine name: loaded}; `what` names the targets in errors."""
    need = [o for o in targets if not has_image(o, tag)]
    if need:
        with engine_call(f"copy image {tag} to {', '.join(o.name for o in need)}"):
            img = source.client.images.get(tag)
            # named=tag: `named=True` names the tarball after the image's FIRST tag, which for an image
            # with several tags (a re-tag of a running image) is not the one the hosts need.
            errors = fan_out(lambda: img.save(named=tag if tag in img.tags else True),
                             [o.client.images.load for o in need])
        if errors[0] is not None:
            raise DockerError(f"docker save {tag}: {str(errors[0]).splitlines()[0][:300]}")
        for o, exc in zip(need, errors[1:], strict=True):
            if exc is not None or not has_image(o, tag):
                why = (exc.explanation if isinstance(exc, docker.errors.APIError) else str(exc)) if exc else "absent after the load"
                raise DockerError(f"copy image {tag} to {what} {o.name}: {str(why)[:300]}")
    return {o.name: o in need for o in targets}
