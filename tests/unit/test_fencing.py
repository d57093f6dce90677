"""The fencer's compare-and-delete decision on recorded etcd and engine answers (tests/unit/data/fencing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stack import fencing as F
from stack import topology
from stack.spec import ClusterSpec

DATA = Path(__file__).parent / "data" / "fencing"
KEY = "/pgha-rec/leader"  # the scratch key the recordings used


def rec(name: str) -> dict[str, Any]:
    return dict(json.loads((DATA / f"{name}.json").read_text()))


def test_engine_confirms_only_a_dead_container() -> None:
    assert F.engine_verdict(rec("inspect_killed")).dead
    assert "exit code 137" in F.engine_verdict(rec("inspect_killed")).reason
    running = F.engine_verdict(rec("inspect_running"))
    assert not running.dead and "running" in running.reason
    paused = F.engine_verdict(rec("inspect_paused"))  # frozen: alive, must keep its key
    assert not paused.dead and paused.reason.startswith("paused")
    assert not F.engine_verdict(None).dead  # the engine did not answer
    assert not F.engine_verdict({}).dead
    restarting = {"State": {**rec("inspect_killed")["State"], "Restarting": True}}
    assert not F.engine_verdict(restarting).dead  # the restart policy is bringing it back
    pid_left = {"State": {**rec("inspect_killed")["State"], "Pid": 4242}}
    assert not F.engine_verdict(pid_left).dead


def test_key_names_the_dead_member_gives_a_compare_on_value_and_revision() -> None:
    read = F.parse_range(rec("range_holder_pg1"))
    assert read.holder == "pg-1" and read.mod_revision == 216
    p = F.plan("pg-1", KEY, read)
    assert p.outcome is None and p.txn is not None
    compares = {c["target"]: c for c in p.txn["compare"]}
    assert compares["VALUE"]["value"] == F._b64("pg-1") and compares["VALUE"]["result"] == "EQUAL"
    assert compares["MOD"]["mod_revision"] == "216" and compares["MOD"]["result"] == "EQUAL"
    assert p.txn["success"] == [{"request_delete_range": {"key": F._b64(KEY)}}]


def test_key_names_another_member_is_not_touched() -> None:
    p = F.plan("pg-1", KEY, F.parse_range(rec("range_holder_pg2")))
    assert p.txn is None and p.outcome == F.Outcome.NOT_LEADER and "pg-2" in p.detail


def test_no_key_is_not_leader() -> None:
    p = F.plan("pg-1", KEY, F.parse_range(rec("range_absent")))
    assert p.txn is None and p.outcome == F.Outcome.NOT_LEADER


def test_revision_moved_or_value_changed_between_read_and_delete() -> None:
    # etcd's gateway leaves out `succeeded` when the compare failed: nothing was deleted.
    for name in ("txn_revision_moved", "txn_value_changed"):
        outcome, detail = F.txn_outcome(rec(name))
        assert outcome == F.Outcome.KEY_CHANGED, name
        assert "changed" in detail


def test_successful_compare_and_delete() -> None:
    outcome, detail = F.txn_outcome(rec("txn_success"))
    assert outcome == F.Outcome.FENCED and "1 key" in detail and "220" in detail


def test_etcd_unreachable_never_fences() -> None:
    assert F.plan("pg-1", KEY, None).outcome == F.Outcome.ETCD_UNREACHABLE
    assert F.txn_outcome(None)[0] == F.Outcome.ETCD_UNREACHABLE


def test_counters_and_config_round_trip() -> None:
    c = F.Counters()
    c.count({"outcome": F.Outcome.FENCED.value, "member": "pg-1"})
    c.count({"outcome": F.Outcome.STILL_RUNNING.value, "member": "pg-2"})
    data = json.loads(c.to_json())
    assert data["by_outcome"] == {"fenced": 1, "skipped: still running": 1} and data["last"]["member"] == "pg-2"
    cfg = topology.fencer_config(ClusterSpec(scope="lab"))
    assert F.FencerConfig.from_json(cfg.to_json()) == cfg
    assert cfg.leader_key == "/service/lab/leader"
    assert cfg.etcd_urls == [f"https://lab-etcd-{i}:2379" for i in (1, 2, 3)]
    # the fencer's own certificate (its common name is no etcd user) and etcd's `fencer` user
    assert cfg.etcd_tls == {"ca": "/run/pgha/tls/ca.crt", "cert": "/run/pgha/tls/gateway.crt", "key": "/run/pgha/tls/gateway.key"}
    assert cfg.etcd_user == "fencer" and cfg.etcd_password_file == "/run/pgha/etcd-password"
    plain = topology.fencer_config(ClusterSpec(scope="lab", tls={"enabled": False}))  # type: ignore[arg-type]
    assert plain.etcd_urls[0] == "http://lab-etcd-1:2379" and plain.etcd_tls is None and plain.etcd_user is None


def _proxy_allows(cfg: str, url: str) -> bool:
    """What the rendered proxy lets through for a GET of `url` (its two ACLs, as Python regexes)."""
    import re

    acls = {line.split()[1]: line.split(None, 3)[3] for line in cfg.splitlines() if line.strip().startswith("acl ")}
    path = url.split("?", 1)[0]
    return bool(re.match(acls["allowed_path"], path)) or bool(re.match(acls["allowed_events"], url))


_EVENTS = f"/events?{F.events_query('lab')}&since=1765060000.123456789"


@pytest.mark.parametrize(("path", "allowed"), [
    ("/_ping", True), (_EVENTS, True), ("/v1.41" + _EVENTS, True), ("/containers/lab-pg-1/json", True),
    ("/v1.41/containers/lab-pg-12/json", True),
    # another container's inspection (its environment) or another cluster's, and unfiltered events
    ("/v1.41/containers/abc123/json", False), ("/containers/other-pg-1/json", False),
    ("/containers/lab-etcd-1/json", False), ("/containers/lab-pg-1x/json", False), ("/v1.41/events", False),
    (f"/events?{F.events_query('other')}&since=1", False), (_EVENTS + "&until=2", False),
    ("/containers/json", False), ("/containers/lab-pg-1/kill", False),
    ("/containers/lab-pg-1/exec", False), ("/images/json", False), ("/v1.41/containers/create", False),
])
def test_socket_proxy_lets_through_only_the_clusters_events_and_inspection(path: str, allowed: bool) -> None:
    cfg = topology.render_socket_proxy("lab")
    rule = next(line for line in cfg.splitlines() if "http-request deny" in line)
    assert rule.split("unless ", 1)[1] == "METH_GET allowed_path or METH_GET allowed_events"  # GET only
    assert _proxy_allows(cfg, path) is allowed


def test_agent_asks_exactly_what_its_proxy_lets_through() -> None:
    from tasks import fencer_agent

    cfg = topology.fencer_config(ClusterSpec(scope="lab"))
    assert _proxy_allows(topology.render_socket_proxy("lab"), fencer_agent._events_path(cfg, 1765060000.5))


def test_socket_proxy_runs_without_root_and_the_agent_as_nobody() -> None:
    script = topology.FENCER_START
    assert 'setpriv --reuid=haproxy --regid="$gid" --clear-groups haproxy' in script
    assert "\nhaproxy " not in script  # never started as root
    assert "setpriv --reuid=nobody" in script


def test_fencer_container_mounts_the_socket_read_only_and_follows_the_spec() -> None:
    spec = ClusterSpec(scope="lab")
    p = topology.fencer(spec, "img:1", "/conf", {"fencer.py": "agent", "fencing.py": "pure"})
    assert p.container.role == "fencer" and p.container.binds == {"/var/run/docker.sock": "/var/run/docker.sock"}
    assert set(p.files) == {"fencer.py", "fencing.py", "fencer.json", "sockproxy.cfg", "fencer.sh"}
    with_pw = topology.fencer(spec, "img:1", "/conf", {"fencer.py": "agent", "fencing.py": "pure"}, etcd_password="s3cret")
    assert with_pw.files["etcd-password"] == "s3cret" and "s3cret" not in with_pw.container.config_hash
    assert "setpriv --reuid=nobody" in p.files["fencer.sh"]  # the agent cannot open the socket itself
    other = topology.fencer(spec, "img:1", "/conf", {"fencer.py": "agent v2", "fencing.py": "pure"})
    assert other.container.config_hash != p.container.config_hash  # a new agent recreates the fencer
