"""Bootstrap benchmark: `pgha up` vs the same containers started by a raw `docker run` sequence.

Both start from images present and nothing else, build the same containers (same image,
flags, mounted configs) and wait for the same conditions (every etcd member healthy, one
Patroni leader with every replica streaming, the R/W port on a writable primary and the R/O
port on a replica). Runs alternate so both see the same machine; prints each run, the
medians and the ratio pgha/raw.

    .venv/bin/python benchmarks/bootstrap.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stack import topology  # noqa: E402
from stack.cluster import assess  # noqa: E402
from stack.spec import parse_spec  # noqa: E402
from stack.wait import wait_for  # noqa: E402
from tasks import etcd, images, patroni, postgres  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.host.secrets import load_or_create  # noqa: E402
from tasks.host.state import (  # noqa: E402
    config_dir,  # noqa: E402
    secrets_file,
    write_private,
)

SPEC = parse_spec({"scope": "pgha-bench", "nodes": 3, "etcd_members": 3,
                   "ports": {"rw": 35432, "ro": 35433, "stats": 38404}, "pooler": {"enabled": False}})


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


def clean(state: Path) -> None:
    local_engine().remove_labelled(SPEC.scope, volumes=True)
    shutil.rmtree(state / SPEC.scope, ignore_errors=True)


def run_pgha(spec_file: Path, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    res = subprocess.run([str(ROOT / ".venv/bin/pgha"), "up", "--spec", str(spec_file)], env=env,
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"pgha up failed:\n{res.stderr[-2000:]}")
    return time.monotonic() - t0


def run_raw(image: str) -> float:
    """What a careful shell script would do: docker run each container, then the same waits."""
    lab = ["--label", f"pgha.cluster={SPEC.scope}"]
    secrets = load_or_create(secrets_file(SPEC.scope))
    t0 = time.monotonic()
    sh("docker", "network", "create", *lab, SPEC.network)
    subnet = subprocess.run(["docker", "network", "inspect", SPEC.network, "-f",
                             "{{(index .IPAM.Config 0).Subnet}}"], capture_output=True, text=True,
                            check=True).stdout.strip()
    for m in SPEC.etcd_names() + SPEC.node_names():
        sh("docker", "volume", "create", *lab, SPEC.volume(m))
    for m in SPEC.etcd_names():
        d = topology.etcd_member(SPEC, m, image).container
        sh("docker", "run", "-d", *lab, "--name", d.name, "--hostname", d.name, "--network", d.network,
           "-v", f"{SPEC.volume(m)}:/var/lib/etcd", image, "etcd", *d.command)
    wait_for("etcd", lambda: etcd.health(SPEC), lambda r: len(r) == SPEC.etcd_members and all(x.healthy for x in r),
             timeout=60, interval=0.3)
    for m in SPEC.node_names():
        p = topology.patroni_node(SPEC, m, image, subnet, secrets, str(config_dir(SPEC.scope, m)))
        cfg = Path(p.container.config_dir or "")
        write_private(cfg / "patroni.yml", p.files["patroni.yml"])
        sh("docker", "run", "-d", *lab, "--name", p.container.name, "--hostname", p.container.name,
           "--network", SPEC.network, "-v", f"{SPEC.volume(m)}:/var/lib/postgresql/data",
           "-v", f"{cfg}:/etc/pgha:ro", image, "patroni")
    wait_for("patroni", lambda: patroni.cluster_view(SPEC), lambda v: assess(v, SPEC).ok,
             timeout=180, interval=0.5)
    h = topology.haproxy(SPEC, image, str(config_dir(SPEC.scope, SPEC.haproxy_member)))
    hcfg = Path(h.container.config_dir or "")
    write_private(hcfg / "haproxy.cfg", h.files["haproxy.cfg"])
    ports = [a for cp, hp in h.container.ports.items() for a in ("-p", f"127.0.0.1:{hp}:{cp}")]
    sh("docker", "run", "-d", *lab, "--name", h.container.name, "--hostname", h.container.name,
       "--network", SPEC.network, *ports, "-v", f"{hcfg}:/etc/pgha:ro", image, "haproxy")
    postgres.wait_endpoints(SPEC, secrets)
    return time.monotonic() - t0


def start_prefect_server(work: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """A local Prefect server (what `make server` runs) for the 'with a server' column."""
    port = 4299
    log = open(work / "prefect-server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([str(ROOT / ".venv/bin/prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    import urllib.request

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # noqa: S310 - loopback
                return r.status == 200
        except OSError:
            return False

    wait_for("Prefect server", lambda: healthy(), bool, timeout=90, interval=0.5)
    return proc, url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-server", action="store_true", help="skip the 'against a running Prefect server' column")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgha-bench-"))
    os.environ["PGHA_STATE_DIR"] = str(work / "state")
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    env.pop("POSTGRES_PASSWORD", None)
    spec_file = work / "spec.yaml"
    spec_file.write_text(
        "scope: pgha-bench\nnodes: 3\netcd_members: 3\nports: {rw: 35432, ro: 35433, stats: 38404}\n")
    image, _ = images.ensure_image(SPEC)
    state = work / "state"
    pg_times: list[float] = []
    srv_times: list[float] = []
    raw_times: list[float] = []
    server = None
    try:
        if not args.no_server:
            server, url = start_prefect_server(work, env)
            srv_env = {**env, "PREFECT_API_URL": url}
        for i in range(args.runs):
            clean(state)
            pg_times.append(run_pgha(spec_file, env))
            if server is not None:
                clean(state)
                srv_times.append(run_pgha(spec_file, srv_env))
            clean(state)
            raw_times.append(run_raw(image))
            print(f"run {i + 1}: pgha up {pg_times[-1]:6.1f} s   "
                  + (f"pgha up with server {srv_times[-1]:6.1f} s   " if srv_times else "")
                  + f"raw docker run {raw_times[-1]:6.1f} s", flush=True)
    finally:
        clean(state)
        if server is not None:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    pm, rm = statistics.median(pg_times), statistics.median(raw_times)
    print()
    print("| images present -> healthy 3-node cluster | median (s) | ratio to raw | runs |")
    print("|---|---|---|---|")
    print(f"| `pgha up`, ephemeral Prefect API (no server running) | {pm:.1f} | {pm / rm:.2f} | {args.runs} |")
    if srv_times:
        sm = statistics.median(srv_times)
        print(f"| `pgha up` against a running Prefect server | {sm:.1f} | {sm / rm:.2f} | {args.runs} |")
    print(f"| raw `docker run` sequence, same waits | {rm:.1f} | 1.00 | {args.runs} |")
    print(f"goal: <= 45 s ({'met' if pm <= 45 else 'MISSED'}); <= 1.2x raw: ephemeral "
          f"{'met' if pm / rm <= 1.2 else 'MISSED'}"
          + (f", with server {'met' if statistics.median(srv_times) / rm <= 1.2 else 'MISSED'}" if srv_times else ""))


if __name__ == "__main__":
    main()
