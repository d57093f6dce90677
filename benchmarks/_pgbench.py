"""pgbench's TPS on a cluster's pooler or direct R/W port (the pooler benchmarks); import after `_env`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from stack.spec import ClusterSpec
from tasks.host.secrets import cluster_secrets
from tasks.host.tls import ca_path

PGBENCH = shutil.which("pgbench")


def tps(spec: ClusterSpec, work: Path, pooled: bool, seconds: int, *extra: str, verify_full: bool = False) -> float:
    """TPS of one pgbench run on the pooler's or the direct R/W port; the password from a pgpass file
    in `work`; `verify_full`: TLS verified against the cluster's CA (else libpq's default)."""
    passfile = work / "pgpass"
    if not passfile.exists():
        passfile.write_text(f"127.0.0.1:*:*:postgres:{cluster_secrets(spec.scope).superuser}\n")
        passfile.chmod(0o600)
    port = spec.ports.pool if pooled else spec.ports.rw
    env = {**os.environ, "PGPASSFILE": str(passfile)}
    if verify_full:
        env |= {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(ca_path(spec.scope))}
    res = subprocess.run([PGBENCH or "pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", *extra,
                          "postgres"], env=env, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if res.returncode != 0:
        raise SystemExit(f"pgbench failed: {res.stderr[-500:]}")
    m = re.search(r"tps = ([0-9.]+)", res.stdout)
    return float(m.group(1)) if m else 0.0
