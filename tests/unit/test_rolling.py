"""Rolling-change decisions: upgrade order and resume, pre-check refusals, parameter checks,
scale plans, etcd replacement, the security image base, the spec's upgrade policy and CLI refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from stack.rolling import (
    NodeFacts,
    Setting,
    StepKind,
    UpgradeFacts,
    check_parameter,
    etcd_replace_refusal,
    parse_assignments,
    pg_major_of,
    plan_scale,
    plan_upgrade,
    precheck,
    switchover_candidate,
    version_text,
)
from stack.spec import ClusterSpec, RestartPolicy, parse_spec
from tasks import images

OLD, NEW = "pgha/node:pg15-old", "pgha/node:pg15-new"


def nodes(*spec: tuple[str, str, str]) -> list[NodeFacts]:
    """(name, image, role) with role leader | sync | replica."""
    return [NodeFacts(n, img, is_leader=r == "leader", is_sync=r == "sync") for n, img, r in spec]


def test_plan_replicas_first_then_switchover_then_old_leader() -> None:
    plan = plan_upgrade(nodes(("pg-1", OLD, "leader"), ("pg-2", OLD, "sync"), ("pg-3", OLD, "replica")), NEW)
    assert [(s.kind, s.member) for s in plan.steps] == [
        (StepKind.NODE, "pg-2"), (StepKind.NODE, "pg-3"), (StepKind.SWITCHOVER, "pg-1"), (StepKind.NODE, "pg-1")]
    assert plan.already == []


def test_plan_resume_never_touches_done_nodes() -> None:
    plan = plan_upgrade(nodes(("pg-1", OLD, "leader"), ("pg-2", NEW, "sync"), ("pg-10", OLD, "replica"),
                              ("pg-3", NEW, "replica")), NEW)
    assert [s.member for s in plan.steps] == ["pg-10", "pg-1", "pg-1"]
    assert plan.already == ["pg-2", "pg-3"]
    done = plan_upgrade(nodes(("pg-1", NEW, "leader"), ("pg-2", NEW, "replica")), NEW)
    assert done.nothing_to_do and done.already == ["pg-1", "pg-2"]


def test_plan_restart_policy_and_single_node_skip_the_switchover() -> None:
    plan = plan_upgrade(nodes(("pg-1", OLD, "leader"), ("pg-2", OLD, "replica")), NEW, "restart")
    assert [s.kind for s in plan.steps] == [StepKind.NODE, StepKind.NODE]
    single = plan_upgrade(nodes(("pg-1", OLD, "leader")), NEW)
    assert [(s.kind, s.member) for s in single.steps] == [(StepKind.NODE, "pg-1")]


def test_switchover_candidate_prefers_the_upgraded_sync_standby() -> None:
    assert switchover_candidate(nodes(("pg-1", OLD, "leader"), ("pg-2", NEW, "replica"), ("pg-3", NEW, "sync")),
                                NEW) == "pg-3"
    # Sync mode but the sync standby is not upgraded: Patroni would refuse any other; wait.
    assert switchover_candidate(nodes(("pg-1", OLD, "leader"), ("pg-2", NEW, "replica"), ("pg-3", OLD, "sync")),
                                NEW) is None
    assert switchover_candidate(nodes(("pg-1", OLD, "leader"), ("pg-3", NEW, "replica"), ("pg-2", NEW, "replica")),
                                NEW) == "pg-2"
    assert switchover_candidate(nodes(("pg-1", OLD, "leader"), ("pg-2", OLD, "replica")), NEW) is None


def facts(**kw: object) -> UpgradeFacts:
    base: dict[str, object] = {"current_major": 15, "target_image": NEW, "target_exists": True, "target_major": 15,
                               "healthy": True, "max_lag_bytes": 0, "oldest_transaction_s": 1.0}
    base.update(kw)
    return UpgradeFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "needle"), [
    ({"target_exists": False}, "does not exist locally"),
    ({"target_major": None}, "not a pgha node image"),
    ({"target_major": 17}, "major version change needs pg_upgrade"),
    ({"paused": True}, "paused"),
    ({"healthy": False, "problem": "pg-2 is exited"}, "not healthy: pg-2 is exited"),
    ({"max_lag_bytes": None}, "not replicating"),
    ({"max_lag_bytes": 2_000_000}, "exceeds upgrade.max_lag_bytes"),
    ({"oldest_transaction_s": 900.0}, "open 900s"),
])
def test_precheck_refusals(kw: dict[str, object], needle: str) -> None:
    why = precheck(facts(**kw), max_lag=1048576, max_xact_age=300)
    assert why is not None and needle in why


def test_precheck_passes_a_healthy_same_major_cluster() -> None:
    assert precheck(facts(), max_lag=1048576, max_xact_age=300) is None


def test_pg_major_and_version_text() -> None:
    assert pg_major_of(["PATH=/x", "PG_MAJOR=15", "LANG=C.UTF-8"]) == 15
    assert pg_major_of(["PATH=/x"]) is None
    assert pg_major_of(["PG_MAJOR=fifteen"]) is None
    assert version_text(150020) == "15.20" and version_text(170012) == "17.12" and version_text(None) == "?"


def test_parse_assignments_empty_value_is_a_reset() -> None:
    assert parse_assignments(["local_preload_libraries=", "work_mem = "]) == {"local_preload_libraries": "",
                                                                             "work_mem": ""}


def test_parse_assignments() -> None:
    assert parse_assignments(["max_connections=200", " work_mem = 8MB "]) == {"max_connections": "200",
                                                                             "work_mem": "8MB"}
    for bad, needle in ((["nope"], "KEY=VALUE"), (["=1"], "KEY=VALUE"), (["a b=1"], "not a PostgreSQL parameter name"),
                        (["a=1", "a=2"], "twice"), ([], "at least one")):
        with pytest.raises(ValueError, match=needle):
            parse_assignments(bad)


INT = Setting("max_connections", "postmaster", "integer", "1", "262143",
              category="Connections and Authentication / Connection Settings")
ENUM = Setting("wal_level", "postmaster", "enum", enumvals=["minimal", "replica", "logical"],
               category="Write-Ahead Log / Settings")
BOOL = Setting("fsync", "sighup", "bool", category="Write-Ahead Log / Settings")
REAL = Setting("random_page_cost", "user", "real", "0", "1.79769e+308", category="Query Tuning / Planner Cost Constants")


def test_check_parameter() -> None:
    assert check_parameter("max_connections", "200", INT) is None
    assert check_parameter("max_connections", "64MB", INT) is None  # units are PostgreSQL's to check
    assert "integer" in (check_parameter("max_connections", "lots", INT) or "")
    assert "at most 262143" in (check_parameter("max_connections", "999999", INT) or "")
    assert "at least 1" in (check_parameter("max_connections", "0", INT) or "")
    assert check_parameter("wal_level", "LOGICAL", ENUM) is None
    assert "must be one of" in (check_parameter("wal_level", "banana", ENUM) or "")
    assert "boolean" in (check_parameter("fsync", "maybe", BOOL) or "")
    assert check_parameter("random_page_cost", "1.1", REAL) is None
    assert "number" in (check_parameter("random_page_cost", "x", REAL) or "")
    assert "Patroni" in (check_parameter("port", "5433", None) or "")
    assert "hba" in (check_parameter("hba_file", "/x", None) or "")
    assert "not a PostgreSQL parameter" in (check_parameter("no_such", "1", None) or "")
    assert "no library the server preloads" in (check_parameter("myext.setting", "x", None) or "")
    assert "compiled" in (check_parameter("block_size", "8192", Setting("block_size", "internal", "integer")) or "")


def test_plan_scale() -> None:
    names = ["pg-1", "pg-2", "pg-3"]
    grow = plan_scale(names, 5, "pg-1")
    assert grow.add == ["pg-4", "pg-5"] and grow.remove == [] and grow.switchover_to is None
    shrink = plan_scale(names + ["pg-4"], 2, "pg-4", sync=["pg-2"])
    assert shrink.remove == ["pg-4", "pg-3"] and shrink.switchover_to == "pg-2"
    assert plan_scale(names, 1, "pg-3").switchover_to == "pg-1"
    assert plan_scale(names, 2, "pg-1").switchover_to is None
    assert plan_scale(names, 3, "pg-1").describe() == "nothing to do"
    with pytest.raises(ValueError, match="at least 1"):
        plan_scale(names, 0, "pg-1")


def test_etcd_replace_refusal() -> None:
    members = ["etcd-1", "etcd-2", "etcd-3"]
    ok = {m: True for m in members}
    assert etcd_replace_refusal(members, ok, "etcd-2") is None
    assert "not an etcd member" in (etcd_replace_refusal(members, ok, "etcd-7") or "")
    assert "loses quorum" in (etcd_replace_refusal(["etcd-1"], {"etcd-1": True}, "etcd-1") or "")
    assert "no quorum" in (etcd_replace_refusal(members, {"etcd-1": False, "etcd-2": True, "etcd-3": True}, "etcd-2")
                           or "")
    five = [f"etcd-{i}" for i in range(1, 6)]
    one_down = {**{m: True for m in five}, "etcd-5": False}
    assert "one at a time" in (etcd_replace_refusal(five, one_down, "etcd-1") or "")
    assert etcd_replace_refusal(five, one_down, "etcd-5") is None  # replacing the sick one is the fix


def test_security_base_reads_the_security_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    text = images.security_base_dockerfile("pgha/base:bookworm", "bookworm", "http://deb.debian.org/debian-security")
    assert text.startswith("FROM pgha/base:bookworm\n")
    assert "deb http://deb.debian.org/debian-security bookworm-security main" in text
    assert images.security_base_tag("pgha/base:bookworm", "bookworm") != images.security_base_tag("x", "bookworm")
    monkeypatch.setenv("PGHA_DEBIAN_SECURITY_MIRROR", "http://m.example/debian-security")
    assert images.host_security_mirror() == "http://m.example/debian-security"
    with pytest.raises(Exception, match="unknown image updates"):
        images.resolve_image(ClusterSpec(), "nightly")


def test_upgrade_policy_defaults_keep_old_specs_valid() -> None:
    spec = parse_spec({"nodes": 3})
    assert spec.upgrade.primary == RestartPolicy.SWITCHOVER and spec.upgrade.node_image is None
    custom = parse_spec({"upgrade": {"primary": "restart", "max_lag_bytes": 0, "node_image": NEW}})
    assert custom.upgrade.primary == RestartPolicy.RESTART and custom.upgrade.node_image == NEW
    from stack.errors import SpecError

    with pytest.raises(SpecError, match="upgrade.primary"):
        parse_spec({"upgrade": {"primary": "reboot"}})
    with pytest.raises(SpecError, match="upgrade.node_timeout_s"):
        parse_spec({"upgrade": {"node_timeout_s": 1}})


@pytest.mark.parametrize(("args", "needle"), [
    (["config", "set", "max_connections"], "KEY=VALUE"),
    (["config", "set", "a=1", "a=2"], "twice"),
    (["scale", "--nodes", "0"], "between 1 and 9"),
    (["upgrade", "--image", " "], "--image must name"),
    (["upgrade"], "exactly one of"),
    (["upgrade", "--updates", "nightly"], "'nightly' is not one of 'security'"),
    (["upgrade", "--image", NEW, "--node-timeout", "5"], "--node-timeout must be between 10 and 3600, not 5"),
    (["images", "build", "--updates", "nightly"], "'nightly' is not one of 'none', 'security'"),
])
def test_cli_refuses_bad_arguments_in_one_line(args: list[str], needle: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgha: error:") and needle in lines[0], res.output


def test_cli_etcd_replace_refuses_an_unknown_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    res = CliRunner().invoke(app, ["etcd", "replace", "etcd-9"])
    assert res.exit_code == 2 and "not an etcd member of hy-home-db" in res.output


def test_roll_node_tells_its_caller_what_failed_but_did_not_stop_the_roll(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rollback's roll goes on past a node it cannot take out or checkpoint, and says so through
    `note` (the operation's events when a flow passes `flows.steps.ops.note`)."""
    from stack.errors import PghaError
    from tasks import rolling

    def refused(*_: object, **__: object) -> None:
        raise PghaError("tags refused\nsecond line")

    done: list[str] = []
    monkeypatch.setattr(rolling, "take_out", refused)
    monkeypatch.setattr(rolling.postgres, "checkpoint", refused)
    monkeypatch.setattr(rolling, "recreate", lambda *a, **k: done.append("recreated"))
    monkeypatch.setattr(rolling, "put_back", lambda *a, **k: done.append("put back"))
    ctx = rolling.NodeCtx(spec=parse_spec({"nodes": 2, "etcd_members": 1}, "unit"), secrets=None,  # type: ignore[arg-type]
                          subnet="", timeout=1)
    rolling.roll_node.fn(ctx, "pg-1", "img", rescue=True, note=done.append)
    assert done[0] == "pg-1: could not take it out cleanly (tags refused); recreating anyway"
    assert done[1].startswith("pg-1: CHECKPOINT failed (tags refused") and done[2:] == ["recreated", "put back"]
    with pytest.raises(PghaError):  # not a rollback: a node that cannot be taken out stops the roll
        rolling.roll_node.fn(ctx, "pg-1", "img", note=done.append)
