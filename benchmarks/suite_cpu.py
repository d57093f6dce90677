"""Where a command's CPU goes on this machine, by part: run the integration suite (or any command)
under it and read what the containers of each role, the engine and the host-side Python used.

The command runs in a cgroup (v1 `cpuacct`) of its own, so everything it starts on the host is
counted there: pytest, every `pgha` process and the Prefect API it talks to, and the Docker engine
when the command starts it (`.ci/run` does). Every `--every` seconds the script reads:
- the whole machine's busy time (`/proc/stat`);
- each container's cgroup (`/sys/fs/cgroup/cpuacct/docker/<id>`), its growth added to the role
  its name says (a Patroni node, etcd, HAProxy, the pooler, the fencer, the Prefect server or
  worker, a lab host; a lab host's own containers have cgroups beside it that the outer engine
  does not name: "lab inner container");
- the engine's processes (`dockerd`, `containerd`, the shims): their CPU, reaped children too.
A container or a shim that lives less than one interval is counted in the machine's total and in
"other" only. Prints a table of CPU-seconds and shares, and writes it as JSON with `--out`.

    .venv/bin/python benchmarks/suite_cpu.py [--every 5] [--out FILE] -- COMMAND [ARGS...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from _cpu import TICK, engine_processes

CPUACCT = Path("/sys/fs/cgroup/cpuacct")
DOCKER_CG = CPUACCT / "docker"
ROLES = [  # (pattern on the container's name, role), first match wins
    (r"^pgha-prefect-server-", "Prefect server (container)"),
    (r"^pgha-prefect-worker-", "Prefect worker (container)"),
    (r"^pgha-lab-.*-h\d+$", "lab host (its dockerd)"),
    (r"-pg-\d+$", "Patroni node (Patroni + PostgreSQL)"),
    (r"-etcd-\d+$", "etcd"),
    (r"-haproxy$", "HAProxy"),
    (r"-pgbouncer|-pooler", "PgBouncer"),
    (r"-fencer$", "fencer"),
    (r"-repo", "repository host"),
]


def busy_s() -> float:
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return (int(f[0]) + int(f[1]) + int(f[2]) + int(f[5]) + int(f[6]) + int(f[7])) / TICK


def usage_s(cg: Path) -> float:
    try:
        return int((cg / "cpuacct.usage").read_text()) / 1e9
    except (OSError, ValueError):
        return -1.0


def engine_procs(cg_name: str) -> dict[tuple[str, str], tuple[float, bool]]:
    """The engine's processes: (CPU-seconds, reaped children's too; whether it runs in the command's cgroup)."""
    return {k: (cpu, f"/{cg_name}" in cgroup) for k, (cpu, cgroup) in engine_processes().items()}


def role_of(name: str) -> str:
    return next((role for pat, role in ROLES if re.search(pat, name)), "other container")


def names() -> dict[str, str]:
    r = subprocess.run(["docker", "ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}"],
                       capture_output=True, text=True, timeout=30, check=False)
    return dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=float, default=5.0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command after --")
    if not CPUACCT.is_dir():
        print("suite_cpu: needs cgroup v1 cpuacct (/sys/fs/cgroup/cpuacct)", file=sys.stderr)
        return 2
    cg = CPUACCT / f"pgha-suite-{os.getpid()}"
    cg.mkdir(exist_ok=True)
    seen: dict[str, tuple[str, float]] = {}  # container id -> (role, last usage)
    by_role: dict[str, float] = {}
    known: dict[str, str] = {}
    eng_last: dict[tuple[str, str], float] = {}
    eng_total = eng_inside = 0.0

    def sample(prime: bool = False) -> None:
        """Add each part's growth since the last sample; `prime`: only note where each one stands."""
        nonlocal eng_total, eng_inside
        ids = [d.name for d in DOCKER_CG.iterdir() if d.is_dir()] if DOCKER_CG.is_dir() else []
        if any(i not in known for i in ids):
            known.update(names())
        for i in ids:
            u = usage_s(DOCKER_CG / i)
            if u < 0:
                continue
            role, last = seen.get(i, (role_of(known[i]) if i in known else "lab inner container", 0.0))
            if not prime:
                by_role[role] = by_role.get(role, 0.0) + max(u - last, 0.0)
            seen[i] = (role, u)
        now = engine_procs(cg.name)
        for pid, (v, inside) in now.items():
            d = 0.0 if prime else max(v - eng_last.get(pid, 0.0), 0.0)
            eng_total += d
            eng_inside += d if inside else 0.0
        eng_last.clear()
        eng_last.update({pid: v for pid, (v, _) in now.items()})

    sample(prime=True)
    t0, b0 = time.monotonic(), busy_s()
    proc = subprocess.Popen(cmd, preexec_fn=lambda: (cg / "cgroup.procs").write_text(str(os.getpid())))
    try:
        while proc.poll() is None:
            sample()
            time.sleep(args.every)
        sample()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    wall, busy = time.monotonic() - t0, busy_s() - b0
    tree = usage_s(cg)
    host_python = max(tree - eng_inside, 0.0) if tree >= 0 else 0.0  # an engine the command started runs in its cgroup
    containers = sum(by_role.values())
    rows = {**{f"containers: {k}": v for k, v in sorted(by_role.items(), key=lambda kv: -kv[1])},
            "engine (dockerd, containerd, shims)": eng_total,
            "the command's own processes (pytest, pgha, the Prefect API, tools)": host_python,
            "other (short-lived containers and shims, kernel, the rest of the machine)":
                max(busy - containers - eng_total - host_python, 0.0)}
    cap = wall * (os.cpu_count() or 1)
    print(f"\nwall {wall:.0f} s, machine busy {busy:.0f} CPU-s of {cap:.0f} ({busy / cap:.0%}); exit {proc.returncode}")
    for k, v in rows.items():
        print(f"{v:9.0f} CPU-s {v / busy:6.1%}  {k}")
    if args.out:
        args.out.write_text(json.dumps({"wall_s": round(wall), "busy_cpu_s": round(busy), "capacity_cpu_s": round(cap),
                                        "exit": proc.returncode, "parts": {k: round(v) for k, v in rows.items()}},
                                       indent=1) + "\n")
    try:
        cg.rmdir()
    except OSError:
        pass
    return proc.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
