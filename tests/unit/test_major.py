"""Blue/green major upgrade decisions (stack/major.py): pre-checks, resume-or-rollback, green, routing."""

from __future__ import annotations

import pytest

from cli.app import app  # noqa: F401 - registers the verbs and their options
from cli.core import OPTIONAL_VALUES, fill_optional_values
from stack import major
from stack.errors import SpecError
from stack.major import Action, MajorFacts, MajorState, Phase, Request, next_action, precheck
from stack.spec import parse_spec

BLUE = parse_spec({"scope": "shop", "nodes": 2, "etcd_members": 1, "postgres_version": 15,
                   "ports": {"rw": 6432, "ro": 6433, "stats": 9404, "pool": 6434}}, "unit")


def facts(**kw: object) -> MajorFacts:
    base: dict[str, object] = {"healthy": True, "current_major": 15, "target_major": 17}
    base.update(kw)
    return MajorFacts.model_validate(base)


def state(phase: Phase, **kw: object) -> MajorState:
    base: dict[str, object] = {"phase": phase, "target": 17, "source": 15, "green_scope": "shop-green",
                               "databases": ["postgres"]}
    base.update(kw)
    return MajorState.model_validate(base)


# ---- pre-checks ----


def test_precheck_passes_a_clean_cluster() -> None:
    v = precheck(facts(), replica_identity_full=False)
    assert v.ok and v.notes == [] and v.set_replica_identity == []


def test_precheck_refuses_tables_without_key_until_replica_identity_full() -> None:
    f = facts(tables_without_key=["bench.public.pgbench_history", "bench.public.nokey"])
    v = precheck(f, replica_identity_full=False)
    assert not v.ok
    assert "2 table(s)" in v.refusal and "bench.public.nokey" in v.refusal and "--replica-identity-full" in v.refusal
    v = precheck(f, replica_identity_full=True)
    assert v.ok and v.set_replica_identity == f.tables_without_key
    assert any("REPLICA IDENTITY FULL" in n for n in v.notes)


@pytest.mark.parametrize(("kw", "words"), [
    ({"healthy": False, "problem": "pg-2 is exited"}, "not healthy: pg-2 is exited"),
    ({"target_major": 15}, "newer major"),
    ({"target_major": 13}, "not packaged"),
    ({"image_problem": "build failed"}, "image cannot be had"),
    ({"green_scope_free": False}, "pgha down --volumes"),
    ({"ports_problem": "port 6442 is in use"}, "green's ports"),
    ({"data_bytes": 100, "free_bytes": 150}, "not enough disk"),
])
def test_precheck_refusals_name_the_fix(kw: dict[str, object], words: str) -> None:
    v = precheck(facts(**kw), replica_identity_full=False)
    assert not v.ok and words in v.refusal


def test_precheck_says_what_it_will_do_about_wal_level_and_large_objects() -> None:
    v = precheck(facts(wal_level="replica", large_objects=3), replica_identity_full=False)
    assert v.ok
    assert any("rolling restart" in n for n in v.notes)
    assert any("3 large object(s) will NOT be copied" in n for n in v.notes)


def test_unhealthy_comes_before_the_table_list() -> None:
    v = precheck(facts(healthy=False, problem="no leader", tables_without_key=["a.b.c"]), False)
    assert "not healthy" in v.refusal


# ---- resume or roll back ----


def test_nothing_recorded() -> None:
    assert next_action(None, Request.UPGRADE).action == Action.START
    for r in (Request.ROLLBACK, Request.FINISH):
        d = next_action(None, r)
        assert d.action == Action.NOTHING and "no major upgrade in progress" in d.reason


def test_killed_while_green_was_built_removes_green_blue_untouched() -> None:
    st = state(Phase.GREEN)
    assert next_action(st, Request.UPGRADE).action == Action.RESTART
    assert next_action(st, Request.ROLLBACK).action == Action.DISCARD_GREEN
    assert "blue untouched" in next_action(st, Request.FINISH).reason


def test_killed_in_cutover_before_green_could_take_writes_reopens_blue() -> None:
    st = state(Phase.CUTOVER, routed="fenced", reverse=False)
    for r in Request:
        assert next_action(st, r).action == Action.REOPEN_BLUE


@pytest.mark.parametrize("kw", [{"reverse": True, "routed": "fenced"}, {"reverse": True, "routed": "green"},
                                {"reverse": False, "routed": "green"}])
def test_killed_in_cutover_after_green_could_take_writes_rolls_back(kw: dict[str, object]) -> None:
    """Never two writable primaries: once green may have writes, only a real rollback (blue catches up) is safe."""
    st = state(Phase.CUTOVER, **kw)
    for r in Request:
        assert next_action(st, r).action == Action.ROLL_BACK


def test_on_green() -> None:
    st = state(Phase.ON_GREEN, reverse=True, routed="green")
    assert next_action(st, Request.ROLLBACK).action == Action.ROLL_BACK
    assert next_action(st, Request.FINISH).action == Action.FINISH
    d = next_action(st, Request.UPGRADE)
    assert d.action == Action.NOTHING and "--finish" in d.reason


def test_an_interrupted_rollback_is_resumed_whatever_is_asked() -> None:
    st = state(Phase.ROLLING_BACK, reverse=True, routed="fenced")
    for r in Request:
        assert next_action(st, r).action == Action.ROLL_BACK


def test_finished_is_final() -> None:
    st = state(Phase.FINISHED)
    for r in Request:
        d = next_action(st, r)
        assert d.action == Action.NOTHING and "shop-green" in d.reason


def test_rolled_back() -> None:
    st = state(Phase.ON_BLUE)
    assert next_action(st, Request.UPGRADE).action == Action.RESTART
    assert next_action(st, Request.ROLLBACK).action == Action.NOTHING
    assert next_action(st, Request.FINISH).action == Action.DISCARD_GREEN


# ---- green and routing ----


def test_green_spec_is_blue_on_the_new_major_with_its_own_names_and_ports() -> None:
    g = major.green_spec(BLUE, 17)
    assert g.scope == "shop-green" and g.postgres_version == 17 and g.suite == "trixie"
    assert (g.ports.rw, g.ports.ro, g.ports.stats) == (6442, 6443, 9414)
    assert g.nodes == BLUE.nodes and g.etcd_members == BLUE.etcd_members
    assert g.postgres_parameters["wal_level"] == "logical"
    assert g.network != BLUE.network and g.container("pg-1") == "shop-green-pg-1"


def test_green_spec_refuses_a_scope_that_grows_too_long() -> None:
    long_blue = BLUE.model_copy(update={"scope": "a" * 38})
    with pytest.raises(SpecError, match="scope"):
        major.green_spec(long_blue, 17)


def test_routed_haproxy_cfg_keeps_the_clients_ports_and_swaps_the_servers() -> None:
    g = major.green_spec(BLUE, 17)
    text = major.routed_haproxy_cfg(BLUE, g)
    assert "server pg-1 shop-green-pg-1:5432" in text and "shop-pg-1" not in text
    assert text.count("bind :5432") == 1 and text.count("bind :5433") == 1
    back = major.routed_haproxy_cfg(BLUE, BLUE)
    assert "server pg-1 shop-pg-1:5432" in back and "green" not in back


def test_fenced_haproxy_cfg_has_no_write_server_but_keeps_reads() -> None:
    text = major.routed_haproxy_cfg(BLUE, None)
    primary = text.split("listen primary")[1].split("listen replicas")[0]
    replicas = text.split("listen replicas")[1]
    assert not [ln for ln in primary.splitlines() if ln.strip().startswith("server ")] and "bind :5432" in primary
    assert "server pg-2 shop-pg-2:5432" in replicas


def test_caught_up_needs_every_database() -> None:
    assert major.caught_up({"a": True, "b": True})
    assert not major.caught_up({"a": True, "b": False})
    assert not major.caught_up({})


def test_setval_statements_quote_names() -> None:
    assert major.setval_statements({'public."we\'ird"': 7, "public.s1": 3}) == [
        "select setval('public.\"we''ird\"', 7, true)", "select setval('public.s1', 3, true)"]


def test_major_without_a_value_means_the_newest() -> None:
    assert OPTIONAL_VALUES["--major"] == "latest"
    assert fill_optional_values(["upgrade", "--major"]) == ["upgrade", "--major", "latest"]
    assert fill_optional_values(["upgrade", "--major", "--rollback"]) == ["upgrade", "--major", "latest", "--rollback"]
    assert fill_optional_values(["upgrade", "--major", "17", "--scope", "x"]) == [
        "upgrade", "--major", "17", "--scope", "x"]
