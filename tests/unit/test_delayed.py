"""Delayed replicas (`delayed:`): the spec's refusals, the rendered tags and parameter, the switchover
refusal, the audit's `delayed.within` row and the recovery's refusals — all without Docker."""

from __future__ import annotations

import pytest
import yaml

from stack import audit as A
from stack import audit_obs as AO
from stack import findings as AF
from stack import render
from stack.cluster import ClusterView, Member, MemberRole
from stack.delayed import check_database, choose_source, parse_table, restore_problem
from stack.errors import SpecError, UsageError
from stack.findings import Level
from stack.secrets import Secrets
from stack.spec import ClusterSpec, parse_spec
from stack.switchover import plan_switchover

SECRETS = Secrets(superuser="su-pw-123", replication="repl-pw-456", rewind="rw-pw-789", restapi="api-pw-000")
SPEC = parse_spec({"delayed": [{"name": "pg-3", "delay": "1h"}]})


# ---- spec ----


@pytest.mark.parametrize(("delay", "seconds"), [("1h", 3600), ("30s", 30), ("10m", 600), ("2d", 172800),
                                                (90, 90), ("45", 45), ("7d", 604800)])
def test_delays_in_seconds_minutes_hours_and_days(delay: object, seconds: int) -> None:
    spec = parse_spec({"delayed": [{"name": "pg-3", "delay": delay}]})
    assert spec.delayed[0].seconds == seconds
    assert spec.delay_of("pg-3") is not None and spec.delay_of("pg-2") is None
    assert spec.delayed_names() == ["pg-3"]


@pytest.mark.parametrize(("spec", "fragment"), [
    ({"delayed": [{"name": "pg-3", "delay": "0s"}]}, "delay 0s is not positive"),
    ({"delayed": [{"name": "pg-3", "delay": 0}]}, "is not positive"),
    ({"delayed": [{"name": "pg-3", "delay": "-5m"}]}, "delay -5m is not positive"),
    ({"delayed": [{"name": "pg-3", "delay": "8d"}]}, "more than 7d"),
    ({"delayed": [{"name": "pg-3", "delay": "1 year"}]}, "is not a delay"),
    ({"delayed": [{"name": "pg-3", "delay": True}]}, "is not a delay"),
    ({"delayed": [{"name": "pg-3"}]}, "delayed.0.delay: Field required"),
    ({"delayed": [{"name": "pg-9", "delay": "1h"}]}, "delayed names unknown node 'pg-9'"),
    ({"delayed": [{"name": "pg-3", "delay": "1h"}, {"name": "pg-3", "delay": "2h"}]}, "lists node 'pg-3' twice"),
    ({"delayed": [{"name": "pg-2", "delay": "1h"}, {"name": "pg-3", "delay": "1h"}]}, "no failover candidate"),
    ({"nodes": 2, "delayed": [{"name": "pg-2", "delay": "1h"}]}, "no failover candidate"),
    ({"nodes": 1, "delayed": [{"name": "pg-1", "delay": "1h"}]}, "every node is delayed"),
])
def test_bad_delayed_specs_are_one_line(spec: dict[str, object], fragment: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(spec)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


# ---- rendering ----


def test_the_delayed_node_is_tagged_out_and_delays_replay_locally() -> None:
    cfg = yaml.safe_load(render.render_patroni_yml(SPEC, "pg-3", "172.30.0.0/16", SECRETS))
    assert cfg["tags"] == {"nofailover": True, "noloadbalance": True, "clonefrom": False, "nosync": True}
    # Local parameters: Patroni merges them over the DCS's, so `config set` never undoes the delay.
    assert cfg["postgresql"]["parameters"]["recovery_min_apply_delay"] == "3600s"
    assert "recovery_min_apply_delay" not in cfg["bootstrap"]["dcs"]["postgresql"]["parameters"]
    other = yaml.safe_load(render.render_patroni_yml(SPEC, "pg-2", "172.30.0.0/16", SECRETS))
    assert other["tags"] == {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False}
    assert "recovery_min_apply_delay" not in other["postgresql"]["parameters"]


def test_nosync_only_with_synchronous_replication() -> None:
    spec = parse_spec({"profile": "patroni-defaults", "delayed": [{"name": "pg-3", "delay": "1h"}]})
    assert render.node_tags(spec, "pg-3") == {"nofailover": True, "noloadbalance": True, "clonefrom": False,
                                              "nosync": False}


def test_haproxy_reads_route_by_patronis_replica_check() -> None:
    """noloadbalance makes Patroni's /replica answer 503: the R/O backend's check is that endpoint."""
    replicas = next(s for s in render.haproxy_sections(SPEC) if s.header == "listen replicas")
    assert f"option httpchk {render.CHECK_METHOD} /replica" in replicas.directives
    assert "http-check expect status 200" in replicas.directives


# ---- switchover ----


def _view() -> ClusterView:
    return ClusterView(members=[Member("pg-1", MemberRole.LEADER, "running", 1, None),
                                Member("pg-2", MemberRole.SYNC_STANDBY, "streaming", 1, 0),
                                Member("pg-3", MemberRole.REPLICA, "streaming", 1, 0)])


def test_a_delayed_node_is_refused_as_switchover_target() -> None:
    with pytest.raises(UsageError, match="--to pg-3 is a delayed replica"):
        plan_switchover(_view(), SPEC, "pg-3")


def test_a_delayed_node_is_never_the_default_candidate() -> None:
    spec = parse_spec({"profile": "patroni-defaults", "delayed": [{"name": "pg-2", "delay": "1h"}], "nodes": 3})
    view = ClusterView(members=[Member("pg-1", MemberRole.LEADER, "running", 1, None),
                                Member("pg-2", MemberRole.REPLICA, "streaming", 1, 0),
                                Member("pg-3", MemberRole.REPLICA, "streaming", 1, 500)])
    assert plan_switchover(view, spec, None).candidate == "pg-3"


# ---- audit ----


def _haproxy(ro_up: tuple[str, ...]) -> AO.HaproxyObs:
    nodes = ("pg-1", "pg-2", "pg-3")
    return AO.HaproxyObs(primary={n: AO.Backend("UP" if n == "pg-1" else "DOWN", 0) for n in nodes},
                        replicas={n: AO.Backend("UP" if n in ro_up else "DOWN", 0) for n in nodes},
                        rw_member="pg-1", rw_writable=True, ro_member="pg-2", ro_in_recovery=True)


def _row(name: str, lag_s: float | None) -> AO.ReplicationRow:
    return AO.ReplicationRow(name, "streaming", "async", 10_000_000, lag_s)


@pytest.mark.parametrize(("lag_s", "level"), [(None, Level.OK), (3600.0, Level.OK), (3609.0, Level.OK),
                                              (3610.0, Level.WARN), (3660.0, Level.CRITICAL)])
def test_delayed_within_grades_the_lag_beyond_the_delay(lag_s: float | None, level: Level) -> None:
    th = SPEC.audit  # lag_warn_s 10, lag_critical_s 60
    (f,) = A.check_delayed("pg-1", [_row("pg-2", 0.1), _row("pg-3", lag_s)], _haproxy(("pg-2",)), SPEC, th)
    assert (f.check, f.target, f.status) == ("delayed.within", "pg-3", level)


def test_delayed_within_is_critical_in_ro_routing() -> None:
    (f,) = A.check_delayed("pg-1", [_row("pg-3", 1.0)], _haproxy(("pg-2", "pg-3")), SPEC, SPEC.audit)
    assert f.status == Level.CRITICAL and "R/O routing" in f.observed


def test_delayed_within_is_critical_when_the_delayed_node_leads() -> None:
    (f,) = A.check_delayed("pg-3", [], _haproxy(("pg-2",)), SPEC, SPEC.audit)
    assert f.status == Level.CRITICAL and f.observed == "the primary" and "pgha switchover" in f.hint


def test_the_delayed_node_gets_no_lag_rows() -> None:
    rows = [AO.ReplicationRow("pg-2", "streaming", "sync", 0, 0.0), _row("pg-3", 3600.0)]
    fs = A.check_replication("pg-1", rows, SPEC, SPEC.audit)
    assert not [f for f in fs if f.target == "pg-3" and f.check.startswith("replication.lag")]
    assert AF.worst(fs) == Level.OK


# ---- recover-from-delayed ----


def test_table_names() -> None:
    assert parse_table("public.orders").qualified == "public.orders"
    assert parse_table("orders").qualified == "public.orders"
    for bad in ("Public.Orders", "a.b.c", "x; drop table y", "", "o'rders", "*"):
        with pytest.raises(UsageError, match="is not SCHEMA.TABLE"):
            parse_table(bad)
    assert check_database("shop-1") == "shop-1"
    with pytest.raises(UsageError):
        check_database("shop; drop")


def test_the_source_is_a_delayed_node() -> None:
    assert choose_source(SPEC, None) == "pg-3"
    assert choose_source(SPEC, "pg-3") == "pg-3"
    with pytest.raises(UsageError, match="--from pg-2 is not a delayed replica"):
        choose_source(SPEC, "pg-2")
    with pytest.raises(UsageError, match="has no delayed replica"):
        choose_source(ClusterSpec(), None)


def test_restore_refusals() -> None:
    ref = parse_table("public.orders")
    assert "still exists on the primary" in (restore_problem(True, True, ref, "pg-3", "1h") or "")
    assert "older than its delay (1h)" in (restore_problem(False, False, ref, "pg-3", "1h") or "")
    assert restore_problem(False, True, ref, "pg-3", "1h") is None


def test_the_delay_is_not_a_cluster_wide_parameter() -> None:
    with pytest.raises(SpecError, match="declared per node in the spec's `delayed:`"):
        parse_spec({"postgres_parameters": {"recovery_min_apply_delay": "1h"}})


def test_scaling_below_the_delayed_node_or_its_candidates_is_refused() -> None:
    from stack.scale import scaled_spec

    with pytest.raises(UsageError, match="cannot scale pgha-it-x to 2 nodes: delayed names unknown node 'pg-3'"):
        scaled_spec(SPEC.model_copy(update={"scope": "pgha-it-x"}), 2)
    four = parse_spec({"nodes": 4, "delayed": [{"name": "pg-3", "delay": "1h"}]})
    assert scaled_spec(four, 3).delay_of("pg-3") is not None
