"""Failover at the limits on a live 3-node / 3-etcd cluster: engine-confirmed fencing, a frozen
leader, a stopped watcher, a restart racing the watcher, and etcd losing its quorum.

One cluster for the whole module (every drill leaves it whole; a fixture converges it with
`pgha up` before each test when the previous one did not). Ceilings are generous; the
figures are measured by benchmarks/failover.py.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml

from stack.spec import parse_spec
from tasks.haproxy import parse_stats
from tasks.host.secrets import load_or_create
from tests.integration.conftest import Cluster, pgha, running_cluster, up
from tests.support.traffic import measured

HARD_KILL_CEILING_S = 8.0  # fenced: measured ~2-3.5 s; unfenced it is the ttl (20 s)
HAPROXY_OUT_CEILING_S = 1.5  # fenced: out of rotation (drained) in HAProxy this soon after the death (checks alone: about 2 s)
HAPROXY_DOWN_CEILING_S = 5.0  # fenced: handed back to the checks (DOWN) after timeout connect + 0.5 s, measured ~2 s
OUT_OF_ROTATION = ("DRAIN", "DOWN", "MAINT")  # HAProxy's stats `status` of a server that takes no new connection
QUORUM_LOSS_CEILING_S = 5.0  # failsafe on: writes go on through a 30 s etcd outage (longer than the leader key's ttl of 20 s)


@pytest.fixture(scope="module")
def cluster_f(engine: docker.DockerClient, base_env: dict[str, str],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    spec = {"scope": "pgha-it-fence", "nodes": 3, "etcd_members": 3,
            "ports": {"rw": 26000, "ro": 26001, "stats": 26002}, "pooler": {"enabled": False}}
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("fence"), spec) as c:
        yield c


def status(c: Cluster) -> tuple[int, dict[str, Any]]:
    res = pgha(c.env, "status", "--json", "--scope", c.scope)
    return res.returncode, json.loads(res.stdout)


def wait_healthy(c: Cluster, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (st := status(c))[0] != 0:
        assert time.monotonic() < deadline, f"cluster not healthy after {timeout:.0f} s: {st[1].get('problems')}"
        time.sleep(1)
    return st[1]


def roles(st: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {m["member"]: (m["pg_role"], m["pg_state"]) for m in st["members"] if m["role"] == "patroni"}


@pytest.fixture
def healthy_f(cluster_f: Cluster) -> Cluster:
    """The module's cluster, whole (fencer running, failsafe on) whatever the previous test left."""
    code, st = status(cluster_f)
    fencer = next((m for m in st["members"] if m["member"] == "fencer"), None)
    if code != 0 or fencer is None or fencer["container_state"] != "running":
        up(cluster_f)
        wait_healthy(cluster_f)
    return cluster_f


def drill(c: Cluster, *args: str) -> dict[str, Any]:
    res = pgha(c.env, "drill", *args, "--scope", c.scope, "--json")
    assert res.returncode == 0, f"drill {args} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return dict(json.loads(res.stdout))


def fencer_log(engine: docker.DockerClient, c: Cluster, since: float) -> list[dict[str, Any]]:
    """The fencer's JSON log lines since `since` (unix time), as it wrote them."""
    text = engine.containers.get(c.container("fencer")).logs(since=int(since)).decode(errors="replace")
    return [r for r in (json.loads(line) for line in text.splitlines() if line.startswith("{")) if r["t"] >= since]


def decisions(engine: docker.DockerClient, c: Cluster, since: float) -> list[dict[str, Any]]:
    """The fencer's decisions logged since `since` (unix time)."""
    return [r for r in fencer_log(engine, c, since) if "outcome" in r]


def assert_rejoined(c: Cluster, member: str) -> None:
    st = wait_healthy(c)
    assert roles(st)[member][0] in ("replica", "sync_standby") and roles(st)[member][1] == "streaming", roles(st)
    assert sum(1 for r, _ in roles(st).values() if r == "leader") == 1


class StatsWatch:
    """HAProxy's backend states, sampled every 50 ms from its stats port while a drill runs."""

    def __init__(self, stats_port: int) -> None:
        self.url = f"http://127.0.0.1:{stats_port}/;csv"
        self.samples: list[tuple[float, dict[str, dict[str, str]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rows = parse_stats(httpx.get(self.url, timeout=1.0, trust_env=False).text)
                states: dict[str, dict[str, str]] = {"primary": {}, "replicas": {}}
                for row in rows:
                    if row.get("pxname") in states and row.get("svname") not in ("FRONTEND", "BACKEND"):
                        states[row["pxname"]][row["svname"]] = row.get("status", "")
                self.samples.append((time.time(), states))
            except httpx.HTTPError:
                pass
            self._stop.wait(0.05)

    def __enter__(self) -> StatsWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def first(self, since: float, ok: Callable[[dict[str, dict[str, str]]], bool]) -> float | None:
        """Seconds after `since` of the first sample for which `ok` holds (None: never)."""
        return next((round(t - since, 3) for t, s in self.samples if t >= since and ok(s)), None)


def in_rotation(stats_port: int, backend: str, member: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rows = parse_stats(httpx.get(f"http://127.0.0.1:{stats_port}/;csv", timeout=3.0, trust_env=False).text)
        status = next((r.get("status", "") for r in rows if r.get("pxname") == backend and r.get("svname") == member), "")
        if status.startswith("UP"):
            return
        assert time.monotonic() < deadline, f"{member} not back in HAProxy's {backend} backend: {status}"
        time.sleep(0.5)


@pytest.mark.timing_sensitive
def test_hard_kill_is_fenced_by_the_watcher(healthy_f: Cluster, engine: docker.DockerClient) -> None:
    """The watcher deletes the dead leader's key, takes it out of HAProxy at once (runtime API: a
    drain, marked down a moment later), and routes the new leader when it takes the lock; the
    old leader comes back as a replica."""
    t0 = time.time()
    port = int(healthy_f.spec["ports"]["stats"])
    with StatsWatch(port) as watch:
        r = drill(healthy_f, "hard-kill")
    assert r["lost_writes"] == [] and r["healed"]
    assert r["new_leader"] != r["old_leader"]
    assert r["write_gap_s"] < HARD_KILL_CEILING_S, r["timeline"]
    old, new = r["old_leader"], r["new_leader"]
    mine = [d for d in decisions(engine, healthy_f, t0) if d["member"] == old]
    assert any(d["outcome"] == "fenced" for d in mine), mine
    fenced = next(d for d in mine if d["outcome"] == "fenced")
    assert "exit code 137" in fenced["engine"] and f"names {old}" in fenced["key"]
    assert fenced["haproxy"] == "ok", fenced  # HAProxy accepted the take-out
    # The engine's death event: the decision's log time less its age and the time it took.
    died = fenced["t"] - (fenced["event_age_ms"] + fenced["total_ms"]) / 1000
    out = watch.first(died, lambda s: s["primary"].get(old, "").startswith(OUT_OF_ROTATION)
                      and s["replicas"].get(old, "").startswith(OUT_OF_ROTATION))
    # Health checks alone take fall x inter plus a check timeout (1.5-2 s with the fast profile).
    assert out is not None and out < HAPROXY_OUT_CEILING_S, (out, fenced)
    # Drained without a cut, then marked DOWN (handed back to the checks) once timeout connect has passed.
    down = watch.first(died, lambda s: s["primary"].get(old, "").startswith("DOWN")
                       and s["replicas"].get(old, "").startswith("DOWN"))
    assert down is not None and down < HAPROXY_DOWN_CEILING_S, (down, fenced)
    handed = [r for r in fencer_log(engine, healthy_f, t0) if r.get("msg") == "handed back to the health checks"]
    assert any(r["container"] == healthy_f.container(old) and r["haproxy"] == "ok" for r in handed), handed
    routed = watch.first(died, lambda s: s["primary"].get(new, "").startswith("UP"))
    assert routed is not None, "HAProxy never routed the new leader while the drill ran"
    assert_rejoined(healthy_f, old)
    in_rotation(port, "replicas", old)  # back as a replica, and back in HAProxy's R/O rotation


def test_frozen_leader_is_not_fenced_and_loses_nothing(healthy_f: Cluster, engine: docker.DockerClient) -> None:
    t0 = time.time()
    r = drill(healthy_f, "freeze", "--seconds", "24")  # ttl 20: the key expires while frozen
    assert r["lost_writes"] == [] and r["healed"]
    assert r["new_leader"] != r["old_leader"], "no leader elected by ttl during the freeze"
    mine = [d for d in decisions(engine, healthy_f, t0) if d["member"] == r["old_leader"]]
    assert mine and all(d["outcome"] != "fenced" for d in mine), mine
    assert any(d["event"] == "pause" and d["engine"].startswith("paused") for d in mine), mine
    assert any("never more than one" in n for n in r["notes"]), r["notes"]
    assert_rejoined(healthy_f, r["old_leader"])


@pytest.mark.timing_sensitive
def test_watcher_stopped_failover_by_ttl_and_audit_warns(healthy_f: Cluster, engine: docker.DockerClient) -> None:
    engine.containers.get(healthy_f.container("fencer")).stop(timeout=5)
    res = pgha(healthy_f.env, "audit", "--json", "--scope", healthy_f.scope)
    findings = {(f["check"], f["target"]): f for f in json.loads(res.stdout)["findings"]}
    assert findings[("container.running", "fencer")]["status"] == "warn"
    assert findings[("fencing.watcher", healthy_f.scope)]["status"] == "warn"
    assert findings[("patroni.failsafe_mode", healthy_f.scope)]["observed"] == "on"
    r = drill(healthy_f, "hard-kill")
    assert r["lost_writes"] == [] and r["healed"] and r["new_leader"] != r["old_leader"]
    # Nobody fenced: the replicas waited for the leader key's ttl (20 s, minus the last refresh).
    assert r["write_gap_s"] > HARD_KILL_CEILING_S, r["timeline"]
    assert_rejoined(healthy_f, r["old_leader"])
    up(healthy_f)  # `pgha up` heals the watcher
    assert engine.containers.get(healthy_f.container("fencer")).status == "running"


@pytest.mark.timing_sensitive
def test_restart_policy_racing_the_watcher(healthy_f: Cluster, engine: docker.DockerClient) -> None:
    """The leader's process dies (as in a crash or OOM): Docker's restart policy brings the
    container back at once while the watcher looks at it. Still one leader, nothing lost."""
    leader = next(m for m, (r, _) in roles(status(healthy_f)[1]).items() if r == "leader")
    ct = engine.containers.get(healthy_f.container(leader))
    restarts = int(ct.attrs["RestartCount"])
    secrets = load_or_create(Path(healthy_f.env["PGHA_STATE_DIR"]) / healthy_f.scope / "secrets.json", env={})
    t0 = time.time()
    with measured(parse_spec(healthy_f.spec), secrets) as traffic:
        os.kill(int(ct.attrs["State"]["Pid"]), signal.SIGKILL)  # not `docker kill`: the policy applies
        deadline = time.monotonic() + 30
        while int(engine.containers.get(ct.id).attrs["RestartCount"]) == restarts:
            assert time.monotonic() < deadline, "Docker did not restart the leader's container"
            time.sleep(0.2)
        st = wait_healthy(healthy_f)
    assert traffic.lost == [], traffic.lost[:10]
    assert sum(1 for r, _ in roles(st).values() if r == "leader") == 1, roles(st)
    mine = [d for d in decisions(engine, healthy_f, t0) if d["member"] == leader]
    assert mine, "the watcher logged nothing for the crashed leader"
    assert traffic.write_gap_s < 60


def test_etcd_quorum_loss_with_failsafe_keeps_writing(healthy_f: Cluster) -> None:
    r = drill(healthy_f, "etcd-quorum-loss", "--seconds", "30")
    assert r["lost_writes"] == [] and r["healed"]
    assert r["write_gap_s"] < QUORUM_LOSS_CEILING_S, r["timeline"]
    assert r["new_leader"] == r["old_leader"]
    assert any("never more than one" in n for n in r["notes"]), r["notes"]
    assert any("(failsafe)" in n for n in r["notes"]), r["notes"]


def test_etcd_quorum_loss_without_failsafe_goes_read_only_then_resumes(healthy_f: Cluster, tmp_path: Path) -> None:
    off = tmp_path / "failsafe-off.yaml"
    off.write_text(yaml.safe_dump({**healthy_f.spec, "failsafe_mode": False}))
    res = pgha(healthy_f.env, "up", "--spec", str(off))
    assert res.returncode == 0, res.stderr[-2000:]
    try:
        # Patroni demotes once it failed to renew the key for retry_timeout (5 s) plus a loop:
        # 15 s leaves it time to, even on a loaded machine.
        r = drill(healthy_f, "etcd-quorum-loss", "--seconds", "15")
        assert r["lost_writes"] == [] and r["healed"]  # writes resumed by themselves once etcd was back
        assert any("none (read-only)" in n for n in r["notes"]), r["notes"]
        assert any("never more than one" in n for n in r["notes"]), r["notes"]
    finally:
        up(healthy_f)  # failsafe back on, as the module's spec says
