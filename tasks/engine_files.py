"""Files in and out of containers: write one, read one, copy a path from one engine's container
to another's.

The Docker adapter's file job (the base of `tasks.docker_engine.Engine`; `tasks.node_exec`
offers it per member). Files go through the engine's archive API, never through an argument,
the environment or a log.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

import docker.errors
import requests
from docker.models.containers import Container

from stack.errors import DockerError
from tasks import config_volume
from tasks.engine_client import EngineClient, engine_call, why


class EngineFiles(EngineClient):
    """An engine's file operations on its containers."""

    def copy_path(self, name: str, path: str, other: EngineFiles, other_name: str, into: str) -> None:
        """Copy `path` of container `name` into directory `into` of `other_name` on `other` (owner and
        mode kept), through a host temporary file holding the engines' tar archive (never whole in
        memory; the read ends before the write starts, so a slow engine on one side cannot time
        out the other's connection)."""
        src, dst = self._get(name), other._get(other_name)
        try:
            with engine_call(f"copy {path} from {name} to {other_name}"), tempfile.TemporaryFile() as buf:
                stream, _ = src.get_archive(path)
                for chunk in stream:
                    buf.write(chunk)
                buf.seek(0)
                ok = dst.put_archive(into, buf)
        except requests.exceptions.RequestException as exc:
            raise DockerError(f"copy {path} from {name} to {other_name}: the engine does not answer "
                              f"({type(exc).__name__})") from None
        if not ok:
            raise DockerError(f"cannot copy {path} from {name} to {other_name}")

    def put_file(self, name: str, path: str, text: str, mode: int = 0o600) -> None:
        """Copy `text` into a container as a root-owned file (for files no mount carries)."""
        ct = self._get(name)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = text.encode()
            ti = tarfile.TarInfo(Path(path).name)
            ti.size, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = len(data), mode, 0, 0, "root", "root"
            tar.addfile(ti, io.BytesIO(data))
        with engine_call(f"copy {path} into {name}"):
            ok = ct.put_archive(str(Path(path).parent), buf.getvalue())
        if not ok:
            raise DockerError(f"cannot copy {path} into {name}")

    def read_file(self, ct: Container, path: str) -> bytes | None:
        """A small file's bytes from a container (running or not; None when it is absent)."""
        try:
            stream, _ = ct.get_archive(path)
            data = b"".join(stream)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise DockerError(f"read {path} in {ct.name}: {why(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise DockerError(f"host {self.name}'s engine does not answer ({type(exc).__name__})") from None
        return config_volume.read_member(data, Path(path).name)
