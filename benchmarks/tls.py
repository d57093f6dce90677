"""TLS benchmark: what TLS everywhere costs, TLS on vs off side by side in the same run.

Two 2-node / 1-etcd clusters (backups off, so bootstrap measures the cluster itself): one with
the default `tls.enabled: true`, one with `tls.enabled: false` (the switch exists for this
comparison only). Each round, alternating between them:
- bootstrap from nothing (containers, volumes and state directory removed first, so the TLS
  cluster also generates its CA and certificates);
- pgbench through the R/W port (TPC-B-like, scale 1, `--clients` clients, `--seconds` s): TPS with
  persistent connections, and with a new connection per transaction (`-C`, the handshake cost);
  the TLS cluster's clients use sslmode=verify-full, the plain one's sslmode=disable;
- the switchover and graceful-stop drills' write gap (the drill's write probe, 50 ms).
Prints every run, then medians and the ratios TLS/plain. Goals: TPS >= 0.9x, write
gaps within +10 %, bootstrap <= 1.1x.

    .venv/bin/python benchmarks/tls.py [--runs 3] [--seconds 10] [--clients 4]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="pgha-tls-bench-"))
os.environ["PGHA_STATE_DIR"] = str(WORK / "state")
os.environ.setdefault("PREFECT_HOME", str(WORK / "prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # a loaded shared machine
os.environ.pop("PREFECT_API_URL", None)

from flows.bootstrap import bootstrap  # noqa: E402
from flows.drill import drill  # noqa: E402
from stack.drill import DrillKind  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from tasks import images  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.host.secrets import cluster_secrets  # noqa: E402
from tasks.host.state import cluster_dir  # noqa: E402
from tasks.host.tls import ca_path  # noqa: E402

BASE = {"nodes": 2, "etcd_members": 1, "backup": {"enabled": False}}
CLUSTERS = {
    "tls": parse_spec({**BASE, "scope": "pgha-bench-tls", "ports": {"rw": 26640, "ro": 26641, "stats": 26642}, "pooler": {"enabled": False}}),
    "plain": parse_spec({**BASE, "scope": "pgha-bench-tplain", "tls": {"enabled": False},
                         "ports": {"rw": 26650, "ro": 26651, "stats": 26652}, "pooler": {"enabled": False}}),
}
PGBENCH = shutil.which("pgbench")


def fresh_bootstrap(spec: ClusterSpec) -> float:
    local_engine().remove_labelled(spec.scope, volumes=True)
    shutil.rmtree(cluster_dir(spec.scope), ignore_errors=True)
    t = time.monotonic()
    bootstrap(spec)
    return time.monotonic() - t


def pgbench(spec: ClusterSpec, *args: str) -> subprocess.CompletedProcess[str]:
    """pgbench on the R/W port; the password from a 0600 passfile, TLS as a client of the cluster would use it."""
    passfile = WORK / f"{spec.scope}.pgpass"
    passfile.write_text(f"127.0.0.1:*:*:postgres:{cluster_secrets(spec.scope).superuser}\n")
    passfile.chmod(0o600)
    env = {**os.environ, "PGPASSFILE": str(passfile)}
    env.update({"PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(ca_path(spec.scope))} if spec.tls.enabled
               else {"PGSSLMODE": "disable"})
    res = subprocess.run([PGBENCH or "pgbench", "-h", "127.0.0.1", "-p", str(spec.ports.rw), "-U", "postgres",
                          *args, "postgres"], env=env, capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0:
        raise SystemExit(f"pgbench failed on {spec.scope}: {res.stderr.strip()[-500:]}")
    return res


def tps(spec: ClusterSpec, seconds: int, clients: int, connect: bool) -> float:
    res = pgbench(spec, "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds), *(["-C"] if connect else []))
    m = re.search(r"tps = ([0-9.]+)", res.stdout)
    if not m:
        raise SystemExit(f"no TPS in pgbench's output: {res.stdout[-300:]}")
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    if PGBENCH is None:
        raise SystemExit("this benchmark needs pgbench on the host (Debian: postgresql-client)")
    rows: dict[tuple[str, str], list[float]] = {}
    lost = 0

    def record(metric: str, name: str, value: float, i: int, unit: str) -> None:
        rows.setdefault((metric, name), []).append(value)
        print(f"run {i + 1} {metric:30} {name:6} {value:9.2f} {unit}", flush=True)

    try:
        images.ensure_image(CLUSTERS["tls"])
        bootstrap(CLUSTERS["plain"])  # warm-up, not counted: the first flow starts the process's Prefect API
        for i in range(args.runs):
            # Alternate which cluster goes first, so a load change on a shared machine favours neither.
            order = list(CLUSTERS.items()) if i % 2 == 0 else list(reversed(CLUSTERS.items()))
            for name, spec in order:
                record("bootstrap", name, fresh_bootstrap(spec), i, "s")
            for _, spec in order:  # fresh clusters each round: pgbench's tables again
                pgbench(spec, "-i", "-q", "-s", "1")
            for connect in (False, True):
                metric = "pgbench TPS" + (" (-C, connect/tx)" if connect else "")
                for name, spec in order:
                    record(metric, name, tps(spec, args.seconds, args.clients, connect), i, "tps")
            for kind in (DrillKind.SWITCHOVER, DrillKind.GRACEFUL_STOP):
                for name, spec in order:
                    r = drill(spec, kind)
                    lost += len(r.lost_writes)
                    record(f"{kind.value} write gap", name, r.write_gap_s, i, "s")
    finally:
        for spec in CLUSTERS.values():
            local_engine().remove_labelled(spec.scope, volumes=True)
        shutil.rmtree(WORK, ignore_errors=True)
    print()
    print(f"| measure | TLS on (median) | TLS off (median) | ratio on/off | runs |   (lost writes, all drills: {lost})")
    print("|---|---|---|---|---|")
    for metric in dict.fromkeys(m for m, _ in rows):
        on, off = statistics.median(rows[(metric, "tls")]), statistics.median(rows[(metric, "plain")])
        print(f"| {metric} | {on:.2f} | {off:.2f} | {on / off:.2f} | {len(rows[(metric, 'tls')])} |")


if __name__ == "__main__":
    main()
