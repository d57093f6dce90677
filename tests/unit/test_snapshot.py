"""The one snapshot: `pgha status` judged from it (stack.status), and how tasks.observe gathers it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from stack import audit_obs as AO
from stack.cluster import ClusterView, EndpointHealth, Member, MemberRole
from stack.pooler import PoolerObs
from stack.snapshot import ClusterSnapshot, ContainersObs, EtcdObs, Observed, PatroniState
from stack.spec import ClusterSpec, parse_spec
from stack.status import SESSION_PROBLEM, judge

SPEC = parse_spec({"scope": "lab", "nodes": 2, "etcd_members": 1, "pooler": {"enabled": False}})
ENDPOINTS = {"rw": "postgresql://rw", "ro": "postgresql://ro"}


def ok(value: Any) -> Observed[Any]:
    return Observed(value, "", asked=True)


def failed(error: str) -> Observed[Any]:
    return Observed(None, error, asked=True)


def healthy(**parts: Observed[Any]) -> ClusterSnapshot:
    cts = [AO.ContainerObs(SPEC.container(m), m, "running", "healthy") for m, _ in SPEC.expected_members()]
    view = ClusterView([Member("pg-1", MemberRole.LEADER, "running", 1, None),
                        Member("pg-2", MemberRole("sync_standby"), "streaming", 1, 0)])
    base: dict[str, Observed[Any]] = {
        "containers": ok(ContainersObs(cts)),
        "patroni": ok(PatroniState(view)),
        "etcd": ok(EtcdObs([EndpointHealth("https://10.0.0.2:2379", True)])),
        "backends": ok(({"pg-1": AO.Backend("UP", 0), "pg-2": AO.Backend("DOWN", 0)},
                        {"pg-1": AO.Backend("DOWN", 0), "pg-2": AO.Backend("UP", 0)})),
        "session": ok(None),
    }
    base.update(parts)
    return ClusterSnapshot(scope="lab", **base)  # type: ignore[arg-type]


def test_a_healthy_snapshot_is_a_healthy_status() -> None:
    st = judge(SPEC, healthy(), ENDPOINTS)
    assert st.healthy and not st.problems
    assert {m.member: (m.pg_role, m.pg_state) for m in st.members if m.role == "patroni"} == {
        "pg-1": ("leader", "running"), "pg-2": ("sync_standby", "streaming")}
    assert st.endpoints == {**ENDPOINTS, "rw_backends": "pg-1", "ro_backends": "pg-2"}


def test_each_failed_part_is_a_problem_in_a_fixed_order() -> None:
    snap = healthy(containers=ok(ContainersObs([], ["host b's engine does not answer"])),
                   patroni=failed("no Patroni node answers"), etcd=failed("etcdctl gave no health report"),
                   backends=failed("HAProxy stats do not answer"))
    st = judge(SPEC, snap, ENDPOINTS)
    assert not st.healthy
    assert st.problems[0] == "host b's engine does not answer"
    assert st.problems[1] == "no Patroni node answers"
    assert "lab-pg-1 is missing" in st.problems and "lab-etcd-1 is missing" in st.problems
    assert st.problems[-2:] == ["etcdctl gave no health report", "HAProxy stats do not answer"]
    assert {m.pg_state for m in st.members if m.role == "patroni"} == {"not registered"}


def test_the_session_is_judged_only_while_one_primary_is_routed() -> None:
    st = judge(SPEC, healthy(session=ok("FATAL: preload library")), ENDPOINTS)
    assert st.problems == [f"{SESSION_PROBLEM}: FATAL: preload library"]
    two = ok(({"pg-1": AO.Backend("UP", 0), "pg-2": AO.Backend("UP", 0)}, {"pg-2": AO.Backend("UP", 0)}))
    st = judge(SPEC, healthy(session=ok("FATAL: preload library"), backends=two), ENDPOINTS)
    assert st.problems == ["HAProxy R/W port has 2 primaries up (expected 1)"]


def test_a_stopped_watcher_is_shown_but_not_a_problem() -> None:
    cts = [AO.ContainerObs(SPEC.container(m), m, "exited" if r == "fencer" else "running", "")
           for m, r in SPEC.expected_members()]
    st = judge(SPEC, healthy(containers=ok(ContainersObs(cts))), ENDPOINTS)
    assert st.healthy
    assert [m.container_state for m in st.members if m.role == "fencer"] == ["exited"]


def test_a_pooler_that_does_not_answer_is_a_problem() -> None:
    spec = parse_spec({"scope": "lab", "nodes": 2, "etcd_members": 1})
    assert spec.runs_pooler
    cts = [AO.ContainerObs(spec.container(m), m, "running", "") for m, _ in spec.expected_members()]
    st = judge(spec, healthy(containers=ok(ContainersObs(cts)), pooler=failed("pooler down")),
               {**ENDPOINTS, "pool": "postgresql://pool"})
    assert st.problems == ["pooler down"]
    obs = PoolerObs(reachable=True)
    st = judge(spec, healthy(containers=ok(ContainersObs(cts)), pooler=ok(obs)), {**ENDPOINTS, "pool": "p"})
    assert st.endpoints["pool"] == "p" and st.healthy


def test_observed_brief_is_the_audits_one_line() -> None:
    o: Observed[int] = failed("first line\nsecond line")
    assert o.brief == "first line" and o.pair() == (None, "first line")
    assert failed("x" * 300).brief == "x" * 200
    assert not Observed().asked
    assert "patroni" in ClusterSnapshot.parts() and "scope" not in ClusterSnapshot.parts()


@pytest.fixture
def parts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """tasks.observe with fake gatherers: (part, thread name) of every call."""
    from tasks import observe as O

    calls: list[tuple[str, str]] = []

    def fake(name: str, fail: bool = False) -> Any:
        def gather(spec: ClusterSpec, deep: bool) -> Any:
            calls.append((name, threading.current_thread().name))
            time.sleep(0.2)
            if fail:
                raise RuntimeError(f"{name} broke\nmore")
            return name

        return gather

    monkeypatch.setattr(O, "GATHERERS", {"etcd": fake("etcd"), "patroni": fake("patroni"),
                                         "session": fake("session", fail=True), "server_db": fake("server_db")})
    return calls


def test_parts_are_asked_once_side_by_side_and_a_failure_is_observed(parts: list[tuple[str, str]]) -> None:
    from tasks.observe import observe

    t0 = time.monotonic()
    snap = observe(SPEC, ("etcd", "patroni", "session", "etcd"))
    assert time.monotonic() - t0 < 0.5  # three parts of 0.2 s each, at once
    assert sorted(p for p, _ in parts) == ["etcd", "patroni", "session"]
    assert snap.etcd.value == "etcd" and snap.etcd.asked and not snap.replication.asked
    assert snap.session.value is None and snap.session.error == "RuntimeError: session broke"
    assert set(snap.took_s) == {"etcd", "patroni", "session"}
    with pytest.raises(ValueError, match="unknown snapshot part"):
        observe(SPEC, ("nosuch",))


def test_a_snapshot_started_ahead_is_taken_once(parts: list[tuple[str, str]]) -> None:
    from tasks.observe import observe, prefetch

    ahead = prefetch(SPEC, ("etcd", "patroni"))
    snap = observe(SPEC, ("etcd",))  # the same spec: the one started ahead
    assert snap is ahead.result() and len(parts) == 2
    observe(SPEC, ("etcd",))  # claimed once: asked again
    assert len(parts) == 3
    other = prefetch(SPEC, ("etcd",))
    observe(parse_spec({"scope": "lab", "nodes": 3}), ("etcd",))  # another spec: not that one
    other.result()
    assert len(parts) == 5
    prefetch(SPEC, ("etcd",)).result()
    snap = observe(SPEC, ("etcd", "patroni"))  # only the part the snapshot lacks is asked now
    assert [p for p, _ in parts[5:]] == ["etcd", "patroni"]
    assert snap.etcd.value == "etcd" and snap.patroni.value == "patroni" and set(snap.took_s) == {"etcd", "patroni"}


def test_a_part_that_may_import_prefect_is_never_taken_ahead(parts: list[tuple[str, str]]) -> None:
    from tasks.observe import observe, prefetch

    prefetch(SPEC, ("etcd", "server_db")).result()
    assert [p for p, _ in parts] == ["etcd"]
    snap = observe(SPEC, ("etcd", "server_db"))
    assert [p for p, _ in parts] == ["etcd", "server_db"] and snap.server_db.value == "server_db"


def test_the_parts_left_out_ahead_join_it_once_prefect_is_imported(parts: list[tuple[str, str]]) -> None:
    from tasks.observe import observe, prefetch, prefetch_rest

    prefetch_rest(SPEC)  # nothing started ahead: nothing to join
    assert parts == []
    prefetch(SPEC, ("etcd", "server_db"))
    prefetch_rest(parse_spec({"scope": "lab", "nodes": 3}))  # another spec: not that snapshot
    prefetch_rest(SPEC)
    t0 = time.monotonic()
    snap = observe(SPEC, ("etcd", "server_db"))
    assert time.monotonic() - t0 < 0.35  # side by side, started ahead: not asked again
    assert sorted(p for p, _ in parts) == ["etcd", "server_db"]
    assert [t for p, t in parts if p == "server_db"][0].startswith("observe")
    assert snap.etcd.value == "etcd" and snap.server_db.value == "server_db" and set(snap.took_s) == {"etcd", "server_db"}
    assert 0.2 <= snap.elapsed_s < 0.35
