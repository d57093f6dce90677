"""CPU counters the benchmarks read from /proc (standard library only: `suite_cpu.py` runs before
any venv exists)."""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
# The Docker engine's processes by their `comm` (cut to 15 characters: containerd-shim-runc-v2's is
# "containerd-shim").
ENGINE = ("dockerd", "containerd", "containerd-shim", "docker-proxy")


def engine_processes(names: tuple[str, ...] = ENGINE) -> dict[tuple[str, str], tuple[float, str]]:
    """Each process named in `names`: its CPU-seconds so far, its reaped children's included, and the
    text of its /proc/<pid>/cgroup, by (pid, start time) so that a reused pid is another process."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            st = Path(f"/proc/{pid}/stat").read_text()
            comm, f = st[st.index("(") + 1:st.rindex(")")], st[st.rindex(")") + 2:].split()
            if comm not in names:
                continue
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:  # it ended meanwhile
            continue
        out[(pid, f[19])] = (sum(int(x) for x in f[11:15]) / TICK, cgroup)
    return out
