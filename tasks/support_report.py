"""`pgha report`: a tarball for support, built from the host's state and the engine's logs.

Holds the spec and every rendered config (patroni.yml, haproxy.cfg, pgbackrest.conf) with
secrets redacted, the status, the audit, the history and operations journal, and the recent
log of every member (redacted too). Never copied: password files, private keys,
certificates, curl/pgpass auth files. Before it is handed over, the finished tarball is read
back and searched for every secret of the cluster (passwords, S3 keys, private keys); a hit
deletes it and fails loudly.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

from stack.errors import PghaError
from stack.operator import redact
from stack.results import ReportResult
from stack.spec import ClusterSpec
from tasks import docker_hosts
from tasks.host import journal
from tasks.host.state import cluster_dir

LOG_LINES = 500
SKIP_SUFFIXES = (".key", ".crt", ".pem", ".curl", ".json", ".lock", ".tmp")
SKIP_NAMES = ("pgpass", "secrets.json", "s3-credentials.json")
TEXT_SUFFIXES = (".yml", ".yaml", ".cfg", ".conf", ".sh")


def secret_values(spec: ClusterSpec) -> list[str]:
    """Every secret of the cluster the report must not hold."""
    from tasks.host.secrets import cluster_secrets

    found: list[str] = []
    try:
        found += cluster_secrets(spec.scope).values()
    except (PghaError, OSError, ValueError):
        pass
    d = cluster_dir(spec.scope)
    creds = d / "s3-credentials.json"
    if creds.exists():
        found += [str(v) for v in json.loads(creds.read_text()).values()]
    for key in d.rglob("*.key"):
        # Any line of a private key's body is a secret on its own.
        found += [ln for ln in key.read_text().splitlines() if ln and not ln.startswith("-----")]
    return [s for s in found if len(s) >= 8]


def build(spec: ClusterSpec, path: Path, audit: dict[str, Any] | None) -> ReportResult:
    from flows.steps.cluster import cluster_status
    from tasks import patroni

    secrets = secret_values(spec)
    files: dict[str, str] = {}
    d = cluster_dir(spec.scope)
    for f in sorted(p for p in d.rglob("*") if p.is_file()):
        rel = f.relative_to(d)
        if f.name in SKIP_NAMES or f.suffix in SKIP_SUFFIXES or f.suffix not in TEXT_SUFFIXES:
            continue
        files[f"state/{rel}"] = f.read_text(errors="replace")
    files["status.json"] = json.dumps(cluster_status(spec).to_json(), indent=2)
    if audit is not None:
        files["audit.json"] = json.dumps(audit, indent=2, default=str)
    try:
        files["history.json"] = json.dumps(patroni.history(spec), indent=2)
    except PghaError as exc:
        files["history.json"] = json.dumps({"error": str(exc)})
    files["operations.jsonl"] = "\n".join(json.dumps(e) for e in journal.entries(spec.scope))
    eng = docker_hosts.engines(spec)
    for member, _ in spec.expected_members():
        files[f"logs/{member}.log"] = eng.of(member).logs(spec.container(member), tail=LOG_LINES)
    files["README.txt"] = (f"pgha support report of cluster {spec.scope}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.\n"
                           "Secrets are redacted; password files and private keys are not included.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = redact(text, secrets).encode()
            info = tarfile.TarInfo(f"pgha-report-{spec.scope}/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
    path.chmod(0o600)
    leaked = find_secrets(path, secrets)
    if leaked:
        path.unlink(missing_ok=True)
        raise PghaError(f"the report would hold a secret of {spec.scope} in {leaked[0]}; not written")
    return ReportResult(scope=spec.scope, path=str(path.resolve()), files=sorted(files), bytes=path.stat().st_size,
                        secrets_checked=len(secrets))


def find_secrets(path: Path, secrets: list[str]) -> list[str]:
    """Members of the tarball that contain any of `secrets`."""
    hits = []
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():
            fh = tar.extractfile(m)
            data = fh.read().decode(errors="replace") if fh else ""
            if any(s in data for s in secrets):
                hits.append(m.name)
    return hits
