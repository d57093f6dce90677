"""Many hosts' config push: what a member's config files cost through the engine API.

On the local engine, side by side in each run: a hardened sleeping member created with its
config dir bind-mounted (the single-engine path, the baseline) and the same member created on
an engine handled as a host's (`Engine(config_volumes=True)`: volume + helper + put_archive);
then, on the latter, an unchanged `push_config` (the manifest read through the member's mount)
and a changed one (a helper again). Prints every run, medians and ratios to the baseline.

    .venv/bin/python benchmarks/config_push.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="pgha-push-bench-"))
os.environ["PGHA_STATE_DIR"] = str(WORK / "state")

from stack.spec import ClusterSpec  # noqa: E402
from stack.topology import ContainerDef, hardening  # noqa: E402
from tasks import images  # noqa: E402
from tasks.docker_engine import Engine  # noqa: E402
from tasks.host.state import config_dir, write_private  # noqa: E402

SCOPE = "pgha-bench-push"


def _def(name: str, image: str, conf: Path) -> ContainerDef:
    return ContainerDef(scope=SCOPE, role="patroni", member=name, name=f"{SCOPE}-{name}", image=image,
                        network=f"{SCOPE}-net", command=["600"], entrypoint=["sleep"], config_hash="h",
                        config_dir=str(conf), hardening=hardening(ClusterSpec(scope=SCOPE), "patroni"))


def _timed(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    image, _ = images.ensure_image(ClusterSpec())
    local, host = Engine("local"), Engine("as-host", config_volumes=True)
    local.remove_labelled(SCOPE, volumes=True)
    local.ensure_network(SCOPE, f"{SCOPE}-net")
    conf = config_dir(SCOPE, "m")
    for i in range(8):  # about a Patroni node's files: patroni.yml, curl, TLS, pgBackRest
        write_private(conf / ("tls" if i < 4 else "pgbackrest") / f"f{i}", "x" * 2048)
    write_private(conf / "patroni.yml", "y" * 6000)
    rows: list[tuple[float, float, float, float]] = []
    try:
        for run in range(args.runs):
            bind, vol = _def(f"bind{run}", image, conf), _def(f"vol{run}", image, conf)
            t_bind = _timed(lambda d=bind: local.ensure_container(d))  # type: ignore[misc]
            t_vol = _timed(lambda d=vol: host.ensure_container(d))  # type: ignore[misc]
            t_same = _timed(lambda d=vol: host.push_config(SCOPE, "patroni", d.member, d.name, image, str(conf)))
            write_private(conf / "patroni.yml", f"changed {run}" + "y" * 6000)
            t_changed = _timed(lambda d=vol: host.push_config(SCOPE, "patroni", d.member, d.name, image, str(conf)))
            rows.append((t_bind, t_vol, t_same, t_changed))
            print(f"run {run + 1}: create bind-mounted {t_bind:.3f} s, create with push {t_vol:.3f} s, "
                  f"unchanged push {t_same * 1000:.0f} ms, changed push {t_changed:.3f} s", flush=True)
    finally:
        local.remove_labelled(SCOPE, volumes=True)
    med = [statistics.median(c) for c in zip(*rows, strict=True)]
    print(f"medians over {len(rows)} runs: create bind-mounted {med[0]:.3f} s (baseline), create with push "
          f"{med[1]:.3f} s ({med[1] / med[0]:.2f}x), unchanged push {med[2] * 1000:.0f} ms "
          f"({med[2] / med[0]:.2f}x), changed push {med[3]:.3f} s ({med[3] / med[0]:.2f}x)")


if __name__ == "__main__":
    main()
