"""The pooler without Docker: its rendered config, its auth file, its SHOW parsing and audit, the
switchover's choice of candidate and refusals, and the HAProxy runtime-API commands."""

from __future__ import annotations

import pytest

from stack import render, topology
from stack.cluster import ClusterView, Member, MemberRole
from stack.errors import SpecError, StateError, UsageError
from stack.pooler import PoolerObs, PoolRow, parse_pools, pooler_problems, render_pgbouncer_ini, render_userlist
from stack.spec import as_deployed, as_stored, parse_spec
from stack.switchover import plan_switchover
from tasks.haproxy import route_commands

SECRET = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"
SPEC = parse_spec({"scope": "lab", "nodes": 3, "pooler": {"enabled": True, "default_pool_size": 7}})


def test_pooler_is_on_by_default_without_hosts_and_its_port_must_differ() -> None:
    default = parse_spec({})
    assert default.pooler.enabled is None and default.runs_pooler and default.ports.pool == 6432
    assert ("pooler", "pooler") in default.expected_members()
    assert not parse_spec({"pooler": {"enabled": False}}).runs_pooler
    with pytest.raises(SpecError, match="ports.pool and ports.rw are both 7000"):
        parse_spec({"ports": {"rw": 7000, "pool": 7000}, "pooler": {"enabled": True}})
    with pytest.raises(SpecError, match="the pooler is on by default"):
        parse_spec({"ports": {"rw": 6432, "ro": 6433}})  # the default pooler's port
    off = parse_spec({"ports": {"rw": 6432, "ro": 6433}, "pooler": {"enabled": False}})
    assert off.ports.rw == 6432  # no pooler: 6432 is free to use
    with pytest.raises(SpecError, match="pooler.pool_mode"):
        parse_spec({"pooler": {"pool_mode": "statement"}})


HOSTS = [{"name": f"h{i}", "docker": f"ssh://pgha@10.0.0.{i}", "address": f"10.0.0.{i}"} for i in (1, 2, 3)]
MANY = {"nodes": 3, "etcd_members": 3, "hosts": HOSTS, "ports": {"rw": 5000, "ro": 5001, "stats": 7000},
        "backup": {"enabled": False}}


def test_with_hosts_a_pooler_runs_beside_every_hosts_haproxy() -> None:
    spec = parse_spec({**MANY, "hosts": [*HOSTS[:2], {**HOSTS[2], "client_address": "db3.example", "pool_port": 16432}]})
    assert spec.pooler.enabled is None and spec.runs_pooler
    assert ("pooler", "pooler") in spec.expected_members()
    assert not parse_spec({**MANY, "pooler": {"enabled": False}}).runs_pooler
    # Each host's pooler where clients reach it: its client address, its own published port if any.
    assert spec.client_endpoints(pooled=True) == [("10.0.0.1", 6432), ("10.0.0.2", 6432), ("db3.example", 16432)]
    # PgBouncer binds ports.pool on its host and reaches its own host's HAProxy on 127.0.0.1:ports.rw.
    ini = render_pgbouncer_ini(spec)
    assert "listen_port = 6432" in ini and "* = host=127.0.0.1 port=5000" in ini
    planned = topology.pooler(spec, "img", "/conf", {"postgres": SECRET})
    assert planned.container.host_network and planned.container.ports == {}
    assert planned.container.healthcheck is not None and planned.container.healthcheck[-1] == "6432"
    with pytest.raises(SpecError, match="ports.pool 5432 is PostgreSQL's port on every host"):
        parse_spec({**MANY, "ports": {**MANY["ports"], "pool": 5432}})  # type: ignore[dict-item]
    assert parse_spec({**MANY, "ports": {**MANY["ports"], "pool": 5432},  # type: ignore[dict-item]
                       "pooler": {"enabled": False}}).ports.pool == 5432  # no pooler: no pool port


def test_with_hosts_the_stored_spec_says_the_pooler_runs() -> None:
    """A stored many-hosts spec that leaves the pooler out was stored before it ran there."""
    spec = parse_spec(MANY)
    stored = as_stored(spec)
    assert stored.pooler.enabled is True and as_stored(parse_spec({})).pooler.enabled is None
    assert not as_deployed(spec, {"hosts": HOSTS, "pooler": {"enabled": None}}).runs_pooler
    assert as_deployed(spec, stored.model_dump(mode="json")).runs_pooler


def test_with_hosts_dsn_pool_names_every_hosts_pooler() -> None:
    from tasks.postgres import dsn, pgpass_line
    spec = parse_spec({**MANY, "tls": {"enabled": False}, "insecure": ["plaintext-between-hosts"]})
    uri = dsn(spec, pooled=True)
    assert uri.startswith("postgresql://postgres@10.0.0.1:6432,10.0.0.2:6432,10.0.0.3:6432/postgres?"
                          "target_session_attrs=read-write"), uri
    assert pgpass_line(spec, "pw", pooled=True).splitlines() == [f"10.0.0.{i}:6432:*:postgres:pw" for i in (1, 2, 3)]


def test_a_cluster_brought_up_before_the_default_is_judged_without_a_pooler() -> None:
    spec = parse_spec({})
    assert as_deployed(spec, None) is spec  # never brought up: the spec as it is
    for stored in ({"pooler": {"enabled": False}}, {"scope": "x"}, {"pooler": {}}):
        assert not as_deployed(spec, stored).runs_pooler, stored  # off, or older than the pooler
    for stored in ({"pooler": {"enabled": True}}, {"pooler": {"enabled": None}}):
        assert as_deployed(spec, stored).runs_pooler, stored
    explicit = parse_spec({"pooler": {"enabled": True}})
    assert as_deployed(explicit, {"pooler": {"enabled": False}}) is explicit  # the spec asks: expected
    off = parse_spec({"pooler": {"enabled": False}})
    assert not as_deployed(off, {"pooler": {"enabled": True}}).runs_pooler


def test_pgbouncer_ini_goes_through_haproxy_with_scram_and_the_spec_sizes() -> None:
    ini = render_pgbouncer_ini(SPEC)
    assert "* = host=lab-haproxy port=5432" in ini
    assert "auth_type = scram-sha-256" in ini
    assert "auth_file = /run/pgha/userlist.txt" in ini
    assert "pool_mode = transaction" in ini and "default_pool_size = 7" in ini and "max_client_conn = 1000" in ini
    assert "auth_query" not in ini and "password" not in ini.lower()


def test_userlist_holds_only_scram_secrets() -> None:
    assert render_userlist({"postgres": SECRET}) == f'"postgres" "{SECRET}"\n'
    with pytest.raises(ValueError, match="no SCRAM secret"):
        render_userlist({"postgres": "md5abcdef"})
    with pytest.raises(ValueError, match="no SCRAM secret"):
        render_userlist({"postgres": "plain-password"})


def test_pooler_container_publishes_the_pool_port_and_hides_the_secret() -> None:
    planned = topology.pooler(SPEC, "img:1", "/state/lab/pooler", {"postgres": SECRET})
    c = planned.container
    assert (c.role, c.member, c.name, c.ports) == ("pooler", "pooler", "lab-pooler", {6432: 6432})
    assert SECRET not in c.config_hash and SECRET not in " ".join(c.command)
    assert planned.files["userlist.txt"].count("SCRAM-SHA-256$") == 1
    other = topology.pooler(SPEC, "img:1", "/state/lab/pooler", {"postgres": SECRET.replace("c2VydmVy", "b3RoZXI=")})
    assert other.container.config_hash != c.config_hash  # a changed secret recreates the pooler


def test_haproxy_cfg_has_the_runtime_api_socket() -> None:
    assert "stats socket /run/haproxy/admin.sock mode 600 level admin" in render.render_haproxy_cfg(SPEC)


def test_route_commands_put_the_candidate_up_and_the_others_down() -> None:
    assert route_commands("pg-2", ["pg-1", "pg-3"]) == [
        "set server primary/pg-2 health up", "set server primary/pg-1 health down",
        "set server primary/pg-3 health down"]


def test_parse_pools_skips_the_admin_console_and_sums() -> None:
    rows = [
        {"database": "pgbouncer", "user": "pgbouncer", "cl_active": 1},
        {"database": "postgres", "user": "postgres", "cl_active": 18, "cl_waiting": 2, "sv_active": 15,
         "sv_idle": 3, "sv_used": 2, "maxwait": 6, "maxwait_us": 500000, "pool_mode": "transaction"},
    ]
    pools = parse_pools(rows)
    assert [p.database for p in pools] == ["postgres"]
    obs = PoolerObs(reachable=True, pools=pools)
    assert (obs.clients_active, obs.clients_waiting, obs.server_connections, obs.max_wait_s) == (18, 2, 20, 6.5)
    assert "18 clients active, 2 waiting, 20 server connections" in obs.summary()
    problems = pooler_problems(obs, SPEC)
    assert len(problems) == 1 and "2 clients waiting, the oldest for 6.5s" in problems[0]


def test_pooler_problems_unreachable_and_near_the_connection_limit() -> None:
    assert "unreachable" in pooler_problems(PoolerObs(reachable=False, error="refused"), SPEC)[0]
    busy = PoolerObs(reachable=True, pools=[PoolRow(database="d", user="u", cl_active=950)])
    assert "near max_client_conn 1000" in pooler_problems(busy, SPEC)[0]
    assert pooler_problems(PoolerObs(reachable=True, pools=[]), SPEC) == []


def view(*members: tuple[str, MemberRole, str, int | None]) -> ClusterView:
    return ClusterView(members=[Member(name=n, role=r, state=s, timeline=1, lag=lag) for n, r, s, lag in members])


HEALTHY = view(("pg-1", MemberRole.LEADER, "running", None), ("pg-2", MemberRole.SYNC_STANDBY, "streaming", 0),
               ("pg-3", MemberRole.REPLICA, "streaming", 0))


def test_default_candidate_is_the_sync_standby() -> None:
    plan = plan_switchover(HEALTHY, SPEC, None)
    assert (plan.leader, plan.candidate) == ("pg-1", "pg-2")
    assert plan.describe() == "switchover pg-1 -> pg-2"


def test_async_cluster_takes_the_least_lagging_replica() -> None:
    spec = parse_spec({"scope": "lab", "nodes": 3, "patroni": {"synchronous_mode": False}})
    v = view(("pg-1", MemberRole.LEADER, "running", None), ("pg-2", MemberRole.REPLICA, "streaming", 900),
             ("pg-3", MemberRole.REPLICA, "streaming", 10))
    assert plan_switchover(v, spec, None).candidate == "pg-3"
    assert plan_switchover(v, spec, "pg-2").candidate == "pg-2"


@pytest.mark.parametrize(("to", "error", "fragment"), [
    ("pg-9", UsageError, "is not a member"),
    ("pg-1", UsageError, "already leads"),
    ("pg-3", StateError, "not the synchronous standby"),
])
def test_bad_to_is_refused(to: str, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        plan_switchover(HEALTHY, SPEC, to)


def test_lagging_or_stopped_candidates_are_refused() -> None:
    spec = parse_spec({"scope": "lab", "nodes": 3, "patroni": {"synchronous_mode": False}})
    lagging = view(("pg-1", MemberRole.LEADER, "running", None), ("pg-2", MemberRole.REPLICA, "streaming", 50_000_000),
                   ("pg-3", MemberRole.REPLICA, "stopped", None))
    with pytest.raises(StateError, match="pg-2 lags 50000000 bytes"):
        plan_switchover(lagging, spec, "pg-2")
    with pytest.raises(StateError, match="not a streaming replica"):
        plan_switchover(lagging, spec, "pg-3")
    with pytest.raises(StateError, match="no streaming replica fit"):
        plan_switchover(lagging, spec, None)
    with pytest.raises(StateError, match="no single leader"):
        plan_switchover(view(("pg-2", MemberRole.REPLICA, "streaming", 0)), spec, None)


def test_audit_rows_for_the_pooler() -> None:
    from stack.findings import Level
    from stack.pooler import check_pooler

    rows = check_pooler(None, SPEC, "connection refused")
    assert [(f.check, f.status) for f in rows] == [("pooler.reachable", Level.CRITICAL)]
    ok = PoolerObs(reachable=True, pools=[PoolRow(database="postgres", user="postgres", cl_active=3, sv_idle=2)])
    assert {f.check: f.status for f in check_pooler(ok, SPEC)} == {
        "pooler.reachable": Level.OK, "pooler.paused": Level.OK, "pooler.waiting": Level.OK,
        "pooler.client_connections": Level.OK, "pooler.server_connections": Level.OK}
    stuck = PoolerObs(reachable=True, paused=True,
                      pools=[PoolRow(database="postgres", user="postgres", cl_waiting=4, maxwait_s=31)])
    by = {f.check: f for f in check_pooler(stuck, SPEC)}
    assert by["pooler.paused"].status == Level.CRITICAL and "RESUME" in by["pooler.paused"].hint
    assert by["pooler.waiting"].status == Level.CRITICAL


def test_switchover_pooled_drill_kind() -> None:
    from stack.drill import DrillKind, Target, choose_target, verdict
    from stack.results import DrillResult

    kind = DrillKind("switchover-pooled")
    assert kind.moves_leader and kind.is_switchover
    replicas = {"pg-2": ("sync_standby", 0), "pg-3": ("replica", 0)}
    assert choose_target(kind, "pg-1", replicas, 3, 3) == Target("pg-1", "pg-2")
    base = {"kind": kind.value, "target": "pg-1", "old_leader": "pg-1", "new_leader": "pg-2", "timeline_before": 1,
            "timeline_after": 2, "write_gap_s": 1.5, "read_gap_s": 0.1, "writes_acked": 90, "lost_writes": [],
            "healed": True, "whole_s": 9.0, "longest_stall_s": 1.6}
    ok, message = verdict(DrillResult(**base, write_errors=0))
    assert ok and "longest stall 1.60s through the pooler, 0 failed transactions" in message
    ok, message = verdict(DrillResult(**base, write_errors=2))
    assert not ok and "2 transactions failed through the pooler" in message


def test_with_hosts_a_switchover_pauses_every_pooler_and_resumes_them_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """Paused one after the other; one that cannot pause resumes those already paused, then raises."""
    from stack.errors import PoolerError
    from stack.secrets import Secrets
    from tasks import pgbouncer

    calls: list[str] = []
    refuse = {"10.0.0.2"}

    class FakeAdmin:
        def __init__(self, spec: object, secrets: object = None, timeout: int = 3,
                     endpoint: tuple[str, int] | None = None) -> None:
            assert endpoint is not None
            self.host, self.port = endpoint

        def pause(self, timeout_s: float) -> None:
            calls.append(f"pause {self.host}")
            if self.host in refuse:
                raise PoolerError(f"the pooler could not pause on {self.host}:{self.port}")

        def resume(self) -> None:
            calls.append(f"resume {self.host}")

        def close(self) -> None:
            pass

    monkeypatch.setattr(pgbouncer, "Admin", FakeAdmin)
    spec = parse_spec(MANY)
    secrets = Secrets(superuser="s", replication="r", rewind="w", restapi="p")
    with pytest.raises(PoolerError, match="could not pause on 10.0.0.2:6432"):
        with pgbouncer.paused(spec, secrets):
            calls.append("switchover")
    assert calls == ["pause 10.0.0.1", "pause 10.0.0.2", "resume 10.0.0.1", "resume 10.0.0.2"]
    calls.clear()
    refuse.clear()
    with pgbouncer.paused(spec, secrets) as held:
        assert len(held) == 3
        calls.append("switchover")
    assert calls == [*(f"pause 10.0.0.{i}" for i in (1, 2, 3)), "switchover",
                     *(f"resume 10.0.0.{i}" for i in (1, 2, 3))]
