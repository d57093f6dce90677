"""pgha's Prometheus exporter: runs inside the cluster's `metrics` container (standard library only).

Not imported by pgha: `tasks.metrics_exporter` ships this file and `stack/metrics.py` (as
metrics.py) into the exporter's config directory. Every `interval_s` it asks each Patroni
node's REST API on the cluster network (GET /patroni on each node side by side, GET /cluster
of the first that answers) and keeps the result as one snapshot; a scrape renders the latest
snapshot plus the last audit's sample (audit.json beside this file, written by `pgha audit`),
so a scrape never waits on the cluster and a slow node never slows Prometheus.

    python3 exporter.py exporter.json

GET /metrics: the text exposition format. GET /healthz: 200 while the latest snapshot is
younger than three intervals (the container's health check), else 503.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

try:  # in the container: metrics.py next to this file
    import metrics as M  # type: ignore[import-not-found]
except ImportError:  # in the repository (tests, linters)
    from stack import metrics as M


def log(**fields: Any) -> None:
    print(json.dumps({"t": round(time.time(), 3), **fields}, sort_keys=True), flush=True)


def get(url: str, path: str, timeout: float, ctx: ssl.SSLContext | None) -> tuple[Any, float | None]:
    """GET `url` + `path` as JSON, and the peer certificate's notAfter (https) as epoch seconds."""
    u = urllib.parse.urlsplit(url)
    conn: http.client.HTTPConnection
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname or "", u.port or 443, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(u.hostname or "", u.port or 80, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        not_after = None
        if isinstance(conn.sock, ssl.SSLSocket):  # now: a reply that closes the connection drops the socket
            cert = conn.sock.getpeercert() or {}
            if cert.get("notAfter"):
                not_after = float(ssl.cert_time_to_seconds(str(cert["notAfter"])))
        body = conn.getresponse().read()
        # Patroni answers /patroni with 503 on a node that is not running: the body still says why.
        return json.loads(body or b"null"), not_after
    finally:
        conn.close()


class Exporter:
    def __init__(self, cfg: M.ExporterConfig) -> None:
        self.cfg = cfg
        self.ctx = ssl.create_default_context(cafile=cfg.ca_file) if cfg.ca_file else None
        self.lock = threading.Lock()
        self.snapshot = M.Snapshot(cfg.scope, 0.0, len(cfg.nodes), errors=("no snapshot yet",))
        self.audit: M.AuditSample | None = None
        self.audit_mtime = 0.0
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(cfg.nodes)))

    def _ask(self, member: str, url: str) -> tuple[Any, float | None, str]:
        try:
            body, not_after = get(url, "/patroni", self.cfg.timeout_s, self.ctx)
            return body, not_after, ""
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return None, None, f"{member}: {type(exc).__name__}"

    def observe(self) -> M.Snapshot:
        now = time.time()
        replies = list(self.pool.map(lambda n: self._ask(*n), self.cfg.nodes))
        errors = [e for _, _, e in replies if e]
        cluster: Any = None
        for (member, url), (body, _, err) in zip(self.cfg.nodes, replies, strict=True):
            if err or not isinstance(body, dict):
                continue
            try:
                cluster, _ = get(url, "/cluster", self.cfg.timeout_s, self.ctx)
                break
            except (OSError, ValueError, http.client.HTTPException) as exc:
                errors.append(f"{member} /cluster: {type(exc).__name__}")
        rows = M.cluster_members(cluster)
        members = tuple(M.member_sample(m, body, rows.get(m), now, not_after)
                        for (m, _), (body, not_after, _) in zip(self.cfg.nodes, replies, strict=True))
        return M.Snapshot(self.cfg.scope, now, len(self.cfg.nodes), members, tuple(errors))

    def loop(self) -> None:
        last_errors: tuple[str, ...] = ()
        while True:
            started = time.monotonic()
            try:
                snap = self.observe()
            except Exception as exc:  # noqa: BLE001 - keep serving the last snapshot; its age says it is old
                log(event="snapshot failed", error=f"{type(exc).__name__}: {exc}"[:200])
            else:
                with self.lock:
                    self.snapshot = snap
                if snap.errors != last_errors:  # a change only: the log stays small on a long life
                    log(event="snapshot", errors=list(snap.errors))
                    last_errors = snap.errors
            time.sleep(max(0.0, self.cfg.interval_s - (time.monotonic() - started)))

    def current_audit(self) -> M.AuditSample | None:
        if not self.cfg.audit_file:
            return None
        try:
            mtime = os.stat(self.cfg.audit_file).st_mtime
            if mtime != self.audit_mtime:
                with open(self.cfg.audit_file) as fh:
                    self.audit, self.audit_mtime = M.audit_from_json(fh.read()), mtime
        except OSError:
            self.audit = None  # no audit yet (or removed): no audit metrics, rather than stale ones
        return self.audit

    def render(self) -> str:
        with self.lock:
            snap = self.snapshot
        audit = self.current_audit()
        if audit is not None:
            snap = M.Snapshot(snap.scope, snap.taken_at, snap.expected_members, snap.members, snap.errors, audit)
        return M.render(snap, time.time())

    def fresh(self) -> bool:
        with self.lock:
            return time.time() - self.snapshot.taken_at < 3 * self.cfg.interval_s + self.cfg.timeout_s


def handler(exporter: Exporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = urllib.parse.urlsplit(self.path).path
            if path == "/metrics":
                self._send(200, exporter.render(), M.CONTENT_TYPE)
            elif path == "/healthz":
                ok = exporter.fresh()
                self._send(200 if ok else 503, "ok\n" if ok else "snapshot stale\n", "text/plain")
            else:
                self._send(404, "not found: GET /metrics or /healthz\n", "text/plain")

        def _send(self, code: int, text: str, ctype: str) -> None:
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            pass  # a line per scrape would grow the log for nothing

    return Handler


def main(path: str) -> int:
    with open(path) as fh:
        cfg = M.ExporterConfig.from_json(fh.read())
    exporter = Exporter(cfg)
    threading.Thread(target=exporter.loop, name="observe", daemon=True).start()
    server = ThreadingHTTPServer(("0.0.0.0", cfg.port), handler(exporter))  # noqa: S104 - published on 127.0.0.1
    server.daemon_threads = True
    log(event="serving", port=cfg.port, nodes=[m for m, _ in cfg.nodes], interval_s=cfg.interval_s)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
