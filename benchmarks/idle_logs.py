"""Idle log volume: what each container of an idle cluster writes to its log, per day.

Two clusters of the same shape side by side, idling in the same window (so a load change on a
shared machine favours neither):
- `options`: as pgha renders it, HAProxy checks Patroni with `option httpchk OPTIONS /primary`
  (and `/replica`), which Patroni answers with a status line only;
- `get`: the same cluster with its haproxy.cfg edited to `option httpchk GET ...` (pgha before
  the change) and HAProxy restarted: Patroni answers with headers and a JSON body, and HAProxy's
  reset of the check connection lands in the middle of it.
After `--settle` seconds each container's json-file log is measured over `--seconds`: bytes on
disk (the log files' growth, JSON framing included), lines, and of a Patroni node's lines the
REST API tracebacks, the "no action" heartbeats and PostgreSQL's own. Prints a table with MB per
day; the goal is an idle Patroni node well under 50 MB a day.

    .venv/bin/python benchmarks/idle_logs.py [--seconds 120] [--nodes 3] [--etcd 1] [--keep]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import time
from dataclasses import dataclass

from _env import private_env

WORK = private_env("idle-logs")

import docker  # noqa: E402

from flows.bootstrap import bootstrap  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.host.state import config_dir  # noqa: E402

NEW, OLD = "option httpchk OPTIONS", "option httpchk GET"
PORTS = {"options": {"rw": 26660, "ro": 26661, "stats": 26662},
         "get": {"rw": 26670, "ro": 26671, "stats": 26672}}


@dataclass
class Sample:
    cluster: str
    member: str
    bytes: int
    lines: int
    tracebacks: int
    heartbeats: int
    postgres: int

    def per_day(self, seconds: float) -> float:
        return self.bytes * 86400 / seconds / 1e6


def on_disk(ct: docker.models.containers.Container) -> int:
    """Bytes of the container's json-file log, rotated files included."""
    path = str(ct.attrs.get("LogPath") or "")
    return sum(os.path.getsize(p) for p in glob.glob(path + "*")) if path else 0


def use_get_checks(spec: ClusterSpec, client: docker.DockerClient) -> None:
    """The `get` cluster: its rendered haproxy.cfg back to GET checks, HAProxy restarted on it."""
    cfg = config_dir(spec.scope, spec.haproxy_member) / "haproxy.cfg"
    text = cfg.read_text()
    if NEW not in text:
        raise SystemExit(f"{cfg} has no '{NEW}': is this the pgha the benchmark was written for?")
    cfg.write_text(text.replace(NEW, OLD))
    client.containers.get(spec.container(spec.haproxy_member)).restart(timeout=5)


def measure(name: str, spec: ClusterSpec, client: docker.DockerClient, start: dict[str, int],
            since: float, until: float) -> list[Sample]:
    out = []
    for ct in client.containers.list(filters={"label": f"pgha.cluster={spec.scope}"}):
        ct.reload()
        text = ct.logs(since=int(since), until=int(until)).decode(errors="replace")
        lines = text.splitlines()
        out.append(Sample(
            cluster=name, member=str(ct.labels.get("pgha.member")), bytes=on_disk(ct) - start[str(ct.name)],
            lines=len(lines), tracebacks=sum("Traceback (most recent call last)" in ln for ln in lines),
            heartbeats=sum("no action. I am" in ln for ln in lines),
            postgres=sum(" LOG: " in ln or " LOG:  " in ln for ln in lines)))
    return sorted(out, key=lambda s: s.member)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=120, help="idle window measured")
    ap.add_argument("--settle", type=int, default=20, help="idle seconds before the window starts")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--etcd", type=int, default=1, help="etcd members (their logs barely move; 1 saves CPU)")
    ap.add_argument("--keep", action="store_true", help="leave both clusters running")
    args = ap.parse_args()
    specs = {name: parse_spec({"scope": f"pgha-bench-logs-{name}", "nodes": args.nodes,
                               "etcd_members": args.etcd, "ports": ports, "pooler": {"enabled": False}})
             for name, ports in PORTS.items()}
    client = docker.from_env(timeout=120)
    try:
        for spec in specs.values():
            local_engine().remove_labelled(spec.scope, volumes=True)
            bootstrap(spec)
        use_get_checks(specs["get"], client)
        time.sleep(args.settle)  # both clusters idle and routed before the window opens
        cts = [ct for spec in specs.values() for ct in
               client.containers.list(filters={"label": f"pgha.cluster={spec.scope}"})]
        start = {str(ct.name): on_disk(ct) for ct in cts}
        since = time.time()
        time.sleep(args.seconds)
        until = time.time()
        rows = [s for name, spec in specs.items() for s in measure(name, spec, client, start, since, until)]
    finally:
        if not args.keep:  # kept clusters keep their state directory too (their members mount it)
            for spec in specs.values():
                local_engine().remove_labelled(spec.scope, volumes=True)
            shutil.rmtree(WORK, ignore_errors=True)
        else:
            print(f"clusters kept; their state directory is {WORK}/state")
    window = until - since
    print(f"\nidle {window:.0f} s, {args.nodes} nodes / {args.etcd} etcd, TLS on (the default)\n")
    print("| checks | container | bytes | lines | tracebacks | heartbeats | PostgreSQL lines | MB/day |")
    print("|---|---|---|---|---|---|---|---|")
    for s in rows:
        print(f"| {s.cluster} | {s.member} | {s.bytes} | {s.lines} | {s.tracebacks} | {s.heartbeats} "
              f"| {s.postgres} | {s.per_day(window):.2f} |")
    for name in specs:
        nodes = [s for s in rows if s.cluster == name and s.member.startswith("pg-")]
        if nodes:
            worst = max(s.per_day(window) for s in nodes)
            print(f"{name}: the busiest Patroni node logs {worst:.1f} MB/day")


if __name__ == "__main__":
    main()
