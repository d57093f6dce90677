"""A lab host's engine over tcp:// + mutual TLS against the same engine over its unix socket.

One 2-host lab made with `--engine tcp` (each lab host's dockerd answers on both), one cluster
bootstrapped through the tcp engines. Then, interleaved call by call on the same engines:
engine API calls (ping, listing the cluster's containers, `docker exec true` in a node) through
the socket (the baseline) and through tcp+TLS, and pgha's cluster view (Patroni's /cluster read
through `docker exec` in a node) from the tcp spec and from the same spec rewritten to the
sockets. Prints medians, the tcp/unix ratio of each, and the lab's creation and bootstrap time.

    .venv/bin/python benchmarks/engine_tcp.py [--calls 30] [--keep]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("engine-tcp")

import docker  # noqa: E402
import yaml  # noqa: E402

from flows.bootstrap import bootstrap  # noqa: E402
from stack.spec import load_spec, parse_spec  # noqa: E402
from tasks import docker_lab, patroni  # noqa: E402
from tasks.docker_hosts import tls_config  # noqa: E402
from tasks.engine_client import tls_client  # noqa: E402

LAB, LAB_SCOPE, PORT_BASE = "benchtcp", "pgha-bench-tcp", 26490  # 26490-26495


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = ap.parse_args()
    docker_lab.down(LAB)
    t0 = time.monotonic()
    st = docker_lab.up(LAB, 2, PORT_BASE, LAB_SCOPE, "tcp")
    made = time.monotonic() - t0
    try:
        tcp_spec = load_spec(Path(st.spec))
        data = yaml.safe_load(Path(st.spec).read_text())  # the same cluster, reached through the sockets
        for h, lh in zip(data["hosts"], st.hosts, strict=True):
            h["docker"] = lh.socket_url
            h.pop("tls", None)
        unix_spec = parse_spec(data)
        t0 = time.monotonic()
        bootstrap(tcp_spec)
        boot = time.monotonic() - t0
        h1 = st.hosts[0]
        assert h1.tls is not None
        clients = {
            "unix": docker.DockerClient(base_url=h1.socket_url, timeout=30),
            "tcp+tls": tls_client(h1.docker.replace("tcp://", "https://"), tls_config(h1.tls, h1.name), timeout=30),
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
        for _ in range(max(args.calls // 3, 5)):
            for way, spec in (("unix", unix_spec), ("tcp+tls", tcp_spec)):
                t = time.perf_counter()
                patroni.cluster_view(spec)
                times.setdefault(("cluster view (pgha)", way), []).append((time.perf_counter() - t) * 1000)
        print(f"lab --engine tcp, 2 hosts: created in {made:.0f} s; bootstrap through the tcp engines {boot:.0f} s")
        print(f"medians over {args.calls} calls (cluster view: {max(args.calls // 3, 5)}), ms; ratio tcp+tls / unix:")
        for op in [*ops, "cluster view (pgha)"]:
            u, t = statistics.median(times[(op, "unix")]), statistics.median(times[(op, "tcp+tls")])
            print(f"  {op:28} unix {u:8.1f}   tcp+tls {t:8.1f}   x{t / u:.2f}")
    finally:
        if not args.keep:
            docker_lab.down(LAB)


if __name__ == "__main__":
    main()
