"""`pgha lab up` of a 2-host lab: the node image loaded into each host (the baseline) against each
host's /var/lib/docker copied from the lab seed.

Both runs make the same lab (`benchseed`, ports 29950-29955) from nothing, alternating which goes
first, `--runs` times each. For every run: wall seconds of `lab up`, and CPU-seconds from three
counters read before and after: the machine (/proc/stat: everything, other work on the machine
included), the containers (cgroup v1 /sys/fs/cgroup/cpuacct/docker/cpuacct.usage, which keeps the
CPU of containers removed meanwhile: the copy helpers) and the real engine's dockerd and containerd
(their reaped children included). The seed itself is made before the runs if missing (with
`--remake`, removed and made again, and that make measured once: what the first `lab up` after an
image change pays on top).

    .venv/bin/python benchmarks/lab_seed.py [--runs 3] [--remake]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _cpu import TICK, engine_processes
from _env import private_env  # first: sets the env before pgha is imported

WORK = private_env("lab-seed")

from stack import lab_seed  # noqa: E402
from stack.spec import ClusterSpec  # noqa: E402
from tasks import docker_images, docker_lab, docker_lab_hosts, images  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402

LAB, PORT_BASE = "benchseed", 29950  # 2 hosts: R/W and R/O 29950-29953, pool 29954-29955
CONTAINERS = Path("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage")


def machine_s() -> float:
    """CPU-seconds the whole machine has used (every state but idle and iowait)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / TICK


def engine_s() -> dict[tuple[str, str], float]:
    """The real engine's processes' CPU so far, their reaped children's included (a lab host's is a container's)."""
    return {k: cpu for k, (cpu, cgroup) in engine_processes(("dockerd", "containerd")).items() if "/docker/" not in cgroup}


def sample() -> tuple[float, float, float, dict[tuple[str, str], float]]:
    return time.monotonic(), machine_s(), int(CONTAINERS.read_text()) / 1e9, engine_s()


def delta(a: tuple[float, float, float, dict[tuple[str, str], float]],
          b: tuple[float, float, float, dict[tuple[str, str], float]]) -> dict[str, float]:
    eng = sum(v - a[3].get(pid, 0.0) for pid, v in b[3].items())
    return {"wall": b[0] - a[0], "machine": b[1] - a[1], "containers": b[2] - a[2], "engine": eng}


def one(seed: bool) -> dict[str, float]:
    docker_lab.down(LAB)
    a = sample()
    st = docker_lab.up(LAB, 2, PORT_BASE, "pgha-bench-seed", seed=seed)
    b = sample()
    want = "from the seed" if seed else "loaded"
    if st.images.count(want) != 2:
        raise SystemExit(f"{'seeded' if seed else 'load'} run: {st.images}")
    docker_lab.down(LAB)
    return delta(a, b)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--remake", action="store_true", help="remove the seed and measure making it once")
    args = ap.parse_args()
    local = local_engine()
    log: list[str] = []
    node, _ = images.ensure_image(ClusterSpec())
    lab_image = docker_lab.ensure_lab_image(local, log)
    key = lab_seed.seed_key(docker_images.image_id(local, lab_image), docker_images.image_id(local, node))
    print(f"load average before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    if args.remake:
        docker_lab_hosts.remove_volumes(local, [lab_seed.seed_volume(key)])
    a = sample()
    made = docker_lab.ensure_seed(local, lab_image, node, log)
    b = sample()
    if made is None:
        raise SystemExit(f"no seed: {log}")
    if args.remake:
        d = delta(a, b)
        print(f"seed made: {d['wall']:.1f} s wall, {d['machine']:.1f} CPU-s machine, "
              f"{d['containers']:.1f} containers, {d['engine']:.1f} engine")
    rows: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    try:
        for i in range(args.runs):
            for seed in ((False, True) if i % 2 == 0 else (True, False)):
                d = one(seed)
                rows[seed].append(d)
                print(f"run {i + 1} {'seed' if seed else 'load'}: {d['wall']:.1f} s wall, {d['machine']:.1f} CPU-s "
                      f"machine, {d['containers']:.1f} containers, {d['engine']:.1f} engine", flush=True)
    finally:
        docker_lab.down(LAB)  # a run that failed half-way leaves no lab behind
    print(f"\nmedians of {args.runs} runs each (2-host `lab up`), load path vs seeded path:")
    for k in ("wall", "machine", "containers", "engine"):
        load, seeded = (statistics.median(r[k] for r in rows[s]) for s in (False, True))
        print(f"  {k:10}  load {load:6.1f}   seed {seeded:6.1f}   seed/load {seeded / load if load else 0:.2f}")
    print(f"load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
