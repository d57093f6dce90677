"""etcd least privilege, rendered: the users, roles and permissions, who receives which TLS file,
Patroni's etcd credentials and the password file's migration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stack import etcd_auth, render, tls, topology
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from tasks.host.secrets import load_or_create

SECRETS = Secrets("su", "repl", "rew", "api", etcd_patroni="etcd-pat", etcd_fencer="etcd-fen")


def test_each_user_gets_only_its_grants() -> None:
    spec = ClusterSpec(scope="lab")
    users = {u.name: u for u in etcd_auth.users(spec)}
    assert set(users) == {"root", "lab pgha client", "patroni", "fencer"}
    assert users["patroni"].grants == (etcd_auth.Grant("/service/lab/", etcd_auth.Permission.READWRITE, prefix=True),)
    assert users["fencer"].grants == (etcd_auth.Grant("/service/lab/leader", etcd_auth.Permission.READWRITE),)
    # pgha: its certificate's common name, the root role, no password; root has none either.
    assert users["lab pgha client"].role == "root" and users["lab pgha client"].secret is None
    assert users["root"].secret is None and users["root"].grants == ()
    assert users["lab pgha client"].name == tls.client_cn("lab")
    # No user is named after the member or fencer certificate (the gateway presents the member one).
    assert "lab member" not in users


def test_setup_steps_are_idempotent_and_never_carry_a_password() -> None:
    spec = ClusterSpec(scope="lab")
    first = etcd_auth.setup_steps(spec, set(), set())
    args = [" ".join(s.args) for s in first]
    assert "role add patroni" in args and "role add fencer" in args and "role add root" not in args
    assert "role grant-permission patroni readwrite /service/lab/ --prefix=true" in args
    assert "role grant-permission fencer readwrite /service/lab/leader" in args
    assert "user add root --no-password" in args
    assert ["user", "add", "lab pgha client", "--no-password"] in [s.args for s in first]
    assert {s.password_of for s in first if s.password_of} == {"patroni", "fencer"}
    assert all("--interactive=false" in s.args for s in first if s.password_of)
    for s in first:
        assert not {"etcd-pat", "etcd-fen"} & set(s.args)
    again = etcd_auth.setup_steps(spec, {"root", "lab pgha client", "patroni", "fencer"}, {"root", "patroni", "fencer"})
    again_args = [" ".join(s.args) for s in again]
    assert not any(a.startswith(("role add", "user add")) for a in again_args)
    assert "user passwd patroni --interactive=false" in again_args  # the state directory's password wins


def test_patroni_authenticates_to_etcd_with_its_user_only_with_tls() -> None:
    spec = ClusterSpec(scope="lab")
    conf = yaml.safe_load(render.render_patroni_yml(spec, "pg-1", "10.0.0.0/24", SECRETS))
    assert conf["etcd3"]["username"] == "patroni" and conf["etcd3"]["password"] == "etcd-pat"
    assert conf["etcd3"]["cert"] == tls.GATEWAY_CERT and conf["etcd3"]["key"] == tls.GATEWAY_KEY  # no CN
    assert "etcd-pat" not in render.redact(render.render_patroni_yml(spec, "pg-1", "10.0.0.0/24", SECRETS), SECRETS)
    plain = ClusterSpec(scope="lab", tls={"enabled": False})  # type: ignore[arg-type]
    assert "username" not in yaml.safe_load(render.render_patroni_yml(plain, "pg-1", "10.0.0.0/24", SECRETS))["etcd3"]
    assert etcd_auth.enabled(spec) and not etcd_auth.enabled(plain)


def test_no_role_receives_a_key_it_does_not_use() -> None:
    assert tls.ROLE_FILES["haproxy"] == ("ca.crt",)
    # The pooler: the CA and its own server certificate for its clients, which names no etcd user.
    assert tls.ROLE_FILES["pooler"] == ("ca.crt", "pooler.crt", "pooler.key")
    assert "client.key" not in tls.ROLE_FILES["patroni"] and "client.key" not in tls.ROLE_FILES["fencer"]
    assert "member.key" not in tls.ROLE_FILES["fencer"] and tls.ROLE_FILES["fencer"] == ("ca.crt", "gateway.crt", "gateway.key")
    # pgha's client key lives where pgha runs etcdctl, and nowhere else.
    assert [r for r, files in tls.ROLE_FILES.items() if "client.key" in files] == ["etcd"]


def test_a_shrunken_file_set_recreates_the_role() -> None:
    spec = ClusterSpec(scope="lab")
    h = topology.haproxy(spec, "img", "/c").container.config_hash
    assert topology.tls_hash(spec, topology.Role.HAPROXY) == [["ca.crt"]]
    plain = ClusterSpec(scope="lab", tls={"enabled": False})  # type: ignore[arg-type]
    assert topology.haproxy(plain, "img", "/c").container.config_hash != h


def test_gateway_leaf_has_no_common_name() -> None:
    from cryptography import x509

    spec = ClusterSpec(scope="lab")
    leaves = tls.make_leaves(spec, tls.make_ca(spec))
    cn = {f: x509.load_pem_x509_certificate(leaves[f].encode()).subject.rfc4514_string()
          for f in ("member.crt", "client.crt", "gateway.crt")}
    # etcd's gateway refuses a client certificate with a common name once auth is on
    assert cn == {"member.crt": "CN=lab member", "client.crt": "CN=lab pgha client", "gateway.crt": ""}


def test_an_older_password_file_gets_the_etcd_passwords_once(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"superuser": "a", "replication": "b", "rewind": "c", "restapi": "d"}))
    s = load_or_create(path, env={})
    assert s.superuser == "a" and len(s.etcd_patroni) > 20 and len(s.etcd_fencer) > 20
    assert load_or_create(path, env={}) == s  # kept, not generated again
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert "etcd_patroni" in json.loads(path.read_text())
    assert s.etcd_patroni in s.values() and "" not in Secrets("a", "b", "c", "d").values()


def test_clients_get_etcd_passwords_only_once_pgha_switched_auth_on(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.host.secrets import cluster_secrets, etcd_auth_marker

    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    before = cluster_secrets("lab")
    assert before.etcd_patroni == "" and before.etcd_fencer == "" and before.restapi
    # the file holds them all the same (ensure_users reads it directly)
    assert json.loads((tmp_path / "lab" / "secrets.json").read_text())["etcd_patroni"]
    etcd_auth_marker("lab").write_text("on\n")
    after = cluster_secrets("lab")
    assert after.etcd_patroni and after.etcd_fencer and after.superuser == before.superuser


def test_auth_status_is_read_from_etcdctl_and_judged_by_the_audit() -> None:
    from stack import audit as A
    from stack import audit_obs as AO
    from stack import findings as AF
    from stack.etcd_auth import auth_status_on

    assert auth_status_on("Authentication Status: true\nAuthRevision: 12\n") is True
    assert auth_status_on("Authentication Status: false\nAuthRevision: 1\n") is False
    assert auth_status_on("Error: context deadline exceeded") is None
    spec = ClusterSpec(scope="pgha-au")
    on = A.check_etcd_auth(AO.EtcdAuthObs(enabled=True, switched_on_by_pgha=True), spec)
    assert [(f.check, f.status) for f in on] == [("etcd.auth", AF.Level.OK)]
    legacy = A.check_etcd_auth(AO.EtcdAuthObs(enabled=False, switched_on_by_pgha=False), spec)[0]
    assert legacy.status == AF.Level.WARN and "made before etcd authentication" in legacy.observed
    assert "pgha restore --into NEW-SCOPE" in legacy.hint
    switched_off = A.check_etcd_auth(AO.EtcdAuthObs(enabled=False, switched_on_by_pgha=True), spec)[0]
    assert switched_off.status == AF.Level.CRITICAL and "pgha up" in switched_off.hint
    assert A.check_etcd_auth(None, spec, "no etcd member container is running")[0].status == AF.Level.WARN
    assert A.check_etcd_auth(None, ClusterSpec(scope="pgha-au", tls={"enabled": False})) == []


def test_leader_key_is_judged_by_its_holders_session() -> None:
    import base64

    from stack import audit as A
    from stack import audit_obs as AO
    from stack import findings as AF
    from tasks.etcd import parse_leader_key

    def kv(key: str, value: str, lease: int = 0) -> dict[str, object]:
        d: dict[str, object] = {"key": base64.b64encode(key.encode()).decode(),
                                "value": base64.b64encode(value.encode()).decode()}
        return {**d, "lease": lease} if lease else d

    prefix = "/service/pgha-lk/"
    out = json.dumps({"kvs": [kv(prefix + "config", "{}"), kv(prefix + "leader", "pg-1", 77),
                              kv(prefix + "members/pg-1", "{}", 77), kv(prefix + "members/pg-2", "{}", 78)]})
    obs = parse_leader_key(out, prefix)
    assert obs == AO.LeaderKeyObs(holder="pg-1", lease=77, holder_member_lease=77)
    spec = ClusterSpec(scope="pgha-lk")
    assert A.check_leader_key(obs, spec)[0].status == AF.Level.OK
    assert parse_leader_key(json.dumps({"kvs": [kv(prefix + "config", "{}")]}), prefix).holder is None
    assert A.check_leader_key(AO.LeaderKeyObs(holder=None), spec)[0].status == AF.Level.OK
    # What a misused fencer credential can write: the leader key alone, never a member key.
    for forged, why in ((AO.LeaderKeyObs("pg-2", 0, 78), "no lease"),
                        (AO.LeaderKeyObs("pg-2", 99, 78), "not pg-2's session"),
                        (AO.LeaderKeyObs("ghost", 99, None), "no member key")):
        row = A.check_leader_key(forged, spec)[0]
        assert row.status == AF.Level.CRITICAL and why in row.observed and "not written by Patroni" in row.observed
    assert A.check_leader_key(None, spec, "no etcd member container is running")[0].status == AF.Level.WARN


def test_a_delete_whose_output_the_engine_cut_is_run_again_a_write_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """`etcdctl del` (a stopped member's key, a scope's keys) is idempotent: run again when the engine
    cut its output short, as reads are; a put is not."""
    from tasks import etcd
    from tasks.node_exec import ExecResult

    asked: list[tuple[str, int]] = []

    class Node:
        def run(self, cmd: list[str], user: str | None = None, timeout: int = 10,
                retries_if_lost: int = 0) -> ExecResult:
            asked.append((next(a for a in cmd if a in ("del", "put")), retries_if_lost))
            return ExecResult(0, "1", "")

    monkeypatch.setattr(etcd, "first_running", lambda spec, names: Node())
    spec = ClusterSpec(scope="cut-short")
    etcd.delete_member_key(spec, "pg-2")
    etcd.etcdctl(spec, ["put", "/x", "y"])
    assert asked == [("del", 2), ("put", 0)]
