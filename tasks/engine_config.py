"""Config pushes: a member's config volume on an engine of `hosts:` made to hold its state
directory's files.

The Docker adapter's config-push job (the base of `tasks.docker_engine.Engine`, whose
`ensure_container` pushes first; `tasks.docker_hosts.sync_config` pushes after a write to a
running member's config dir). What to push is decided by `tasks.config_volume` from the
manifest the running container sees through its mount; the files travel as a tar through the
engine's archive API into a helper container that is removed at once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docker.models.containers import Container
from docker.types import Mount

from stack.errors import DockerError
from stack.layout import CONFIG_MOUNT
from tasks import config_volume
from tasks.engine_client import engine_call, labels, log_config
from tasks.engine_files import EngineFiles


def mounts_config_volume(ct: Container) -> bool:
    """The container mounts its config volume at /etc/pgha (not a directory of this machine)."""
    want = config_volume.volume_name(str(ct.name))
    return any(m.get("Destination") == CONFIG_MOUNT and m.get("Type") == "volume" and m.get("Name") == want
               for m in ct.attrs.get("Mounts") or [])


class ConfigPush(EngineFiles):
    """An engine's config pushes (one at a time per volume)."""

    if TYPE_CHECKING:  # the volume itself is made by `tasks.docker_engine.Engine`
        def ensure_volume(self, scope: str, role: str, member: str, name: str,
                          extra_labels: dict[str, str] | None = None) -> object: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._push_locks: dict[str, threading.Lock] = {}

    def push_config(self, scope: str, role: str, member: str, name: str, image: str, local_dir: str,
                    current: Container | None = None) -> bool:
        """Make container `name`'s config volume hold `local_dir`'s files; True when it had to be written.

        THE one function that writes a member's config volume (engines of `hosts:`; callers:
        `ensure_container`, and `tasks.docker_hosts.sync_config` after a write to a running
        member's config dir). Skipped when the manifest the running container sees through its
        mount says the volume already holds these files. Otherwise a helper container (the member's
        image, no network, the volume mounted read-write, never started unless stale files must be
        removed) receives the tar through `put_archive` and is removed: nothing of the files passes
        through an argument, the environment, a label or a log.
        """
        vol = config_volume.volume_name(name)
        with self._lock:
            lock = self._push_locks.setdefault(vol, threading.Lock())
        with lock:
            snap = config_volume.snapshot(Path(local_dir))
            manifest = None
            if current is None:
                current = self.find_container(name)
            if current is not None and mounts_config_volume(current):
                manifest = self.read_file(current, f"{CONFIG_MOUNT}/{config_volume.MANIFEST}")
            decided = config_volume.plan(snap, manifest)
            if not decided.push:
                return False
            self.ensure_volume(scope, role, member, vol, extra_labels={config_volume.LABEL_ETC: name})
            self._fill_volume(scope, member, name, image, snap.tar, list(decided.remove))
            return True

    def _fill_volume(self, scope: str, member: str, name: str, image: str, tar: bytes, remove: list[str]) -> None:
        vol = config_volume.volume_name(name)
        helper = config_volume.helper_name(name)
        with engine_call(f"fill config volume {vol}"):
            old = self.find_container(helper)
            if old is not None:
                old.remove(force=True, v=True)  # a push killed midway
            ct = self.client.containers.create(
                image, entrypoint=["rm", "-f", "--"], command=[f"{CONFIG_MOUNT}/{r}" for r in remove],
                name=helper, user="0:0", network_mode="none", detach=True, log_config=log_config(None),
                labels={**labels(scope, "config-push", member), config_volume.LABEL_ETC: name},
                mounts=[Mount(target=CONFIG_MOUNT, source=vol, type="volume")])
            try:
                if remove:  # files gone from the state directory go from the volume too
                    ct.start()
                    code = int(ct.wait(timeout=60).get("StatusCode", 1))
                    if code != 0:
                        raise DockerError(f"removing stale files from {vol} failed (exit {code})")
                if not ct.put_archive(CONFIG_MOUNT, tar):
                    raise DockerError(f"cannot copy the config files into {vol}")
            finally:
                ct.remove(force=True, v=True)  # v: an anonymous volume an image might declare; never a named one
