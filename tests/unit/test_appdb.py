"""Declared roles and databases: spec validation, SCRAM verifiers, the reconcile plan, drift, the pooler."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from stack import appdb
from stack.audit_apps import check_apps
from stack.errors import SpecError
from stack.findings import Level
from stack.pooler import pooled_roles, render_pgbouncer_ini
from stack.render import dcs_config
from stack.spec import parse_spec

BASE = {"roles": [{"name": "app", "connection_limit": 50}, {"name": "ro", "member_of": ["app", "pg_read_all_data"]}],
        "databases": [{"name": "app", "owner": "app", "extensions": ["pg_stat_statements"], "schemas": ["billing"],
                       "pool_size": 30}]}


def _spec(**over: object) -> object:
    return parse_spec({**BASE, **over})


@pytest.mark.parametrize(("data", "fragment"), [
    ({"roles": [{"name": "postgres"}]}, "role name 'postgres' is reserved"),
    ({"roles": [{"name": "replicator"}]}, "reserved"),
    ({"roles": [{"name": "pg_app"}]}, "reserved"),
    ({"roles": [{"name": "pgha_x"}]}, "reserved"),
    ({"roles": [{"name": "App"}]}, "not a valid name"),
    ({"roles": [{"name": "a;drop"}]}, "not a valid name"),
    ({"roles": [{"name": "a"}, {"name": "a"}]}, "'a' is declared twice"),
    ({"roles": [{"name": "a", "member_of": ["b"]}]}, "'b' is not declared"),
    ({"databases": [{"name": "x", "owner": "nobody"}]}, "databases.x.owner: 'nobody' is not declared"),
    ({"roles": [{"name": "a"}], "databases": [{"name": "postgres", "owner": "a"}]}, "reserved"),
    ({"roles": [{"name": "a"}], "databases": [{"name": "x", "owner": "a", "extensions": ["postgis"]}]},
     "extension 'postgis' is not in pgha's image"),
    ({"postgres_version": 15, "roles": [{"name": "a"}],
      "databases": [{"name": "x", "owner": "a", "extensions": ["vector"]}]},
     "'vector' is not in pgha's PostgreSQL 15 image (Debian packages it for PostgreSQL 17 only)"),
    ({"roles": [{"name": "a"}], "databases": [{"name": "x", "owner": "a", "pool_size": 101}]},
     "pool_size: 101 is above max_connections (100)"),
    ({"roles": [{"name": "a"}], "databases": [{"name": "x", "owner": "a", "schemas": ["public"]}]},
     "PostgreSQL's own"),
    ({"roles": [{"name": "a", "password": "hunter2"}]}, "roles.0.password"),
])
def test_bad_declarations_are_refused_in_one_line(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(data)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_pool_size_follows_max_connections_from_the_spec() -> None:
    parse_spec({**BASE, "postgres_parameters": {"max_connections": "200"},
                "databases": [{"name": "app", "owner": "app", "pool_size": 150}]})


def test_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    f.chmod(0o644)
    why = appdb.password_file_problem(str(f))
    assert why is not None and "readable by others" in why and "s3cret" not in why
    f.chmod(0o600)
    assert appdb.password_file_problem(str(f)) is None and appdb.read_password_file(str(f)) == "s3cret"
    assert "No such file" in (appdb.password_file_problem(str(tmp_path / "none")) or "")


def test_scram_verifier_matches_what_postgresql_computes() -> None:
    # RFC 7677's example user: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    v = appdb.scram_verifier("pencil", salt=salt)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    server = base64.b64encode(hmac.new(salted, b"Server Key", "sha256").digest()).decode()
    assert v.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$") and v.endswith(":" + server)
    assert appdb.scram_matches("pencil", v) and not appdb.scram_matches("pencil2", v)
    assert not appdb.scram_matches("pencil", "md5abc") and not appdb.scram_matches("pencil", "")
    assert appdb.scram_verifier("x") != appdb.scram_verifier("x")  # a fresh salt each time


def _cat(**roles: appdb.RoleObs) -> appdb.Catalog:
    return appdb.Catalog(roles=roles)


def test_an_empty_catalog_creates_everything_and_no_statement_carries_the_password() -> None:
    spec = _spec()
    acts = appdb.plan(spec.roles, spec.databases, appdb.Catalog(), {"app": "pw-123", "ro": "pw-456"})
    whats = [a.what for a in acts]
    assert whats[:2] == ["create role app", "create role ro"]
    assert "grant app to ro" in whats and "grant pg_read_all_data to ro" in whats
    assert "create database app owned by app" in whats
    assert "create extension pg_stat_statements in app" in whats and "create schema billing in app" in whats
    create = acts[0]
    assert create.secret and 'CREATE ROLE "app" LOGIN CONNECTION LIMIT 50 PASSWORD \'SCRAM-SHA-256$' in create.statements[0]
    text = repr(acts) + " ".join(s for a in acts for s in a.statements)
    assert "pw-123" not in text and "pw-456" not in text
    assert "SCRAM" not in repr(acts)  # statements stay out of a repr (logs)
    assert not any(a.drift for a in acts)


def test_a_catalog_as_declared_plans_nothing() -> None:
    spec = _spec()
    cat = appdb.Catalog(
        roles={"app": appdb.RoleObs(name="app", login=True, connection_limit=50,
                                    verifier=appdb.scram_verifier("pw"), managed=True),
               "ro": appdb.RoleObs(name="ro", login=True, connection_limit=-1, member_of=["app", "pg_read_all_data"],
                                   verifier=appdb.scram_verifier("pw2"))},
        databases={"app": appdb.DatabaseObs(name="app", owner="app", extensions=["plpgsql", "pg_stat_statements"],
                                            schemas={"billing": "app", "public": "pg_database_owner"})})
    assert appdb.plan(spec.roles, spec.databases, cat, {"app": "pw", "ro": "pw2"}) == []
    assert check_apps(cat, spec, {"app": "pw", "ro": "pw2"})[0].status == Level.OK


def test_drift_by_hand_is_planned_back_and_reported() -> None:
    spec = _spec()
    cat = appdb.Catalog(
        roles={"app": appdb.RoleObs(name="app", login=False, connection_limit=3, verifier=appdb.scram_verifier("old")),
               "ro": appdb.RoleObs(name="ro", login=True, connection_limit=-1, member_of=["app"])},
        databases={"app": appdb.DatabaseObs(name="app", owner="ro", extensions=["plpgsql"], schemas={"billing": "ro"})})
    acts = appdb.plan(spec.roles, spec.databases, cat, {"app": "new"})
    whats = [a.what for a in acts]
    assert "alter role app: login false -> true, connection_limit 3 -> 50" in whats
    assert any(w.startswith("set password of role app") for w in whats)
    assert "grant pg_read_all_data to ro" in whats
    assert "alter database app: owner ro -> app" in whats
    assert "create extension pg_stat_statements in app" in whats
    assert "alter schema billing in app: owner ro -> app" in whats
    assert all(a.drift for a in acts)
    f = check_apps(cat, spec, {"app": "new"})
    assert len(f) == 1 and f[0].check == "apps.drift" and f[0].status == Level.WARN and "alter role app" in f[0].observed
    assert "new" not in f[0].observed.split()


def test_prune_drops_only_what_pgha_created_and_only_when_asked() -> None:
    spec = _spec()
    cat = appdb.Catalog(
        roles={"old": appdb.RoleObs(name="old", login=True, connection_limit=-1, managed=True),
               "handmade": appdb.RoleObs(name="handmade", login=True, connection_limit=-1)},
        databases={"olddb": appdb.DatabaseObs(name="olddb", owner="old", managed=True),
                   "mine": appdb.DatabaseObs(name="mine", owner="handmade")})
    kept = appdb.plan(spec.roles, spec.databases, cat, {})
    assert not any(a.prune or "drop" in a.what for a in kept)
    pruned = [a.what for a in appdb.plan(spec.roles, spec.databases, cat, {}, prune=True) if a.prune]
    assert pruned == ["drop database olddb (prune: no longer declared)", "drop role old (prune: no longer declared)"]


def test_the_quiet_session_silences_every_statement_log() -> None:
    q = " ".join(appdb.quiet_session())
    for what in ("log_statement = 'none'", "log_min_duration_statement = -1", "log_min_error_statement",
                 "pgaudit.log = 'none'"):
        assert what in q


def test_declared_login_roles_are_pooled_with_their_database_pool_size() -> None:
    spec = parse_spec({**BASE, "pooler": {"enabled": True},
                       "roles": [*BASE["roles"], {"name": "nopw", "password": None},  # type: ignore[list-item]
                                 {"name": "group", "login": False}]})
    assert pooled_roles(spec) == ("postgres", "app", "ro")
    ini = render_pgbouncer_ini(spec)
    assert "app = host=pgha-it-a-haproxy" not in ini  # the scope is the spec's
    assert f"app = host={spec.container('haproxy')} port=5432 dbname=app pool_size=30" in ini
    assert ini.index("dbname=app") < ini.index("* = host=")


def test_pg_stat_statements_declared_is_preloaded() -> None:
    assert dcs_config(_spec())["postgresql"]["parameters"]["shared_preload_libraries"] == "pg_stat_statements"
    assert "shared_preload_libraries" not in dcs_config(parse_spec({}))["postgresql"]["parameters"]


def test_audit_logging_preloads_pgaudit_sets_its_classes_and_creates_its_extension() -> None:
    spec = parse_spec({**BASE, "audit_logging": {"enabled": True, "log": "ddl,role,-misc"}})
    params = dcs_config(spec)["postgresql"]["parameters"]
    assert params["shared_preload_libraries"] == "pg_stat_statements,pgaudit"
    assert params["pgaudit.log"] == "ddl,role,-misc" and params["pgaudit.log_catalog"] == "off"
    acts = [a.what for a in appdb.plan(spec.roles, spec.databases, appdb.Catalog(), {}, audit=True)]
    assert "create extension pgaudit in app" in acts
    off = dcs_config(_spec())["postgresql"]["parameters"]
    assert "pgaudit.log" not in off and "pgaudit" not in off["shared_preload_libraries"]
    with pytest.raises(SpecError, match="'writes' is not a pgaudit.log class"):
        parse_spec({"audit_logging": {"enabled": True, "log": "ddl,writes"}})


def test_generated_passwords_are_kept_0600_once_for_both_generations(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.host import app_passwords

    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    blue = parse_spec({**BASE, "scope": "shop"})
    first = app_passwords.passwords(blue)
    assert set(first) == {"app", "ro"} and app_passwords.passwords(blue) == first
    path = tmp_path / "shop" / "app-passwords.json"
    assert path.stat().st_mode & 0o777 == 0o600
    green = parse_spec({**BASE, "scope": "shop-green"})
    assert app_passwords.passwords(green) == first and not (tmp_path / "shop-green").exists()
    assert app_passwords.password_of(green, "app") == first["app"]
    with pytest.raises(Exception, match="not declared"):
        app_passwords.password_of(blue, "nobody")
