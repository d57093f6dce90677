"""Many hosts: a 3-host lab cluster side by side with a single-engine cluster on the same machine.

Per run: bootstrap both from nothing (timed), then on the lab cluster `host-loss` of the
leader's host, of the synchronous standby's host and of the other replica's host, and a
leader `hard-kill`; on the single-engine cluster a leader `hard-kill` (the baseline); last,
the lab cluster converged with `fencing: true` (a watcher per host) and a leader `hard-kill`
again (fenced vs unfenced over the same hosts; `--no-fenced` leaves it out). Prints
every run, then medians of the write gap and the ratio to the baseline, the acknowledged
writes lost (must be 0), the bootstrap ratio lab/single, and what the lab costs (time to
create it, memory per lab host idle and with the cluster).

Both clusters run without the fencing watcher until that last case, so the hard-kill
baseline is Patroni's ttl floor on both (and a lost host takes its engine, and its watcher,
with it: host-loss is the ttl floor either way).

    .venv/bin/python benchmarks/hosts.py [--runs 3] [--keep]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("hosts")

from flows.bootstrap import bootstrap  # noqa: E402
from flows.drill import drill  # noqa: E402
from flows.teardown import teardown  # noqa: E402
from stack.drill import DrillKind  # noqa: E402
from stack.results import DrillResult  # noqa: E402
from stack.spec import ClusterSpec, load_spec, parse_spec  # noqa: E402
from tasks import docker_lab, images, patroni  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402

LAB, LAB_SCOPE, PORT_BASE = "benchlab", "pgha-bench-lab", 26440
SINGLE = parse_spec({"scope": "pgha-bench-lsingle", "fencing": False,
                     "ports": {"rw": 26460, "ro": 26461, "stats": 26462}, "pooler": {"enabled": False}})


def _mib(container: str) -> float:
    """The lab host's memory use (its cgroup's usage less page cache), MiB."""
    st = local_engine().client.containers.get(container).stats(stream=False)
    mem = st.get("memory_stats") or {}
    cache = (mem.get("stats") or {}).get("cache", 0)
    return (int(mem.get("usage") or 0) - int(cache or 0)) / 1048576


def _members_mib(docker_url: str) -> float:
    """Memory of the members inside one lab host (their cgroups are not under the lab host's), MiB."""
    import docker

    inner = docker.DockerClient(base_url=docker_url, timeout=30)
    total = 0.0
    for ct in inner.containers.list():
        mem = ct.stats(stream=False).get("memory_stats") or {}
        total += (int(mem.get("usage") or 0) - int((mem.get("stats") or {}).get("cache", 0) or 0)) / 1048576
    return total


def _host_of_role(spec: ClusterSpec, role: str) -> str:
    view = patroni.cluster_view(spec)
    for m in view.members:
        if m.role.value == role:
            return str(spec.host_of(m.name))
    raise SystemExit(f"no member with role {role} in {[(m.name, m.role.value) for m in view.members]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="leave the lab and clusters up at the end")
    ap.add_argument("--no-fenced", action="store_true", help="skip the lab's fenced hard-kill")
    args = ap.parse_args()
    gaps: dict[str, list[float]] = {}
    lost: dict[str, int] = {}
    boot: dict[str, list[float]] = {}

    def record(name: str, r: DrillResult, i: int) -> None:
        gaps.setdefault(name, []).append(r.write_gap_s)
        lost[name] = lost.get(name, 0) + len(r.lost_writes)
        print(f"run {i + 1} {name:34} write gap {r.write_gap_s:6.2f} s  read gap {r.read_gap_s:6.2f} s  "
              f"lost {len(r.lost_writes)}  acked {r.writes_acked}  whole after {r.whole_s} s", flush=True)

    docker_lab.down(LAB)
    local_engine().remove_labelled(SINGLE.scope, volumes=True)
    images.ensure_image(SINGLE)
    t0 = time.monotonic()
    st = docker_lab.up(LAB, 3, PORT_BASE, LAB_SCOPE)
    lab_create = time.monotonic() - t0
    idle = [_mib(h.container) for h in st.hosts]
    lab_spec = load_spec(Path(st.spec))
    lab_fenced = parse_spec({**lab_spec.model_dump(mode="json", exclude_none=True), "fencing": True}, "(lab, fenced)")
    busy: list[float] = []
    members: list[float] = []
    try:
        for i in range(args.runs):
            for name, spec in (("single engine", SINGLE), ("lab, 3 hosts", lab_spec)):
                teardown(spec, volumes=True, confirm=spec.scope, purge_backups=True)
                t = time.monotonic()
                bootstrap(spec)
                boot.setdefault(name, []).append(time.monotonic() - t)
                if spec is lab_spec and not busy:
                    time.sleep(10)  # settled after the bootstrap, before any drill restarts a host
                    busy = [_mib(h.container) for h in st.hosts]
                    members = [_members_mib(h.docker) for h in st.hosts]
                print(f"run {i + 1} bootstrap {name:22} {boot[name][-1]:6.1f} s", flush=True)
            record("single: hard-kill (baseline)", drill(SINGLE, DrillKind.HARD_KILL), i)
            record("lab: hard-kill", drill(lab_spec, DrillKind.HARD_KILL), i)
            record("lab: host-loss, leader's host",
                   drill(lab_spec, DrillKind.HOST_LOSS, host=_host_of_role(lab_spec, "leader")), i)
            record("lab: host-loss, sync standby's host",
                   drill(lab_spec, DrillKind.HOST_LOSS, host=_host_of_role(lab_spec, "sync_standby")), i)
            record("lab: host-loss, replica's host",
                   drill(lab_spec, DrillKind.HOST_LOSS, host=_host_of_role(lab_spec, "replica")), i)
            if not args.no_fenced:
                bootstrap(lab_fenced)  # the same cluster, plus one fencing watcher per host
                record("lab: hard-kill, fenced", drill(lab_fenced, DrillKind.HARD_KILL), i)
    finally:
        if not args.keep:
            docker_lab.down(LAB)
            local_engine().remove_labelled(SINGLE.scope, volumes=True)
    base = statistics.median(gaps["single: hard-kill (baseline)"])
    print(f"\nmedians of {args.runs} runs (write gap; ratio to the single-engine hard-kill):")
    for name, xs in gaps.items():
        med = statistics.median(xs)
        print(f"  {name:36} {med:6.2f} s  x{med / base:.2f}  lost {lost[name]}")
    b1, b3 = statistics.median(boot["single engine"]), statistics.median(boot["lab, 3 hosts"])
    print(f"bootstrap: single engine {b1:.1f} s, lab over 3 hosts {b3:.1f} s (x{b3 / b1:.2f})")
    print(f"lab cost: created in {lab_create:.0f} s (3 hosts, node image loaded into each); memory per lab host "
          f"idle {statistics.median(idle):.0f} MiB, {statistics.median(busy):.0f} MiB once its members run "
          f"(dockerd, containerd and shims); the members themselves (etcd + Patroni/PostgreSQL + HAProxy) "
          f"{statistics.median(members):.0f} MiB per host, as on a real host")


if __name__ == "__main__":
    main()
