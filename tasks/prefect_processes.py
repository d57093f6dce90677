"""Prefect processes pgha started in their own session: a pid file and a log in `<state>/server/`.

What `pgha worker start --name` runs (tasks/prefect_workers.py), and how a server or worker an
older pgha started as a process is found and ended. Only a recorded pid that is still a `prefect`
process is ever signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.host.prune import rotate_log
from tasks.prefect_auth import server_dir


def prefect_bin() -> str:
    return str(Path(sys.executable).with_name("prefect"))


@dataclass(frozen=True)
class Proc:
    """One worker process group pgha started: its pid file and log."""

    name: str  # server | worker

    @property
    def pid_file(self) -> Path:
        return server_dir() / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return server_dir() / f"{self.name}.log"

    def pid(self) -> int | None:
        """The recorded pid if that process still runs and is a prefect process (not a reused pid)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
            cmdline = b""
            for _ in range(20):  # a process that is just exec'ing shows an empty cmdline for a moment
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if cmdline:
                    break
                time.sleep(0.05)
        except (OSError, ValueError, IndexError):
            return None
        # An argument naming the prefect script (not a directory that merely contains "prefect").
        return pid if any(Path(arg.decode(errors="replace")).name.startswith("prefect") for arg in cmdline.split(b"\0")) else None

    def start(self, args: list[str], environ: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        e = environ
        rotate_log(self.log_file)  # bounded: one older copy past 10 MiB (health audits rotate it too)
        with open(self.log_file, "ab") as log:
            p = subprocess.Popen([prefect_bin(), *args], cwd=cwd, env=e, stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(f"{p.pid}\n")
        return p

    def stop(self, timeout: float = 30) -> bool:
        """SIGTERM the group, SIGKILL what is left after `timeout`; True when something was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pid):
                time.sleep(0.2)
            if not _group_alive(pid):
                break
        self.pid_file.unlink(missing_ok=True)
        return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader keeps the group "alive" until reaped; count only live members.
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
