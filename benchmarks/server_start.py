"""`pgha server start` on an empty database volume: the server from the image's migrated database
(pgha now) against the server migrating an empty one (pgha before), in the same run; and the work
pool made through the API client (now) against two `prefect work-pool` processes (before).

Alternating rounds, each on a fresh state directory and a fresh volume:
- `template`: `pgha server start` as pgha does it (the entrypoint copies the image's database);
- `migrate`: the volume made first with an empty `prefect.db` in it, so the entrypoint copies
  nothing and the server runs every migration, as before.
Prints each round's seconds until the server answers (`start_server`) and the whole start, the
medians and the ratio template / migrate; then the work pool's two ways, medians and ratio.

    .venv/bin/python benchmarks/server_start.py [--runs 3] [--port 29960]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time

from _env import ROOT, private_env

WORK = private_env("server-start")

from tasks import control_plane as cp  # noqa: E402
from tasks import prefect_server as ps  # noqa: E402
from tasks.control_image import ensure_control_image  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402


def one_start(mode: str, round_no: int) -> tuple[float, float]:
    """(seconds until the server answers, seconds of the whole start) of one fresh server."""
    os.environ["PGHA_STATE_DIR"] = str(WORK / f"{mode}-{round_no}" / "state")
    image, _ = ensure_control_image()
    plane = ps.plane(image)
    if mode == "migrate":  # an empty database file: the entrypoint leaves it, the server migrates it
        local_engine().client.volumes.create(plane.volume, labels=plane.labels(cp.SERVER_ROLE))
        local_engine().client.containers.run(image, entrypoint=["/bin/sh", "-c", ": > /var/lib/prefect/prefect.db"],
                                             volumes={plane.volume: {"bind": "/var/lib/prefect", "mode": "rw"}},
                                             remove=True)
    t0 = time.monotonic()
    try:
        ps.start_server(image)
        answered = time.monotonic() - t0
        ps.start_all(with_alerts=False)
        return answered, time.monotonic() - t0
    finally:
        ps.stop_all(volume=True)


def pool_ways(port: int, runs: int) -> dict[str, list[float]]:
    """Seconds to find-or-create a work pool: two `prefect` processes (before) vs the client (now)."""
    os.environ["PGHA_STATE_DIR"] = str(WORK / "pool" / "state")
    image, _ = ensure_control_image()
    ps.start_server(image)
    out: dict[str, list[float]] = {"client": [], "prefect-cli": []}
    try:
        for i in range(runs):
            for way in ("client", "prefect-cli") if i % 2 == 0 else ("prefect-cli", "client"):
                name = f"bench-{way}-{i}"
                t0 = time.monotonic()
                if way == "client":
                    ps.POOL, saved = name, ps.POOL
                    try:
                        ps.ensure_pool()
                    finally:
                        ps.POOL = saved
                else:
                    if ps._prefect("work-pool", "inspect", name).returncode != 0:
                        r = ps._prefect("work-pool", "create", name, "--type", "process")
                        assert r.returncode == 0, r.stdout + r.stderr
                out[way].append(time.monotonic() - t0)
    finally:
        ps.stop_all(volume=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port", type=int, default=29960)
    args = ap.parse_args()
    os.environ["PGHA_SERVER_PORT"] = str(args.port)
    os.environ["PGHA_HOME"] = str(ROOT)
    rows: dict[str, list[tuple[float, float]]] = {"template": [], "migrate": []}
    try:
        for i in range(args.runs):
            for mode in ("template", "migrate") if i % 2 == 0 else ("migrate", "template"):
                answered, whole = one_start(mode, i)
                rows[mode].append((answered, whole))
                print(f"round {i + 1} {mode:8} server answers {answered:5.1f} s, whole start {whole:5.1f} s",
                      flush=True)
        med = {m: (statistics.median(a for a, _ in r), statistics.median(w for _, w in r)) for m, r in rows.items()}
        for m, (a, w) in med.items():
            print(f"median {m:8} server answers {a:5.1f} s, whole start {w:5.1f} s")
        print(f"ratio template/migrate: server answers {med['template'][0] / med['migrate'][0]:.2f}x, "
              f"whole start {med['template'][1] / med['migrate'][1]:.2f}x")
        pools = pool_ways(args.port, args.runs)
        pm = {k: statistics.median(v) for k, v in pools.items()}
        print(f"work pool: client {pm['client']:.2f} s, two prefect processes {pm['prefect-cli']:.2f} s "
              f"(medians of {args.runs}; ratio {pm['client'] / pm['prefect-cli']:.2f}x)")
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
