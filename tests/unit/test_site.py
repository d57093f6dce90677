"""A second site (`standby_of:`): spec refusals, the rendered standby_cluster, the decisions of
`pgha site status` / `site promote`, and status and audit accepting a standby leader."""

from __future__ import annotations

import pytest
import yaml

from stack import audit as A
from stack import audit_obs as AO
from stack import findings as AF
from stack import render, site
from stack.cluster import ClusterView, Member, MemberRole, assess
from stack.errors import SpecError
from stack.secrets import Secrets
from stack.spec import ClusterSpec, parse_spec

SECRETS = Secrets(superuser="s", replication="r", rewind="w", restapi="a")
STANDBY = parse_spec({"scope": "site-b", "nodes": 2, "backup": {"enabled": False}, "standby_of": {"scope": "site-a"}})


@pytest.mark.parametrize(("spec", "fragment"), [
    ({"scope": "site-a", "backup": {"enabled": False}, "standby_of": {"scope": "site-a"}}, "own scope"),
    ({"standby_of": {"scope": "site-a"}}, "set backup: {enabled: false}"),
    ({"backup": {"enabled": False}, "standby_of": {"scope": "Site A"}}, "not a valid scope"),
    ({"backup": {"enabled": False}, "standby_of": {}}, "standby_of.scope: Field required"),
    ({"backup": {"enabled": False}, "standby_of": {"scope": "site-a"},
      "roles": [{"name": "app"}]}, "physical copy of its primary site"),
])
def test_bad_standby_specs_are_one_line(spec: dict[str, object], fragment: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(spec)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_the_standby_cluster_streams_from_the_primary_sites_haproxy_through_its_slot() -> None:
    cfg = yaml.safe_load(render.render_patroni_yml(STANDBY, "pg-1", "172.30.0.0/16,172.31.0.0/16", SECRETS))
    assert cfg["bootstrap"]["dcs"]["standby_cluster"] == {
        "host": "site-a-haproxy", "port": 5432, "create_replica_methods": ["basebackup"],
        "primary_slot_name": "standby_site_b"}
    # verify-full against the primary site's CA (adopted): its member certificate names its HAProxy
    assert cfg["postgresql"]["authentication"]["replication"]["sslmode"] == "verify-full"
    hba = cfg["postgresql"]["pg_hba"]
    assert "hostssl replication replicator 172.31.0.0/16 scram-sha-256" in hba
    assert "hostssl all all 172.30.0.0/16 scram-sha-256" in hba
    no_slot = STANDBY.model_copy(update={"standby_of": STANDBY.standby_of.model_copy(update={"slot": False})})  # type: ignore[union-attr]
    assert "primary_slot_name" not in render.dcs_config(no_slot)["standby_cluster"]
    assert "standby_cluster" not in render.dcs_config(ClusterSpec())


def test_the_rw_port_routes_to_the_leader_lock_holder_on_a_standby_site() -> None:
    assert "OPTIONS /leader" in render.render_haproxy_cfg(STANDBY)
    assert "OPTIONS /primary" in render.render_haproxy_cfg(ClusterSpec())


def test_lag_from_the_lsns() -> None:
    assert site.lsn_bytes("1/0") == 1 << 32
    assert site.standby_lag("0/5000100", "0/5000000", 3.5) == (256, 3.5)
    assert site.standby_lag("0/5000000", "0/5000000", 300.0) == (0, 0.0)  # caught up: idle is not lag
    assert site.standby_lag(None, "0/5000000", 1.0) == (None, None)
    # Streaming, everything received replayed: the bytes in flight (or a checkpoint's WAL) are no lag in time.
    assert site.standby_lag("0/5000100", "0/5000000", 600.0, "0/5000000", streaming=True) == (256, 0.0)
    assert site.standby_lag("0/5000100", "0/5000000", 600.0, "0/5000080", streaming=True) == (256, 600.0)
    assert site.standby_lag("0/5000100", "0/5000000", 600.0, "0/5000000", streaming=False) == (256, 600.0)


def test_secrets_versions_and_tls_must_match_the_primary() -> None:
    primary = {"superuser": "s", "replication": "r", "rewind": "w", "restapi": "x"}
    assert site.secrets_problem(primary, None, "site-a") is None
    assert site.secrets_problem(primary, {**primary, "restapi": "own"}, "site-a") is None
    assert "superuser password differs" in (site.secrets_problem(primary, {**primary, "superuser": "z"}, "site-a") or "")
    a = parse_spec({"scope": "site-a", "postgres_version": 15})
    assert "needs the same major version" in (site.version_problem(STANDBY, a) or "")
    assert site.version_problem(STANDBY, parse_spec({"scope": "site-a"})) is None
    assert "both sites must agree" in (site.tls_problem(STANDBY, parse_spec({"scope": "site-a", "tls": {
        "enabled": False}})) or "")


@pytest.mark.parametrize(("standby", "yes", "writable", "allow", "want"), [
    (False, True, False, False, site.PromoteDecision.NOT_STANDBY),
    (True, False, False, False, site.PromoteDecision.NEEDS_YES),
    (True, True, True, False, site.PromoteDecision.PRIMARY_WRITABLE),
    (True, True, True, True, site.PromoteDecision.PROCEED),
    (True, True, False, False, site.PromoteDecision.PROCEED),
])
def test_promote_decision(standby: bool, yes: bool, writable: bool, allow: bool, want: site.PromoteDecision) -> None:
    decision = site.promote_decision(standby, yes, writable, allow)
    assert decision == want
    refusal = site.promote_refusal(decision, "site-b", "site-a")
    assert (refusal is None) == (want == site.PromoteDecision.PROCEED)
    if decision == site.PromoteDecision.PRIMARY_WRITABLE:
        assert "pgha down --scope site-a" in (refusal or "") and "--primary-writable-ok" in (refusal or "")


def _standby_view(leader_state: str = "streaming") -> ClusterView:
    return ClusterView(members=[Member("pg-1", MemberRole.STANDBY_LEADER, leader_state, timeline=1),
                                Member("pg-2", MemberRole.REPLICA, "streaming", timeline=1, lag=0)])


def test_a_standby_leader_makes_a_whole_standby_cluster_without_a_sync_standby() -> None:
    r = assess(_standby_view(), STANDBY)
    assert r.ok and "standby leader pg-1 following site-a" in r.reason, r.reason
    promoted = ClusterView(members=[Member("pg-1", MemberRole.LEADER, "running", timeline=2),
                                    Member("pg-2", MemberRole.REPLICA, "streaming", timeline=2, lag=0)])
    assert not assess(promoted, STANDBY).ok  # promoted: the spec still says standby_of


def test_the_audit_expects_a_standby_leader_and_a_read_only_rw_port_on_a_standby_site() -> None:
    obs = AO.PatroniObs(members=_standby_view().members, paused=False, liveness={"pg-1": 200, "pg-2": 200}, readiness={"pg-1": 200, "pg-2": 200})
    rows = {(f.check, f.target): f for f in A.check_patroni(obs, STANDBY)}
    assert rows[("patroni.leader", "site-b")].status == AF.Level.OK
    assert rows[("patroni.member", "pg-1")].status == AF.Level.OK
    plain = {(f.check, f.target): f for f in A.check_patroni(obs, STANDBY.model_copy(update={"standby_of": None}))}
    assert plain[("patroni.leader", "site-b")].status == AF.Level.CRITICAL
    assert [f.check for f in A.check_replication("pg-1", [], STANDBY, STANDBY.audit)
            if f.check == "replication.sync_standby"] == []


@pytest.mark.parametrize(("obs", "level", "fragment"), [
    (AO.StandbyObs(receiver="streaming", lag_bytes=0, lag_s=0.0), AF.Level.OK, "streaming, 0 B / 0 s behind site-a"),
    (AO.StandbyObs(receiver="streaming", lag_bytes=2 * 1048576, lag_s=1.0), AF.Level.WARN, "2097152 B"),
    (AO.StandbyObs(receiver="streaming", lag_bytes=100, lag_s=120.0), AF.Level.CRITICAL, "120 s"),
    (AO.StandbyObs(receiver=None, lag_bytes=None, lag_s=None), AF.Level.CRITICAL, "not streaming (receiver: none)"),
    (None, AF.Level.CRITICAL, "no answer"),
])
def test_the_audit_row_of_the_standby_link(obs: AO.StandbyObs | None, level: AF.Level, fragment: str) -> None:
    [f] = A.check_standby(obs, STANDBY, STANDBY.audit)
    assert f.check == "site.standby" and f.status == level and fragment in f.observed, f
    assert A.check_standby(obs, ClusterSpec(), ClusterSpec().audit) == []


# ---- site switchover ----

MIB = 1024 * 1024


@pytest.mark.parametrize(("args", "want"), [
    ((False, True, True, True, True, 0), site.SwitchoverDecision.NOT_STANDBY),
    ((True, False, True, True, True, 0), site.SwitchoverDecision.NEEDS_YES),
    ((True, True, False, True, True, 0), site.SwitchoverDecision.PRIMARY_UNHEALTHY),
    ((True, True, True, False, True, 0), site.SwitchoverDecision.PRIMARY_UNHEALTHY),
    ((True, True, True, True, False, 0), site.SwitchoverDecision.NOT_STREAMING),
    ((True, True, True, True, True, None), site.SwitchoverDecision.LAGGING),
    ((True, True, True, True, True, site.SWITCHOVER_MAX_LAG_BYTES + 1), site.SwitchoverDecision.LAGGING),
    ((True, True, True, True, True, site.SWITCHOVER_MAX_LAG_BYTES), site.SwitchoverDecision.PROCEED),
    ((True, True, True, True, True, 0), site.SwitchoverDecision.PROCEED),
])
def test_switchover_decision(args: tuple[bool, bool, bool, bool, bool, int | None],
                             want: site.SwitchoverDecision) -> None:
    decision = site.switchover_decision(*args)
    assert decision == want
    refusal = site.switchover_refusal(decision, "site-b", "site-a", "detail")
    assert (refusal is None) == (want == site.SwitchoverDecision.PROCEED)
    assert refusal is None or "\n" not in refusal
    if want == site.SwitchoverDecision.NEEDS_YES:
        assert "add --yes" in (refusal or "")
    if want == site.SwitchoverDecision.PRIMARY_UNHEALTHY:
        assert "pgha site failover --scope site-b --yes" in (refusal or "")
    if want == site.SwitchoverDecision.LAGGING:
        assert "64 MiB" in (refusal or "")


def test_the_demoted_site_becomes_a_standby_of_the_new_primary_through_the_same_kind_of_slot() -> None:
    primary = parse_spec({"scope": "site-a", "nodes": 2, "backup": {"enabled": False}})
    demoted = site.demoted_spec(primary, STANDBY)
    assert demoted.standby_of is not None and demoted.standby_of.scope == "site-b" and demoted.standby_of.slot
    assert primary.standby_of is None  # the stored spec is replaced, the given one not changed
    block = site.standby_cluster(demoted)
    assert block["host"] == "site-b-haproxy" and block["primary_slot_name"] == "standby_site_a", block
    unslotted = STANDBY.model_copy(update={"standby_of": STANDBY.standby_of.model_copy(update={"slot": False})})  # type: ignore[union-attr]
    assert "primary_slot_name" not in site.standby_cluster(site.demoted_spec(primary, unslotted))
    # The new primary site (no standby_of): the old one follows it through a slot, the default.
    assert site.demoted_spec(primary, STANDBY.model_copy(update={"standby_of": None})).standby_of.slot  # type: ignore[union-attr]


@pytest.mark.parametrize(("change", "fragment"), [
    ({"backup": {"enabled": True}}, "takes no backups of its own"),
    ({"roles": [{"name": "app"}]}, "its roles and databases are the primary's"),
])
def test_a_primary_site_that_cannot_be_a_standby_is_refused_in_one_line(change: dict[str, object],
                                                                         fragment: str) -> None:
    primary = parse_spec({"scope": "site-a", "backup": {"enabled": False}, **change})
    with pytest.raises(ValueError, match="site-a cannot become a standby of site-b") as exc:
        site.demoted_spec(primary, STANDBY)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_caught_up_compares_byte_positions() -> None:
    assert site.caught_up("1/0", "0/FFFFFFFF") and site.caught_up("0/3000060", "0/3000060")
    assert not site.caught_up("0/3000060", "0/3000061")
    assert not site.caught_up(None, "0/1") and not site.caught_up("0/1", None)


def test_up_of_a_demoted_site_from_a_spec_without_standby_of_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.steps import standby
    from stack.errors import PatroniError, StateError
    from tasks import patroni

    primary = parse_spec({"scope": "site-a", "backup": {"enabled": False}})
    monkeypatch.setattr(patroni, "dynamic_config", lambda spec: {"standby_cluster": {"host": "site-b-haproxy"}})
    with pytest.raises(StateError, match=r"runs as a standby of site-b .* add `standby_of: \{scope: site-b\}`"):
        standby.refuse_unnamed_standby(primary)
    monkeypatch.setattr(patroni, "dynamic_config", lambda spec: {"loop_wait": 2})
    standby.refuse_unnamed_standby(primary)  # a primary site: nothing to say

    def down(spec: ClusterSpec) -> dict[str, object]:
        raise PatroniError("no Patroni node answers /config")

    monkeypatch.setattr(patroni, "dynamic_config", down)
    standby.refuse_unnamed_standby(primary)  # a new cluster


def test_up_of_a_demoted_site_over_hosts_names_the_site_from_its_stored_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.steps import standby
    from stack.errors import StateError
    from tasks import patroni

    a = over_hosts("site-a", "10.1.0.1")
    demoted = site.demoted_spec(a, site.following(SITE_B, a))
    monkeypatch.setattr(patroni, "dynamic_config", lambda spec: {"standby_cluster": {"host": "10.2.0.1"}})
    monkeypatch.setattr(standby, "stored_spec", lambda scope: demoted)
    with pytest.raises(StateError, match=r"runs as a standby of site-b .* add `standby_of: \{scope: site-b\}`"):
        standby.refuse_unnamed_standby(a)
    asked: list[str] = []
    monkeypatch.setattr(patroni, "dynamic_config", lambda spec: asked.append(spec.scope) or {})
    monkeypatch.setattr(standby, "stored_spec", lambda scope: a)
    standby.refuse_unnamed_standby(a)  # stored as a primary site: Patroni not even asked
    assert asked == []


# ---- both sites over hosts ----

PORTS = {"rw": 5000, "ro": 5001, "stats": 7000, "pool": 6432}


def over_hosts(scope: str, *addresses: str, **extra: object) -> ClusterSpec:
    hosts = [{"name": f"h{i}", "docker": f"unix:///run/h{i}.sock", "address": a} for i, a in enumerate(addresses, 1)]
    return parse_spec({"scope": scope, "nodes": len(hosts), "etcd_members": 1, "ports": PORTS, "hosts": hosts,
                       "allow_unsafe_placement": True, "backup": {"enabled": False}, "pooler": {"enabled": False},
                       **extra})


SITE_A = over_hosts("site-a", "10.1.0.1", "10.1.0.2")
SITE_B = over_hosts("site-b", "10.2.0.1", standby_of={"scope": "site-a"})


def test_a_standby_over_hosts_streams_from_every_primary_host_haproxy() -> None:
    b = site.following(SITE_B, SITE_A)
    assert b.standby_of is not None and b.standby_of.hosts == ["10.1.0.1", "10.1.0.2"] and b.standby_of.port == 5000
    cfg = yaml.safe_load(render.render_patroni_yml(b, "pg-1", "10.1.0.1,10.1.0.2", SECRETS))
    # a libpq host list, one port for all (Patroni 4.0 writes one .pgpass line per host)
    assert cfg["bootstrap"]["dcs"]["standby_cluster"]["host"] == "10.1.0.1,10.1.0.2"
    assert cfg["bootstrap"]["dcs"]["standby_cluster"]["port"] == 5000
    assert "hostssl replication replicator 10.1.0.2/32 scram-sha-256" in cfg["postgresql"]["pg_hba"]
    with pytest.raises(ValueError, match="without the primary site's addresses"):
        site.standby_cluster(SITE_B)


def test_each_site_over_hosts_admits_the_others_hosts() -> None:
    b = site.following(SITE_B, SITE_A)
    assert site.peer_addresses(SITE_A, [SITE_A, b]) == ["10.2.0.1"]
    assert site.peer_addresses(b, [SITE_A, b]) == ["10.1.0.1", "10.1.0.2"]
    assert site.peer_addresses(SITE_A, [SITE_A]) == []
    rules = render.hosts_pg_hba(SITE_A, "10.2.0.1")
    assert "hostssl replication replicator 10.2.0.1/32 scram-sha-256" in rules
    # after a switchover the old primary site follows the new one at its hosts
    demoted = site.demoted_spec(SITE_A, b)
    assert demoted.standby_of is not None and demoted.standby_of.hosts == ["10.2.0.1"]


def test_a_hosts_site_and_a_one_engine_site_are_not_a_pair() -> None:
    local = parse_spec({"scope": "site-a", "backup": {"enabled": False}})
    problem = site.mixed_problem(SITE_B, local)
    assert problem is not None and "both sites must run over hosts" in problem and "\n" not in problem
    assert site.mixed_problem(SITE_B, SITE_A) is None
    with pytest.raises(SpecError, match="go with hosts: only"):
        parse_spec({"scope": "site-b", "backup": {"enabled": False},
                    "standby_of": {"scope": "site-a", "hosts": ["10.1.0.1"], "port": 5000}})


def test_the_other_sites_addresses_do_not_recreate_the_primarys_nodes() -> None:
    from stack.topology import patroni_node

    alone = patroni_node(SITE_A, "pg-1", "img", "", SECRETS, "/conf")
    paired = patroni_node(SITE_A, "pg-1", "img", "10.2.0.1", SECRETS, "/conf")
    # the file pushed to the node admits the standby site's host; the definition's digest is the same
    assert "10.2.0.1/32" in paired.files["patroni.yml"] and "10.2.0.1/32" not in alone.files["patroni.yml"]
    assert paired.container.config_hash == alone.container.config_hash


def test_a_switchover_streams_through_one_host_of_a_primary_site_over_several() -> None:
    # Patroni adds target_session_attrs=read-write to a slotted standby leader's host list: the
    # demoted site's standby leader would be refused, so the switchover names one host.
    b = site.following(SITE_B, SITE_A)
    assert site.standby_cluster(b)["host"] == "10.1.0.1,10.1.0.2"
    link = site.switchover_link(b, "10.1.0.2")
    assert link is not None and link["host"] == "10.1.0.2" and link["port"] == 5000
    assert link["primary_slot_name"] == site.slot_name(b)
    fallback = site.switchover_link(b, None)
    assert fallback is not None and fallback["host"] == "10.1.0.1"
    assert site.switchover_link(b, "10.9.9.9") == fallback  # not one of the primary's hosts
    # one host, or no slot (Patroni adds nothing), or one engine: the site's own link serves
    one = site.following(SITE_B, over_hosts("site-a", "10.1.0.1"))
    assert site.switchover_link(one, "10.1.0.1") is None
    unslotted = site.following(over_hosts("site-b", "10.2.0.1", standby_of={"scope": "site-a", "slot": False}),
                               SITE_A)
    assert site.switchover_link(unslotted, "10.1.0.1") is None
    local = parse_spec({"scope": "site-b", "backup": {"enabled": False}, "standby_of": {"scope": "site-a"}})
    assert site.switchover_link(local, None) is None
