"""`pgha report`: a tarball for support, built from an allowlist and scanned for every secret before it is kept.

What goes in (and nothing else): the spec and the configs pgha renders from it with
`[REDACTED]` in place of every credential (`stack.report.support_files`: patroni.yml, the
pgBackRest configs, haproxy.cfg, etcd's flags, the fencer's configuration) — no file of the
state directory is copied, so no secret is loaded to build them; a listing of the state
directory (names, modes, sizes); the status, the audit, Patroni's history, the operations
journal; the recent log of every member, with every secret pgha holds redacted.

Then the scan: the finished tarball is read back and every member searched for every secret
the host holds for the cluster (`held_secrets`: the password and S3 credential files, the
repository's cipher passphrase, every private key, pgpass and auth files, the Prefect API's
auth string), as written and base64-encoded. A hit deletes the tarball and fails with one line
naming the member: a report either holds no secret or does not exist.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

from stack import report as rp
from stack.errors import PghaError
from stack.results import ReportResult
from stack.spec import ClusterSpec
from tasks import docker_hosts
from tasks.host import journal
from tasks.host.state import cluster_dir, state_root

LOG_LINES = 500
MAX_SECRET_FILE = 1 << 20  # a secret file is small; a bigger one is not read whole


def held_secrets(scope: str) -> list[str]:
    """Every secret the host holds for `scope`: what the scan must never find in the report.

    Walks the whole state directory of the cluster and the server's directory (the Prefect
    API's auth file and keys), deciding by name and content (`stack.report.secrets_in_file`),
    and adds the auth string in this process's environment.
    """
    found: list[str] = []
    for root in (cluster_dir(scope), state_root() / "server"):
        if not root.is_dir():
            continue
        for f in root.rglob("*"):
            if not f.is_file() or f.is_symlink() or f.stat().st_size > MAX_SECRET_FILE:
                continue
            try:
                text = f.read_text(errors="replace")
            except OSError:
                continue
            found += rp.secrets_in_file(str(f.relative_to(root)), text)
    if auth := os.environ.get("PREFECT_API_AUTH_STRING"):
        found += [auth, auth.split(":", 1)[-1]]
    return [s for s in dict.fromkeys(found) if len(s) >= rp.MIN_SECRET]


def _subnet(spec: ClusterSpec) -> str | None:
    """The cluster network's subnet, looked up (never created); None with hosts or when it is gone."""
    if spec.multi_host:
        return "127.0.0.1/32"
    try:
        return docker_hosts.engines(spec).default.network_subnet(spec.network)
    except Exception:  # noqa: BLE001 - the subnet is a nicety of the report, never a reason to fail it
        return None


def _state_listing(scope: str) -> str:
    d = cluster_dir(scope)
    entries = [(str(f.relative_to(d)), f.stat().st_mode & 0o7777, f.stat().st_size)
               for f in d.rglob("*") if f.is_file()] if d.is_dir() else []
    return rp.listing(entries)


def build(spec: ClusterSpec, path: Path, status: dict[str, Any], audit: dict[str, Any] | None,
          history: list[dict[str, Any]] | dict[str, Any]) -> ReportResult:
    """Write the report of `spec`'s cluster to `path` (0600) or raise PghaError naming the member that leaked."""
    forms = rp.secret_forms(held_secrets(spec.scope))
    encrypted = (cluster_dir(spec.scope) / "pgbackrest" / "cipher.pass").exists()  # existence only, never read
    files = {f"state/{k}": v for k, v in rp.support_files(spec, _subnet(spec), encrypted).items()}
    files["state/files.txt"] = _state_listing(spec.scope)
    files["status.json"] = json.dumps(status, indent=2, default=str)
    if audit is not None:
        files["audit.json"] = json.dumps(audit, indent=2, default=str)
    files["history.json"] = json.dumps(history, indent=2, default=str)
    files["operations.jsonl"] = rp.redact("\n".join(json.dumps(e) for e in journal.entries(spec.scope)), forms)
    eng = docker_hosts.engines(spec)
    for member, _ in spec.expected_members():
        try:
            text = eng.of(member).logs(spec.container(member), tail=LOG_LINES)
        except PghaError as exc:
            text = f"(no log: {exc})\n"
        files[f"logs/{member}.log"] = rp.redact(text, forms)
    files["README.txt"] = (f"pgha support report of cluster {spec.scope}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.\n"
                           "Configs are rendered from the spec with [REDACTED] credentials; no password file, "
                           "private key or passphrase is included, and every member was scanned for them.\n")
    members = {f"pgha-report-{spec.scope}/{name}": text.encode() for name, text in files.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
    leaked = rp.leaks(read_members(path), forms)
    if leaked:
        path.unlink(missing_ok=True)
        raise PghaError(f"the report would hold a secret of {spec.scope} in {leaked[0]}; not written")
    return ReportResult(scope=spec.scope, path=str(path.resolve()), files=sorted(files), bytes=path.stat().st_size,
                        secrets_checked=len(forms))


def read_members(path: Path) -> dict[str, bytes]:
    """The finished tarball as it will be handed over: member name -> bytes (read back, not from memory)."""
    out: dict[str, bytes] = {}
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():
            fh = tar.extractfile(m)
            out[m.name] = fh.read() if fh else b""
    return out
