"""A lab host's engine over ssh:// against the same engine over its unix socket.

One 2-host lab made with `--engine ssh` (each lab host's dockerd answers on its socket, and
`docker system dial-stdio` run through its sshd reaches the same dockerd), one cluster
bootstrapped through the ssh engines. Then, interleaved call by call on the same engine (h1):
ping, listing the cluster's containers, `docker exec true` in a node, through the socket (the
baseline) and four ssh transports:

- `ssh (docker-py way)`: a new ssh login per request, no master (what docker-py's shell-out does);
- `ssh + master`: a new ssh process per request over one ControlMaster (no login per request);
- `ssh (pgha)`: pgha's transport: kept connections, each its own login (the default);
- `ssh (pgha) + master`: the same over one ControlMaster (`ssh.multiplex: true`).

Also: opening a client (pgha's probe `docker version` over ssh, cold and with a master), pgha's
cluster view (Patroni's /cluster via `docker exec` in a node) from the ssh spec and the same spec
rewritten to the sockets, and `pgha status --json` as a user runs it (a new process each time).
Prints medians, the ratio to unix of each.

    .venv/bin/python benchmarks/engine_ssh.py [--calls 20] [--status-runs 5] [--keep]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _env import ROOT, private_env  # first: sets the env before pgha is imported

WORK = private_env("engine-ssh")

import docker  # noqa: E402
import yaml  # noqa: E402

from flows.bootstrap import bootstrap  # noqa: E402
from stack.spec import load_spec, parse_spec  # noqa: E402
from tasks import docker_lab, patroni  # noqa: E402
from tasks.docker_ssh import SSH_DIAL, ssh_client, ssh_command, ssh_probe, ssh_transport_client  # noqa: E402

LAB, LAB_SCOPE, PORT_BASE = "benchssh", "pgha-bench-ssh", 26480  # 26480-26485


def _median_ms(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--status-runs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = ap.parse_args()
    docker_lab.down(LAB)
    t0 = time.monotonic()
    st = docker_lab.up(LAB, 2, PORT_BASE, LAB_SCOPE, "ssh")
    made = time.monotonic() - t0
    try:
        ssh_spec = load_spec(Path(st.spec))
        data = yaml.safe_load(Path(st.spec).read_text())  # the same cluster, reached through the sockets
        for h, lh in zip(data["hosts"], st.hosts, strict=True):
            h["docker"] = lh.socket_url
            h.pop("ssh", None)
        unix_spec = parse_spec(data)
        unix_file = WORK / "unix-spec.yaml"
        unix_file.write_text(yaml.safe_dump(data))
        t0 = time.monotonic()
        bootstrap(ssh_spec)
        boot = time.monotonic() - t0
        h1 = st.hosts[0]
        login = h1.ssh
        assert login is not None
        version = ssh_probe(h1.docker, login, h1.name, multiplex=False)
        clients = {
            "unix": docker.DockerClient(base_url=h1.socket_url, timeout=30),
            "ssh (docker-py way)": ssh_transport_client(ssh_command(h1.docker, login, SSH_DIAL, multiplex=False),
                                                        30, version, keep=False),
            "ssh + master": ssh_transport_client(ssh_command(h1.docker, login, SSH_DIAL, multiplex=True), 30, version,
                                                 keep=False),
            "ssh (pgha)": ssh_client(h1.docker, login, h1.name, timeout=30),
            "ssh (pgha) + master": ssh_client(h1.docker, login, h1.name, timeout=30, multiplex=True),
        }
        pg = f"{LAB_SCOPE}-pg-1"
        flt = {"label": f"pgha.cluster={LAB_SCOPE}"}
        ops: dict[str, Callable[[docker.DockerClient], object]] = {
            "ping": lambda c: c.ping(),
            "containers.list (cluster)": lambda c: c.containers.list(filters=flt),
            "exec `true` in pg-1": lambda c: c.containers.get(pg).exec_run(["true"]),
        }
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.calls):
            for op, fn in ops.items():
                for way, c in clients.items():
                    t = time.perf_counter()
                    fn(c)
                    times.setdefault((op, way), []).append((time.perf_counter() - t) * 1000)
        opening = {
            "open: probe, no master": _median_ms(lambda: ssh_probe(h1.docker, login, h1.name, multiplex=False), 5),
            "open: probe, master up": _median_ms(lambda: ssh_probe(h1.docker, login, h1.name, multiplex=True), 5),
        }
        for c in clients.values():
            c.close()
        views = max(args.calls // 4, 5)
        for _ in range(views):
            for way, spec in (("unix", unix_spec), ("ssh (pgha)", ssh_spec)):
                t = time.perf_counter()
                patroni.cluster_view(spec)
                times.setdefault(("cluster view (in-process)", way), []).append((time.perf_counter() - t) * 1000)
        env = dict(os.environ)
        for _ in range(args.status_runs):
            for way, path in (("unix", str(unix_file)), ("ssh (pgha)", st.spec)):
                t = time.perf_counter()
                r = subprocess.run([sys.executable, "-m", "cli", "status", "--spec", path, "--json"], cwd=ROOT, env=env,
                                   capture_output=True, text=True, timeout=300, check=False)
                assert r.returncode == 0, r.stderr[-2000:]
                times.setdefault(("`pgha status --json`", way), []).append((time.perf_counter() - t) * 1000)
        print(f"lab --engine ssh, 2 hosts: created in {made:.0f} s; bootstrap through the ssh engines {boot:.0f} s")
        print(f"medians, ms (API calls: {args.calls} each; cluster view: {views}; pgha status: {args.status_runs});"
              " ratio to unix in brackets:")
        ways = list(clients)
        print(f"  {'':28}" + "".join(f"{w:>24}" for w in ways))
        for op in [*ops, "cluster view (in-process)", "`pgha status --json`"]:
            u = statistics.median(times[(op, "unix")])
            row = ""
            for w in ways:
                if (op, w) in times:
                    m = statistics.median(times[(op, w)])
                    row += f"{m:12.1f} (x{m / u:6.2f})" if w != "unix" else f"{m:24.1f}"
                else:
                    row += f"{'-':>24}"
            print(f"  {op:28}{row}")
        for what, ms in opening.items():
            print(f"  {what:28}{ms:24.1f}")
    finally:
        if not args.keep:
            docker_lab.down(LAB)  # ends the ssh masters too


if __name__ == "__main__":
    main()
