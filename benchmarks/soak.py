"""Soak: a month of schedules in an hour, on one cluster under steady write load.

One 2-node / 1-etcd cluster (scope `pgha-soak`, ports 29100-29102) and its own supervised control
plane (`pgha server start`'s server and worker containers, port 29110, state and Prefect home in a
temporary directory). The shipped prefect.yaml is not deployed; the soak deploys its own
deployments of the same flows with compressed interval schedules:

| deployment      | flow                 | every   | shipped            |
|-----------------|----------------------|---------|--------------------|
| soak-audit      | audit                | 1 min   | 15 min (15x)       |
| soak-diff       | backup diff + verify | 10 min  | nightly (144x)     |
| soak-full       | backup full + verify | 60 min  | weekly (168x)      |
| soak-switchover | drill switchover     | 15 min  | weekly (672x)      |
| soak-hard-kill  | drill hard-kill      | 30 min  | on demand only     |

A simulated day is 96 real minutes: the audit's compression (15x), the most frequent schedule and
the one that writes most history. Every other schedule is compressed more, so growth per simulated
day overstates what a real day of the shipped schedules makes.

History retention, compressed: the server's flow-run vacuum refuses a retention under one hour
(Prefect's minimum), so the soak starts the server with events kept `--retention` minutes and both
vacuum loops every 60 s, and every minute deletes through the API the flow runs that ended more
than `--retention` minutes ago, as the flow-run vacuum does at its retention; the server's orphan
cleanup then deletes their logs and artifacts. Growth is reported before retention applies (up to
`--retention` minutes) and after (the second half of the run, once a whole retention window has
passed).

Load: pgbench through the R/W port at a fixed rate (`--tps`, 1 client, restarted when a drill cuts
it) and pgha's write probe (5 writes/s) recording acknowledged ids; after the run, every
acknowledged id must be in the table.

Every minute it samples: the server's database file, the log bytes of every container (cluster and
control plane), the repository, pg_wal of each node, the memory of each container, the state
directory, each audit's duration and the state of every run. Prints a markdown table and writes a
PNG chart and the raw samples (JSON). Everything it made is removed at the end, also on Ctrl-C.

    .venv/bin/python benchmarks/soak.py [--minutes 60] [--retention 15] [--chart docs/img/soak.png]
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _env import ROOT, private_env

WORK = private_env("soak")
SERVER_PORT = 29110
os.environ["PGHA_SERVER_PORT"] = str(SERVER_PORT)
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(WORK / "prefect" / "storage")

import docker  # noqa: E402
import httpx  # noqa: E402

from flows.bootstrap import bootstrap  # noqa: E402
from stack.drill import lost_writes  # noqa: E402
from stack.layout import DATA_MOUNT, PGDATA, REPO_MOUNT  # noqa: E402
from stack.spec import ClusterSpec, parse_spec  # noqa: E402
from tasks import control_plane as cp  # noqa: E402
from tasks import pgbackrest, server_db  # noqa: E402
from tasks import prefect_server as ps  # noqa: E402
from tasks.cluster_health import wait_healthy  # noqa: E402
from tasks.docker_hosts import local_engine  # noqa: E402
from tasks.engine_client import LABEL_MEMBER, LABEL_ROLE  # noqa: E402
from tasks.host.secrets import cluster_secrets  # noqa: E402
from tasks.host.state import state_root  # noqa: E402
from tasks.node_exec import node  # noqa: E402
from tasks.postgres import ensure_probe_table, probe_ids  # noqa: E402
from tasks.postgres_probe import Probe  # noqa: E402

SCOPE = "pgha-soak"
SPEC_IN: dict[str, Any] = {"scope": SCOPE, "nodes": 2, "etcd_members": 1,
                           "ports": {"rw": 29100, "ro": 29101, "stats": 29102},
                           "backup": {"retention_full": 1, "retention_diff": 3}, "pooler": {"enabled": False}}
SIM_DAY_MIN = 96  # real minutes per simulated day: 96 audits, a shipped day's worth at 15 minutes
# (name, flow entrypoint, parameters, interval s, offset s from the anchor, tags)
SCHEDULES: list[tuple[str, str, dict[str, Any], int, int, list[str]]] = [
    ("soak-audit", "flows/audit.py:audit", {"scope": SCOPE}, 60, 0, ["audit"]),
    ("soak-diff", "flows/backup.py:backup", {"spec": SPEC_IN, "type": "diff"}, 600, 120, ["backup"]),
    ("soak-full", "flows/backup.py:backup", {"spec": SPEC_IN, "type": "full"}, 3600, 28 * 60, ["backup"]),
    ("soak-switchover", "flows/drill.py:drill", {"spec": SPEC_IN, "kind": "switchover", "wait_seconds": 240},
     900, 6 * 60, ["drill"]),
    ("soak-hard-kill", "flows/drill.py:drill", {"spec": SPEC_IN, "kind": "hard-kill", "wait_seconds": 240},
     1800, 14 * 60, ["drill"]),
]
FLOW_NAME = {"flows/audit.py:audit": "health-audit", "flows/backup.py:backup": "backup", "flows/drill.py:drill": "drill"}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def log(msg: str) -> None:
    print(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {msg}", flush=True)


# ---- the control plane and its deployments ----

def api(method: str, path: str, body: object | None = None) -> Any:
    auth = ps.auth_string() or ":"
    user, pw = auth.split(":", 1)
    r = httpx.request(method, ps.api_url() + path, json=body, auth=(user, pw), timeout=30, trust_env=False)
    r.raise_for_status()
    return r.json() if r.content else None


def soak_prefect_yaml(anchor: dt.datetime) -> str:
    deps = []
    for name, entry, params, every, offset, tags in SCHEDULES:
        deps.append({"name": name, "entrypoint": entry, "tags": ["pgha", "soak", "health", *tags],
                     "parameters": params, "work_pool": {"name": ps.POOL}, "concurrency_limit": 1,
                     "schedules": [{"interval": every, "timezone": "UTC",
                                    "anchor_date": (anchor + dt.timedelta(seconds=offset)).isoformat()}]})
    doc = {"name": "pgha-soak", "prefect-version": "3.9.1",
           "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PGHA_HOME }}"}}],
           "deployments": deps}
    return json.dumps(doc, indent=1)  # JSON is YAML


def start_plane(anchor: dt.datetime) -> dict[str, str]:
    """The supervised server and worker, the pool, the soak's deployments; deployment name -> id."""
    from tasks.control_image import ensure_control_image

    image, _ = ensure_control_image()
    for step in (ps.start_server(image), ps.ensure_pool()):
        log(step)
    path = WORK / "prefect-soak.yaml"
    path.write_text(soak_prefect_yaml(anchor))
    r = subprocess.run([ps.prefect_bin(), "--no-prompt", "deploy", "--all", "--prefect-file", str(path)],
                       cwd=ROOT, env=ps.env(), capture_output=True, text=True, timeout=900, check=False)
    if r.returncode != 0:
        raise SystemExit(f"prefect deploy failed: {(r.stdout + r.stderr)[-1500:]}")
    log(ps.start_worker(image))
    return {name: str(api("GET", f"/deployments/name/{FLOW_NAME[entry]}/{name}")["id"])
            for name, entry, *_ in SCHEDULES}


def delete_run(run_id: str, tries: int = 4) -> bool:
    """DELETE one flow run; the server answers 503 while SQLite is locked by a run writing (the audit
    at the top of each minute): retried, then left for the next minute."""
    for i in range(tries):
        try:
            api("DELETE", f"/flow_runs/{run_id}")
            return True
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return False
            if exc.response.status_code != 503 or i == tries - 1:
                log(f"could not delete run {run_id}: {exc.response.status_code}")
                return False
            time.sleep(3)
    return False


# ---- load ----

class Pgbench(threading.Thread):
    """pgbench at a fixed rate through the R/W port until `stop`; restarted when a drill cuts it."""

    def __init__(self, spec: ClusterSpec, tps: int, until: float) -> None:
        super().__init__(name="soak-pgbench", daemon=True)
        self.spec, self.tps, self.until = spec, tps, until
        self.passfile = WORK / "pgpass"
        self.passfile.write_text(f"127.0.0.1:*:*:postgres:{cluster_secrets(spec.scope).superuser}\n")
        self.passfile.chmod(0o600)
        self.env = {**os.environ, "PGPASSFILE": str(self.passfile), "PGSSLMODE": "require"}
        self.base = ["pgbench", "-h", "127.0.0.1", "-p", str(spec.ports.rw), "-U", "postgres"]
        self.stop_evt = threading.Event()
        self.proc: subprocess.Popen[str] | None = None
        self.starts, self.transactions = 0, 0

    def init(self) -> None:
        subprocess.run([*self.base, "-i", "-q", "-s", "1", "postgres"], env=self.env, capture_output=True,
                       text=True, timeout=300, check=True)

    def stop(self) -> None:
        self.stop_evt.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def run(self) -> None:
        while not self.stop_evt.is_set() and (left := int(self.until - time.time())) > 5:
            self.starts += 1
            self.proc = subprocess.Popen([*self.base, "-n", "-c", "1", "-R", str(self.tps), "-T", str(left),
                                          "postgres"], env=self.env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
            out, _ = self.proc.communicate()
            for line in out.splitlines():
                if "number of transactions actually processed" in line:
                    self.transactions += int(line.split(":")[1].split("/")[0].strip())
            self.stop_evt.wait(2)


# ---- samples ----

def log_bytes(ct: Any) -> int:
    path = str(ct.attrs.get("LogPath") or "")
    return sum(os.path.getsize(p) for p in glob.glob(path + "*")) if path else 0


def memory_bytes(ct: Any) -> int | None:
    """What `docker stats` shows: usage less the inactive page cache."""
    try:
        st = ct.stats(stream=False, one_shot=True)["memory_stats"]
        extra = st.get("stats", {})
        return int(st["usage"]) - int(extra.get("total_inactive_file", extra.get("inactive_file", 0)))
    except (KeyError, TypeError, ValueError, docker.errors.APIError):
        return None


def du(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


class Sampler:
    def __init__(self, spec: ClusterSpec, client: docker.DockerClient, deployments: dict[str, str],
                 retention_s: int) -> None:
        self.spec, self.client, self.deployments, self.retention_s = spec, client, deployments, retention_s
        self.control = ps.plane().labels(cp.SERVER_ROLE)[cp.LABEL_CONTROL]
        self.runs: dict[str, dict[str, Any]] = {}  # every run seen, its last state (kept after deletion)
        self.deleted = 0
        self.samples: list[dict[str, Any]] = []

    def containers(self) -> dict[str, Any]:
        out = {}
        for ct in self.client.containers.list(filters={"label": f"pgha.cluster={SCOPE}"}):
            out[str(ct.labels.get(LABEL_MEMBER))] = ct
        for ct in self.client.containers.list(filters={"label": f"{cp.LABEL_CONTROL}={self.control}"}):
            out[str(ct.labels.get(LABEL_ROLE))] = ct  # prefect-server, prefect-worker
        return out

    def wal(self, member: str) -> int | None:
        try:
            got = node(self.spec, member).disk_usage(DATA_MOUNT, (f"{PGDATA}/pg_wal",))
        except Exception:  # noqa: BLE001 - a node being killed or rebuilt: no sample
            return None
        return got[2][0] if got else None

    def repo(self) -> int | None:
        try:
            got = node(self.spec, pgbackrest.reader(self.spec)).disk_usage(REPO_MOUNT, (REPO_MOUNT,))
        except Exception:  # noqa: BLE001
            return None
        return got[2][0] if got else None

    def poll_runs(self) -> None:
        by_id = {v: k for k, v in self.deployments.items()}
        offset = 0
        while True:
            page = api("POST", "/flow_runs/filter", {"deployments": {"id": {"any_": list(by_id)}},
                                                     "sort": "EXPECTED_START_TIME_ASC", "limit": 200,
                                                     "offset": offset})
            for r in page:
                if r.get("state_type") in (None, "SCHEDULED") and r["id"] not in self.runs:
                    continue  # not yet due
                self.runs[r["id"]] = {"deployment": by_id.get(r["deployment_id"], "?"), "name": r["name"],
                                      "state": r.get("state_type"), "state_name": r.get("state_name"),
                                      "expected": r.get("expected_start_time"), "start": r.get("start_time"),
                                      "end": r.get("end_time"), "seconds": r.get("total_run_time"),
                                      "message": ((r.get("state") or {}).get("message") or "")[:300]}
            if len(page) < 200:
                break
            offset += 200

    def vacuum(self) -> int:
        """Delete the runs that ended more than the retention ago (the flow-run vacuum, compressed)."""
        cutoff = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.retention_s)).isoformat()
        n = 0
        while True:
            old = api("POST", "/flow_runs/filter", {"flow_runs": {"end_time": {"before_": cutoff}}, "limit": 200})
            old = [r for r in old if r.get("state_type") in TERMINAL]
            if not old:
                return n
            progress = False
            for r in old:
                if delete_run(r["id"]):
                    n, progress = n + 1, True
            if not progress:
                return n

    def sample(self, t0: float) -> dict[str, Any]:
        now = time.time()
        cts = self.containers()
        with ThreadPoolExecutor(max_workers=8) as pool:
            mem_f = {k: pool.submit(memory_bytes, ct) for k, ct in cts.items()}
            wal_f = {m: pool.submit(self.wal, m) for m in self.spec.node_names()}
            repo_f = pool.submit(self.repo)
            mem = {k: f.result() for k, f in mem_f.items()}
            wal = {m: f.result() for m, f in wal_f.items()}
            repo = repo_f.result()
        for ct in cts.values():
            ct.reload()
        db = server_db.observe()
        try:
            self.poll_runs()
            self.deleted += self.vacuum()
        except httpx.HTTPError as exc:
            log(f"server API: {exc}")
        since = dt.datetime.fromtimestamp(self.samples[-1]["t"] if self.samples else t0, dt.UTC).isoformat()
        audits = [r["seconds"] for r in self.runs.values()
                  if r["deployment"] == "soak-audit" and r["end"] and r["end"] >= since and r["state"] in TERMINAL]
        states: dict[str, int] = {}
        for r in self.runs.values():
            states[str(r["state"])] = states.get(str(r["state"]), 0) + 1
        s = {"t": now, "minute": (now - t0) / 60, "server_db": db.db_bytes, "repo": repo, "wal": wal,
             "logs": {k: log_bytes(ct) for k, ct in cts.items()}, "memory": mem,
             "state_dir": du(str(state_root())), "audit_s": audits, "runs": states, "deleted": self.deleted}
        self.samples.append(s)
        return s


# ---- report ----

SERIES: list[tuple[str, str]] = [
    ("server database (MB)", "server_db"), ("container logs, cluster (MB)", "logs_cluster"),
    ("container logs, server + worker (MB)", "logs_control"), ("repository (MB)", "repo"),
    ("pg_wal, busiest node (MB)", "wal_max"), ("state directory (MB)", "state_dir"),
    ("memory, server (MB)", "mem_server"), ("memory, worker (MB)", "mem_worker"),
    ("memory, cluster containers (MB)", "mem_cluster"),
]


def flat(s: dict[str, Any]) -> dict[str, float | None]:
    def mb(v: float | None) -> float | None:
        return None if v is None else v / 1e6

    logs, mem = s["logs"], s["memory"]
    wal = [v for v in s["wal"].values() if v is not None]
    cluster_mem = [v for k, v in mem.items() if not k.startswith("prefect-") and v is not None]
    return {"server_db": mb(s["server_db"]), "repo": mb(s["repo"]), "wal_max": mb(max(wal)) if wal else None,
            "logs_cluster": mb(sum(v for k, v in logs.items() if not k.startswith("prefect-"))),
            "logs_control": mb(sum(v for k, v in logs.items() if k.startswith("prefect-"))),
            "state_dir": mb(s["state_dir"]), "mem_server": mb(mem.get("prefect-server")),
            "mem_worker": mb(mem.get("prefect-worker")), "mem_cluster": mb(sum(cluster_mem)) if cluster_mem else None}


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares growth per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else None


def table(samples: list[dict[str, Any]], retention_min: float) -> list[str]:
    end = samples[-1]["minute"]
    after_from = max(end / 2, retention_min + 5)
    rows = ["| quantity | first | last | before retention (MB / sim. day) | after retention (MB / sim. day) |",
            "|---|---|---|---|---|"]
    flats = [(s["minute"], flat(s)) for s in samples]
    for label, key in SERIES:
        pts = [(m, f[key]) for m, f in flats if f[key] is not None]
        if not pts:
            continue
        before = slope([(m, v) for m, v in pts if 1 <= m <= retention_min])
        after = slope([(m, v) for m, v in pts if m >= after_from])

        def fmt(x: float | None) -> str:
            return "–" if x is None else f"{x * SIM_DAY_MIN:+.2f}"

        rows.append(f"| {label} | {pts[0][1]:.1f} | {pts[-1][1]:.1f} | {fmt(before)} | {fmt(after)} |")
    rows.append(f"\nbefore: minutes 1-{retention_min:g}; after: minutes {after_from:g}-{end:.0f}; "
                f"a simulated day is {SIM_DAY_MIN} real minutes")
    return rows


def chart(samples: list[dict[str, Any]], retention_min: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flats = [(s["minute"], flat(s)) for s in samples]
    fig, axes = plt.subplots(4, 3, figsize=(14, 12), dpi=90)
    panels: list[tuple[str, list[str]]] = [(label, [key]) for label, key in SERIES]
    for ax, (label, keys) in zip(axes.flat, panels, strict=False):
        for key in keys:
            pts = [(m, f[key]) for m, f in flats if f[key] is not None]
            ax.plot([m for m, _ in pts], [v for _, v in pts], marker=".", linewidth=1)
        ax.set_title(label, fontsize=9)
    ax = axes.flat[len(panels)]
    for member in samples[-1]["logs"]:
        pts = [(s["minute"], s["logs"][member] / 1e6) for s in samples if member in s["logs"]]
        ax.plot([m for m, _ in pts], [v for _, v in pts], linewidth=1, label=member)
    ax.set_title("log bytes per container (MB)", fontsize=9)
    ax.legend(fontsize=6)
    ax = axes.flat[len(panels) + 1]
    pts = [(s["minute"], a) for s in samples for a in s["audit_s"] if a is not None]
    ax.plot([m for m, _ in pts], [v for _, v in pts], marker=".", linestyle="none")
    ax.set_title("audit duration (s)", fontsize=9)
    ax = axes.flat[len(panels) + 2]
    states = sorted({k for s in samples for k in s["runs"]})
    for st in states:
        ax.plot([s["minute"] for s in samples], [s["runs"].get(st, 0) for s in samples], label=st, linewidth=1)
    ax.set_title("runs seen, by their last state", fontsize=9)
    ax.legend(fontsize=6)
    for ax in axes.flat:
        ax.axvline(retention_min, color="#888", linestyle="--", linewidth=0.8)
        ax.set_xlabel("minute", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"pgha soak: {samples[-1]['minute']:.0f} min, dashed line = history retention "
                 f"({retention_min:g} min)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def judge_runs(runs: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Failed runs split: (as designed, unexpected). An audit that overlaps a drill reports the fault
    the drill made on purpose (a member down, a leader change): failed as designed."""
    drills = [(r["start"], r["end"] or "9999") for r in runs.values() if r["deployment"].endswith(("switchover", "kill"))
              and r["start"]]
    designed, unexpected = [], []
    for r in runs.values():
        if r["state"] in ("COMPLETED", "SCHEDULED", "PENDING", "RUNNING", None):
            continue
        overlaps = r["deployment"] == "soak-audit" and r["start"] and any(
            a <= (r["end"] or "9999") and r["start"] <= b for a, b in drills)
        (designed if overlaps else unexpected).append(r)
    return designed, unexpected


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60, help="how long the schedules run")
    ap.add_argument("--retention", type=float, default=15, help="history kept, in minutes (compressed)")
    ap.add_argument("--tps", type=int, default=10, help="pgbench rate (1 client)")
    ap.add_argument("--chart", type=Path, default=ROOT / "docs" / "img" / "soak.png")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / f"pgha-soak-{int(time.time())}.json",
                    help="the raw samples and runs (JSON)")
    ap.add_argument("--report", type=Path, help="only print the table and draw the chart of a saved --out file")
    args = ap.parse_args()
    if args.report:
        shutil.rmtree(WORK, ignore_errors=True)  # nothing runs: no state directory needed
        report(json.loads(args.report.read_text()), args.chart)
        return
    retention_s = int(args.retention * 60)
    os.environ.update(PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS="60",
                      PREFECT_SERVER_SERVICES_DB_VACUUM_ORPHAN_CLEANUP_LOOP_SECONDS="60",
                      PREFECT_SERVER_EVENTS_RETENTION_PERIOD=f"PT{retention_s}S")
    spec = parse_spec(SPEC_IN)
    client = docker.from_env(timeout=120)
    writer: Probe | None = None
    bench: Pgbench | None = None
    sampler: Sampler | None = None
    acked: list[int] = []
    lost: list[int] | None = None
    run_id = "soak-" + uuid.uuid4().hex[:8]
    t_boot = time.monotonic()
    try:
        local_engine().remove_labelled(SCOPE, volumes=True)
        bootstrap(spec)
        log(f"cluster up in {time.monotonic() - t_boot:.0f} s")
        secrets = cluster_secrets(SCOPE)
        ensure_probe_table(spec, secrets)
        now = dt.datetime.now(dt.UTC)
        anchor = (now + dt.timedelta(minutes=2)).replace(second=0, microsecond=0)
        deployments = start_plane(anchor)
        log(f"control plane up; schedules anchored at {anchor:%H:%M:%S} UTC")
        until = anchor.timestamp() + args.minutes * 60
        bench = Pgbench(spec, args.tps, until + 60)
        bench.init()
        bench.start()
        writer = Probe(spec, secrets, run_id, write=True, interval=0.2, max_seconds=until - time.time() + 900)
        writer.start()
        sampler = Sampler(spec, client, deployments, retention_s)
        time.sleep(max(0.0, anchor.timestamp() - time.time()))
        t0 = time.time()
        while time.time() < until:
            s = sampler.sample(t0)
            f = flat(s)
            log(f"min {s['minute']:5.1f}: db {f['server_db']} MB, repo {f['repo']} MB, logs {f['logs_cluster']:.1f}"
                f"+{f['logs_control']:.1f} MB, runs {s['runs']}, deleted {s['deleted']}, audits {s['audit_s']}")
            time.sleep(max(0.0, t0 + 60 * (len(sampler.samples)) - time.time()))
        # the schedules stop: no new runs; the last ones finish
        for dep in deployments.values():
            api("POST", f"/deployments/{dep}/pause_deployment")
        deadline = time.time() + 600
        while time.time() < deadline:
            sampler.poll_runs()
            if all(r["state"] in TERMINAL for r in sampler.runs.values()):
                break
            time.sleep(10)
        writer.stop()
        writer.join(15)
        bench.stop()
        acked = list(writer.log.acked_ids)
        wait_healthy.fn(spec, 300, stable_s=1.0)
        lost = lost_writes(acked, probe_ids(spec, secrets, run_id))
    finally:
        if writer is not None:
            writer.stop()
        if bench is not None:
            bench.stop()
        try:
            log("; ".join(ps.stop_all(volume=True)))
        finally:
            local_engine().remove_labelled(SCOPE, volumes=True)
            shutil.rmtree(WORK, ignore_errors=True)
        if sampler is not None and sampler.samples:
            args.out.write_text(json.dumps({"samples": sampler.samples, "runs": sampler.runs, "acked": len(acked),
                                            "lost": lost, "retention_min": args.retention,
                                            "pgbench": [bench.starts, bench.transactions] if bench else None},
                                           indent=1))
            log(f"samples written to {args.out}")
    report(json.loads(args.out.read_text()), args.chart)


def report(data: dict[str, Any], chart_path: Path) -> None:
    samples, runs, retention = data["samples"], data["runs"], data["retention_min"]
    print()
    print("\n".join(table(samples, retention)))
    chart(samples, retention, chart_path)
    print(f"\nchart: {chart_path}")
    per: dict[str, dict[str, int]] = {}
    for r in runs.values():
        per.setdefault(r["deployment"], {}).setdefault(str(r["state_name"]), 0)
        per[r["deployment"]][str(r["state_name"])] += 1
    print("\n| deployment | runs by state |\n|---|---|")
    for dep, states in sorted(per.items()):
        print(f"| {dep} | {', '.join(f'{k} {v}' for k, v in sorted(states.items()))} |")
    audits = sorted(r["seconds"] for r in runs.values() if r["deployment"] == "soak-audit" and r["seconds"])
    if audits:
        print(f"\naudit duration: median {audits[len(audits) // 2]:.1f} s, max {audits[-1]:.1f} s "
              f"({len(audits)} audits)")
    designed, unexpected = judge_runs(runs)
    print(f"failed runs: {len(designed)} as designed (an audit during a drill), {len(unexpected)} otherwise")
    for r in unexpected:
        print(f"  {r['deployment']} {r['name']} {r['state_name']} at {r['start']}: {r['message'][:200]}")
    lost = data["lost"]
    print(f"writes: {data['acked']} acknowledged, {'unknown' if lost is None else len(lost)} lost; "
          f"pgbench (starts, transactions): {data['pgbench']}")


if __name__ == "__main__":
    main()
