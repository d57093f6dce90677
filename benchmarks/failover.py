"""Failover benchmark: switchover, graceful-stop and hard-kill drills, fast profile vs Patroni defaults.

Two clusters run side by side (same machine, same moment): one with pgha's default `fast`
profile, one with `profile: patroni-defaults`. Each round runs every drill kind on both,
alternating. Prints every run, then medians of the write gap, the ratio fast/defaults, and
the acknowledged writes lost (which must be 0).

    .venv/bin/python benchmarks/failover.py [--runs 3] [--kinds switchover,graceful-stop,hard-kill]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="pgha-failover-bench-"))
os.environ["PGHA_STATE_DIR"] = str(WORK / "state")
os.environ.setdefault("PREFECT_HOME", str(WORK / "prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)

from flows.bootstrap import bootstrap  # noqa: E402
from flows.drill import drill  # noqa: E402
from stack.drill import DrillKind  # noqa: E402
from stack.spec import parse_spec  # noqa: E402
from tasks import images  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402

PROFILES = {
    "fast": parse_spec({"scope": "pgha-bench-fast", "ports": {"rw": 35442, "ro": 35443, "stats": 38414}}),
    "patroni-defaults": parse_spec({"scope": "pgha-bench-dflt", "profile": "patroni-defaults",
                                    "ports": {"rw": 35452, "ro": 35453, "stats": 38424}}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kinds", default="switchover,graceful-stop,hard-kill")
    args = ap.parse_args()
    kinds = [DrillKind(k) for k in args.kinds.split(",")]
    gaps: dict[tuple[str, str], list[float]] = {}
    lost: dict[tuple[str, str], int] = {}
    try:
        for spec in PROFILES.values():
            local_engine().remove_labelled(spec.scope, volumes=True)
            images.ensure_image(spec)
            bootstrap(spec)
        for i in range(args.runs):
            for kind in kinds:
                for name, spec in PROFILES.items():
                    r = drill(spec, kind)
                    gaps.setdefault((kind.value, name), []).append(r.write_gap_s)
                    lost[(kind.value, name)] = lost.get((kind.value, name), 0) + len(r.lost_writes)
                    print(f"run {i + 1} {kind.value:14} {name:17} write gap {r.write_gap_s:6.2f} s  "
                          f"read gap {r.read_gap_s:5.2f} s  lost {len(r.lost_writes)}  "
                          f"whole after {r.whole_s} s", flush=True)
    finally:
        for spec in PROFILES.values():
            local_engine().remove_labelled(spec.scope, volumes=True)
    print()
    print("| drill | fast: median write gap | Patroni defaults: median write gap | ratio fast/defaults "
          "| lost writes (all runs) | runs |")
    print("|---|---|---|---|---|---|")
    for kind in kinds:
        f, d = statistics.median(gaps[(kind.value, "fast")]), statistics.median(gaps[(kind.value, "patroni-defaults")])
        total_lost = lost[(kind.value, "fast")] + lost[(kind.value, "patroni-defaults")]
        print(f"| {kind.value} | {f:.2f} s | {d:.2f} s | {f / d:.2f} | {total_lost} | {args.runs} |")


if __name__ == "__main__":
    main()
