"""A real Prometheus (Debian's binary) for a test: start / is_ready / query / stop, logs kept.

It runs with a temporary configuration and data directory, listens on 127.0.0.1:<port> only,
and is stopped (SIGTERM, then SIGKILL after 10 s) when the context ends, whatever happened.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml


class Prometheus:
    def __init__(self, port: int, workdir: Path, scrape: dict[str, list[str]], rule_files: list[Path] | None = None,
                 interval_s: float = 1.0) -> None:
        self.port, self.dir = port, workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        rule_files = rule_files or []
        for f in rule_files:
            shutil.copy(f, self.dir / f.name)
        conf = {"global": {"scrape_interval": f"{interval_s:g}s", "evaluation_interval": f"{interval_s:g}s",
                           "scrape_timeout": f"{interval_s:g}s"},
                "rule_files": [f.name for f in rule_files],
                "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                                   for job, targets in scrape.items()]}
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(conf))
        self.log = self.dir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("prometheus")
        assert exe, "prometheus is missing: `make prometheus` (Debian's prometheus package) installs it"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - a fixed binary and arguments
                [exe, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.dir)

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - our own loopback server
            return json.loads(r.read() or b"null") if path.startswith("/api/") else r.read().decode()

    def is_ready(self) -> bool:
        try:
            self.get("/-/ready")
            return True
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait(self, what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
        """Poll `probe` until it returns something truthy; fail with the last value and the log."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"prometheus exited:\n{self.tail()}"
            try:
                last = probe()
            except OSError as exc:
                last = exc
            if last and not isinstance(last, Exception):
                return last
            time.sleep(0.5)
        raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextmanager
def running(port: int, workdir: Path, scrape: dict[str, list[str]],
            rule_files: list[Path] | None = None) -> Iterator[Prometheus]:
    p = Prometheus(port, workdir, scrape, rule_files)
    p.start()
    try:
        p.wait("prometheus to be ready", p.is_ready, timeout=60)
        yield p
    finally:
        p.stop()
