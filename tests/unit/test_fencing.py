"""The fencer's compare-and-delete decision on recorded etcd and engine answers (tests/unit/data/fencing)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from stack import fencing as F
from stack import render, topology
from stack.spec import ClusterSpec
from tasks.fencer import parse_counters

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
    assert parse_counters(c.to_json()) == c  # what the audit reads back, typed
    assert parse_counters('{"events": 2}') == F.Counters(events=2)
    for bad in ("[]", '{"by_outcome": 3}', '{"events": "x"}', "not json"):
        with pytest.raises(ValueError):
            parse_counters(bad)
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


# ---- HAProxy's runtime API: a confirmed death out at once, the new leader routed ----

STATE = (DATA / "haproxy_servers_state.txt").read_text()  # `show servers state`, HAProxy 3.0 (pgha-it-fk-bench)


def test_takeout_drains_the_container_s_servers_in_every_backend_and_route_marks_the_leader_up() -> None:
    rows = F.parse_servers_state(STATE)
    assert len(rows) == 6 and rows[0]["srv_fqdn"] == "pgha-it-fk-bench-pg-1"
    servers = F.servers_of(rows, "pgha-it-fk-bench-pg-1")
    assert servers == [("primary", "pg-1"), ("replicas", "pg-1")]
    # A drain and paused checks: nothing marks it down yet, so `on-marked-down shutdown-sessions`
    # cuts nothing (a stream cut while it connects hangs half-closed in HAProxy 3.0).
    assert F.takeout_commands(servers) == [
        "set server primary/pg-1 state drain", "disable health primary/pg-1",
        "set server replicas/pg-1 state drain", "disable health replicas/pg-1"]
    assert not any(" down" in c or "maint" in c or "shutdown" in c for c in F.takeout_commands(servers))
    # After timeout connect: the checks again, marked down (they decide when it is back), cut, drain ended.
    assert F.handback_commands(servers[:1]) == [
        "enable health primary/pg-1", "set server primary/pg-1 health down",
        "shutdown sessions server primary/pg-1", "set server primary/pg-1 state ready"]
    assert F.route_commands("pg-2") == ["set server primary/pg-2 health up"]
    assert F.api_line(F.route_commands("pg-2")) == b"set server primary/pg-2 health up\n"
    assert F.api_refusals("\n\n") == []
    assert F.api_refusals("No such server.\n\n") == ["No such server."]


def test_a_server_that_resolves_elsewhere_is_never_taken_out() -> None:
    # blue's HAProxy routed to green's nodes (a major upgrade): blue's pg-1 dying is not green's pg-1
    rows = F.parse_servers_state(STATE.replace("pgha-it-fk-bench-pg-1", "pgha-it-fk-bench-green-pg-1"))
    assert F.servers_of(rows, "pgha-it-fk-bench-pg-1") == []
    assert F.servers_of(F.parse_servers_state(""), "pgha-it-fk-bench-pg-1") == []  # no answer, no servers


def test_new_leader_is_only_another_member_holding_the_key() -> None:
    assert F.new_leader("pg-1", F.parse_range(rec("range_holder_pg2"))) == "pg-2"
    assert F.new_leader("pg-1", F.parse_range(rec("range_holder_pg1"))) is None  # still the dead one's
    assert F.new_leader("pg-1", F.parse_range(rec("range_absent"))) is None  # nobody promoted yet
    assert F.new_leader("pg-1", None) is None  # etcd did not answer


class FakeHAProxy:
    """A unix socket that answers `show servers state` with a recording and records every other line."""

    def __init__(self, path: str, state: str) -> None:
        import socket
        import threading

        self.lines: list[str] = []
        self.state = state
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.srv.settimeout(5)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                line = conn.recv(4096).decode()
                if line.startswith(F.SERVERS_STATE):
                    conn.sendall(self.state.encode())
                else:
                    self.lines.append(line)
                    conn.sendall(b"No such server.\n\n" if "pg-9" in line else b"\n")


def test_agent_takes_out_the_dead_container_s_servers_and_routes_the_leader(tmp_path: Path) -> None:
    from tasks import fencer_agent

    path = str(tmp_path / "api.sock")
    fake = FakeHAProxy(path, STATE)
    cfg = F.FencerConfig(scope="pgha-it-fk-bench", leader_key="k", etcd_urls=[], docker_url="", stats_file="",
                         haproxy_sockets=[path])
    assert fencer_agent.take_out(cfg, "pgha-it-fk-bench-pg-1") == "ok"
    assert fake.lines == ["set server primary/pg-1 state drain;disable health primary/pg-1;"
                          "set server replicas/pg-1 state drain;disable health replicas/pg-1\n"]
    assert fencer_agent.take_out(cfg, "other-pg-1").endswith("no server resolves to other-pg-1")
    assert fencer_agent.route(cfg, "pg-2") == "ok"
    assert fake.lines[-1] == "set server primary/pg-2 health up\n"
    assert fencer_agent.route(cfg, "pg-9").endswith("primary/pg-9 does not resolve to pgha-it-fk-bench-pg-9")
    assert len(fake.lines) == 2  # nothing sent for what does not resolve
    # handed back to the checks after handback_after_s (1.5 s by default), by a timer
    deadline = time.monotonic() + 5
    while len(fake.lines) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.lines[2] == ("enable health primary/pg-1;set server primary/pg-1 health down;"
                             "shutdown sessions server primary/pg-1;set server primary/pg-1 state ready;"
                             "enable health replicas/pg-1;set server replicas/pg-1 health down;"
                             "shutdown sessions server replicas/pg-1;set server replicas/pg-1 state ready\n")
    fake.srv.close()
    missing = F.FencerConfig(scope="s", leader_key="k", etcd_urls=[], docker_url="", stats_file="",
                             haproxy_sockets=[str(tmp_path / "none.sock")], timeout_s=0.2)
    assert fencer_agent.take_out(missing, "s-pg-1").endswith("no answer")


def test_haproxy_and_the_fencer_share_the_runtime_api_volume_on_one_engine() -> None:
    spec = ClusterSpec()
    hap = topology.haproxy(spec, "img", "/conf").container
    fen = topology.fencer(spec, "img", "/conf", {"fencer.py": "", "fencing.py": ""}).container
    assert hap.tmpfs_volumes == fen.tmpfs_volumes == {spec.haproxy_api_volume: "/run/haproxy-fence"}
    assert not hap.volumes.get(spec.haproxy_api_volume)  # not a data volume
    cfg = topology.fencer_config(spec)
    assert cfg.haproxy_sockets == ["/run/haproxy-fence/api.sock"] and cfg.route_wait_s == spec.timing.ttl
    assert "stats socket /run/haproxy-fence/api.sock mode 666 level admin" in topology.haproxy(spec, "i", "/c").files[
        "haproxy.cfg"]


def test_a_drain_left_by_a_stopped_watcher_is_found_and_handed_back_at_start(tmp_path: Path) -> None:
    from tasks import fencer_agent

    assert F.drained_by_takeout(F.parse_servers_state(STATE)) == []  # nothing drained in the recording
    cols = STATE.splitlines()
    i = next(n for n, ln in enumerate(cols) if ln.startswith("3 primary 1 pg-1 "))
    fields = cols[i].split()
    fields[6] = "8"  # srv_admin_state: forced drain (a take-out whose hand-back never ran)
    drained = "\n".join([*cols[:i], " ".join(fields), *cols[i + 1:]]) + "\n"
    assert F.drained_by_takeout(F.parse_servers_state(drained)) == [("primary", "pg-1")]
    fields[6] = "32"  # RMAINT (a name that did not resolve) is HAProxy's own, not the watcher's
    rmaint = "\n".join([*cols[:i], " ".join(fields), *cols[i + 1:]]) + "\n"
    assert F.drained_by_takeout(F.parse_servers_state(rmaint)) == []
    path = str(tmp_path / "api.sock")
    fake = FakeHAProxy(path, drained)
    cfg = F.FencerConfig(scope="pgha-it-fk-bench", leader_key="k", etcd_urls=[], docker_url="", stats_file="",
                         haproxy_sockets=[path])
    fencer_agent.hand_back_leftovers(cfg)
    assert fake.lines == [";".join(F.handback_commands([("primary", "pg-1")])) + "\n"]
    fake.srv.close()


def test_the_hand_back_waits_for_haproxy_s_connect_timeout() -> None:
    cfg = topology.fencer_config(ClusterSpec(scope="lab"))
    assert cfg.handback_after_s > render.HAPROXY_CONNECT_TIMEOUT_S
    assert f"timeout connect {render.HAPROXY_CONNECT_TIMEOUT_S}s" in render.render_haproxy_cfg(ClusterSpec(scope="lab"))
    assert "on-marked-down shutdown-sessions" in render.render_haproxy_cfg(ClusterSpec(scope="lab"))  # checks still cut


def test_server_up_reads_the_operational_state() -> None:
    rows = F.parse_servers_state(STATE)
    assert F.server_up(rows, "primary", "pg-1") is True
    assert F.server_up(rows, "primary", "pg-2") is False
    assert F.server_up(rows, "primary", "pg-9") is None


def test_hold_marks_the_lock_holder_up_again_while_the_key_names_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Patroni's /primary lags the promotion: HAProxy's checks take pg-2 down, the hold puts it back."""
    from tasks import fencer_agent

    path = str(tmp_path / "api.sock")
    fake = FakeHAProxy(path, STATE)  # pg-2 is down in `primary` there
    holders = iter(["pg-2", "pg-2", "pg-3"])  # then the key names someone else: the hold stops
    monkeypatch.setattr(fencer_agent, "etcd_post", lambda *_a: rec("range_holder_pg2") if next(holders) == "pg-2"
                        else {"kvs": []})
    cfg = F.FencerConfig(scope="pgha-it-fk-bench", leader_key="k", etcd_urls=[], docker_url="", stats_file="",
                         haproxy_sockets=[path], route_hold_s=5.0)
    t0 = time.monotonic()
    fencer_agent.hold(cfg, None, "pg-2")
    assert time.monotonic() - t0 < 2.0  # stopped when the key moved, not after 5 s
    assert fake.lines == ["set server primary/pg-2 health up\n"] * 2
    fake.srv.close()


def test_socket_proxy_forwards_the_event_stream_without_delay() -> None:
    # Without it HAProxy sends with MSG_MORE and a death reached the agent ~200 ms late (measured).
    assert "    option http-no-delay" in topology.render_socket_proxy("lab").splitlines()
