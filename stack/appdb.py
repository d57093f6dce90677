"""The application's side, pure: declared roles and databases, what the catalog says, the plan.

`roles:` and `databases:` in the spec declare what an application needs; `pgha up` reads the
primary's catalog once (`tasks.pg_apps.observe`) and runs the plan `plan()` returns, and the
audit reports the same plan as drift. Creating and altering only: nothing is dropped unless the
spec says `prune: true`, and then only roles and databases pgha itself created (their comment
is `MANAGED`), never one made by hand.

Passwords never reach PostgreSQL, its log or a journal: a role's password is sent as the SCRAM
verifier computed here (`scram_verifier`), the statement runs in a session that logs no
statement, and a plan's descriptions name roles and fields, never a value of a password.
Whether the stored verifier still matches the password pgha keeps is checked here too
(`scram_matches`), so a password changed by hand is drift like any other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MANAGED = "managed by pgha"  # the COMMENT on every role and database pgha created
# Names the cluster itself uses (stack.layout), PostgreSQL reserves, or the pooler answers to.
RESERVED_ROLES = frozenset({"postgres", "replicator", "rewind_user", "patroni", "pgbouncer", "public", "none",
                            "current_user", "session_user", "current_role"})
RESERVED_DATABASES = frozenset({"postgres", "template0", "template1", "pgbouncer"})
RESERVED_PREFIXES = ("pg_", "pgha")
# Extensions pgha's node images carry (PostgreSQL's contrib modules in Debian's postgresql-15 and
# -17 packages, and pgAudit from postgresql-N-pgaudit). One that is not here is refused before
# anything is changed.
IMAGE_EXTENSIONS = frozenset("""
amcheck autoinc bloom btree_gin btree_gist citext cube dblink dict_int dict_xsyn earthdistance file_fdw
fuzzystrmatch hstore insert_username intagg intarray isn lo ltree moddatetime pageinspect pg_buffercache
pg_freespacemap pg_prewarm pg_stat_statements pg_surgery pg_trgm pg_visibility pg_walinspect pgcrypto
pgrowlocks pgstattuple plpgsql postgres_fdw refint seg sslinfo tablefunc tcn tsm_system_rows
tsm_system_time unaccent uuid-ossp xml2 pgaudit hypopg vector
""".split())
# Debian packages some extensions for one suite only: pgvector is in trixie (PostgreSQL 17), not
# in bookworm (15). An extension absent here is carried by every major's image.
ONLY_FOR_MAJOR: dict[str, frozenset[int]] = {"vector": frozenset({17})}
# Extensions that work only once their library is preloaded (shared_preload_libraries).
PRELOADED = ("pg_stat_statements", "pgaudit")
AUDIT_CLASSES = ("read", "write", "function", "role", "ddl", "misc", "misc_set", "all", "none")
SCRAM_ITERATIONS = 4096  # PostgreSQL's scram_iterations default


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _name(v: str, what: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError(f"{what} '{v}' is not a valid name: use 1-63 lowercase letters, digits and _, "
                         "not starting with a digit")
    return v


class PasswordFile(_Strict):
    """A password kept in a file on the machine that runs pgha (mode 0600 or stricter; first line)."""

    file: str = Field(..., min_length=1, description="path of a file only its owner reads (0600)")


class AppRole(_Strict):
    """One role of an application: created, and altered back to this, by `pgha up`."""

    name: str = Field(..., description="role name (lowercase letters, digits, _; not a role pgha or "
                                       "PostgreSQL reserves)")
    login: bool = Field(True, description="the role can log in (and is served by the pooler)")
    connection_limit: int = Field(-1, ge=-1, le=100000, description="most concurrent connections (-1: no limit)")
    member_of: list[str] = Field(default_factory=list, description="roles it is granted (declared roles, or "
                                                                   "PostgreSQL's predefined pg_* roles)")
    password: Literal["generated"] | PasswordFile | None = Field(
        "generated", description="`generated`: pgha generates one and keeps it 0600 in the state directory; "
                                 "`{file: PATH}`: read from a 0600 file; null: no password (no login by password)")

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        _name(v, "role")
        if v in RESERVED_ROLES or v.startswith(RESERVED_PREFIXES):
            raise ValueError(f"role name '{v}' is reserved (pgha's own roles, PostgreSQL's pg_* and pgha*); "
                             "choose another")
        return v


class AppDatabase(_Strict):
    """One database of an application, its owner, extensions and schemas."""

    name: str = Field(..., description="database name")
    owner: str = Field(..., description="a role declared in `roles:`")
    extensions: list[str] = Field(default_factory=list, description="extensions created in it (ones pgha's "
                                                                    "image carries, e.g. pg_stat_statements)")
    schemas: list[str] = Field(default_factory=list, description="schemas created in it, owned by the owner")
    pool_size: int | None = Field(None, ge=1, le=10000, description="the pooler's server connections for this "
                                                                    "database and each user (absent: "
                                                                    "pooler.default_pool_size)")

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        _name(v, "database")
        if v in RESERVED_DATABASES:
            raise ValueError(f"database name '{v}' is reserved; choose another")
        return v

    @field_validator("schemas")
    @classmethod
    def _s(cls, v: list[str]) -> list[str]:
        for s in v:
            _name(s, "schema")
            if s.startswith("pg_") or s in ("public", "information_schema"):
                raise ValueError(f"schema '{s}' is PostgreSQL's own; leave it out")
        return v

    @field_validator("extensions")
    @classmethod
    def _e(cls, v: list[str]) -> list[str]:
        for e in v:
            if e not in IMAGE_EXTENSIONS:
                raise ValueError(f"extension '{e}' is not in pgha's image; it carries: "
                                 f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
        return v


class AuditLogging(_Strict):
    """pgAudit's session audit logging: one `AUDIT:` line in PostgreSQL's log per audited statement."""

    enabled: bool = Field(False, description="preload pgAudit, set pgaudit.log and create the pgaudit extension in "
                                             "every declared database")
    log: str = Field("ddl,role", description="pgaudit.log: statement classes audited (read, write, function, role, "
                                             "ddl, misc, misc_set, all, none; -class excludes one)")

    @field_validator("log")
    @classmethod
    def _classes(cls, v: str) -> str:
        for part in (p.strip() for p in v.split(",")):
            if part.removeprefix("-") not in AUDIT_CLASSES:
                raise ValueError(f"'{part}' is not a pgaudit.log class ({', '.join(AUDIT_CLASSES)})")
        return v


def spec_problem(roles: list[AppRole], databases: list[AppDatabase], max_connections: int,
                 default_pool_size: int, postgres_version: int | None = None) -> str | None:
    """The first thing wrong across the declared roles and databases (None: all fine)."""
    names = [r.name for r in roles]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        return f"roles: '{dup[0]}' is declared twice"
    dbs = [d.name for d in databases]
    if dup := sorted({n for n in dbs if dbs.count(n) > 1}):
        return f"databases: '{dup[0]}' is declared twice"
    for r in roles:
        for m in r.member_of:
            if m == r.name:
                return f"roles.{r.name}.member_of: a role cannot be a member of itself"
            if m not in names and not m.startswith("pg_"):
                return (f"roles.{r.name}.member_of: '{m}' is not declared in roles: (declare it, or use a "
                        "predefined pg_* role)")
    for d in databases:
        if d.owner not in names:
            return f"databases.{d.name}.owner: '{d.owner}' is not declared in roles:; declare it first"
        for e in d.extensions:
            majors = ONLY_FOR_MAJOR.get(e)
            if postgres_version is not None and majors is not None and postgres_version not in majors:
                only = ", ".join(str(m) for m in sorted(majors))
                return (f"databases.{d.name}.extensions: '{e}' is not in pgha's PostgreSQL {postgres_version} "
                        f"image (Debian packages it for PostgreSQL {only} only)")
        size = d.pool_size or default_pool_size
        if size > max_connections:
            return (f"databases.{d.name}.pool_size: {size} is above max_connections ({max_connections}); "
                    "a pool cannot hold more server connections than PostgreSQL accepts")
    return None


def password_file_problem(path: str) -> str | None:
    """Why a password file cannot be used (missing, readable by others, empty); None: usable."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"password file {path}: {exc.strerror}"
    if st.st_mode & 0o077:
        return f"password file {path} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it"
    try:
        with open(path) as fh:
            first = fh.readline().rstrip("\r\n")
    except OSError as exc:
        return f"password file {path}: {exc.strerror}"
    return None if first else f"password file {path} is empty"


def read_password_file(path: str) -> str:
    with open(path) as fh:
        return fh.readline().rstrip("\r\n")


# ---- SCRAM-SHA-256 verifiers (RFC 5802 / 7677), as PostgreSQL stores them in pg_authid ----


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(client_key).digest(), server_key


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`: what PostgreSQL stores, not the password."""
    salt = salt if salt is not None else os.urandom(16)
    stored, server = _keys(password, salt, iterations)
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


def scram_matches(password: str, verifier: str) -> bool:
    """Whether `verifier` (pg_authid.rolpassword) was made from `password`."""
    m = re.match(r"^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$", verifier or "")
    if not m:
        return False
    try:
        salt = base64.b64decode(m.group(2))
        stored, server = _keys(password, salt, int(m.group(1)))
    except ValueError:
        return False
    return hmac.compare_digest(base64.b64encode(stored).decode(), m.group(3)) and \
        hmac.compare_digest(base64.b64encode(server).decode(), m.group(4))


# ---- the catalog as observed, and the plan ----


class RoleObs(BaseModel):
    name: str
    login: bool
    connection_limit: int
    member_of: list[str] = []
    verifier: str = ""  # pg_authid.rolpassword: a secret, never printed
    managed: bool = False

    def __repr__(self) -> str:  # the verifier stays out of any repr
        return f"RoleObs({self.name!r})"


class DatabaseObs(BaseModel):
    name: str
    owner: str
    managed: bool = False
    extensions: list[str] | None = None  # None: not looked at (the database did not exist)
    schemas: dict[str, str] | None = None  # schema -> owner


class Catalog(BaseModel):
    """What the primary's catalog says about the roles and databases that matter to the plan."""

    roles: dict[str, RoleObs] = {}
    databases: dict[str, DatabaseObs] = {}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Action:
    """One step of the plan: what it does (safe to log and journal) and its statements (not).

    `secret`: the statements carry a SCRAM verifier; they run in a session that logs nothing.
    `database`: where they run ('' = the maintenance database).
    """

    what: str
    statements: tuple[str, ...] = field(repr=False)
    database: str = ""
    secret: bool = False
    drift: bool = False  # restores something that existed and was changed (the audit reports it)
    prune: bool = False


def _role_options(r: AppRole) -> str:
    return f"{'LOGIN' if r.login else 'NOLOGIN'} CONNECTION LIMIT {r.connection_limit}"


def plan(roles: list[AppRole], databases: list[AppDatabase], cat: Catalog, passwords: dict[str, str],
         prune: bool = False, audit: bool = False) -> list[Action]:
    """The statements that make the catalog what the spec declares, in order; empty: nothing to do.

    `passwords`: role -> the password pgha keeps for it (generated or read from its file); a role
    absent from it has no password to set or compare. `audit`: pgAudit is on, its extension
    belongs in every declared database.
    """
    out: list[Action] = []
    comment_role = "COMMENT ON ROLE {} IS " + _literal(MANAGED)
    for r in roles:
        q = quote_ident(r.name)
        pw = passwords.get(r.name)
        seen = cat.roles.get(r.name)
        if seen is None:
            stmt = f"CREATE ROLE {q} {_role_options(r)}"
            if pw is not None:
                stmt += f" PASSWORD {_literal(scram_verifier(pw))}"
            out.append(Action(f"create role {r.name}", (stmt, comment_role.format(q)), secret=pw is not None))
            continue
        changed = []
        if seen.login != r.login:
            changed.append(f"login {str(seen.login).lower()} -> {str(r.login).lower()}")
        if seen.connection_limit != r.connection_limit:
            changed.append(f"connection_limit {seen.connection_limit} -> {r.connection_limit}")
        if changed:
            out.append(Action(f"alter role {r.name}: {', '.join(changed)}", (f"ALTER ROLE {q} {_role_options(r)}",),
                              drift=True))
        if pw is not None and not scram_matches(pw, seen.verifier):
            out.append(Action(f"set password of role {r.name} (it does not match the one pgha keeps)",
                              (f"ALTER ROLE {q} PASSWORD {_literal(scram_verifier(pw))}",), secret=True, drift=True))
    for r in roles:
        seen = cat.roles.get(r.name)
        have = set(seen.member_of) if seen else set()
        for m in r.member_of:
            if m not in have:
                out.append(Action(f"grant {m} to {r.name}", (f"GRANT {quote_ident(m)} TO {quote_ident(r.name)}",),
                                  drift=seen is not None))
    for d in databases:
        q, owner = quote_ident(d.name), quote_ident(d.owner)
        db = cat.databases.get(d.name)
        if db is None:
            # CREATE DATABASE cannot run in a transaction block: a statement of its own.
            out.append(Action(f"create database {d.name} owned by {d.owner}",
                              (f"CREATE DATABASE {q} OWNER {owner}",)))
            out.append(Action(f"mark database {d.name} as pgha's", (f"COMMENT ON DATABASE {q} IS {_literal(MANAGED)}",)))
        elif db.owner != d.owner:
            out.append(Action(f"alter database {d.name}: owner {db.owner} -> {d.owner}",
                              (f"ALTER DATABASE {q} OWNER TO {owner}",), drift=True))
        have_ext = set(db.extensions or []) if db else set()
        for e in [*d.extensions, *(["pgaudit"] if audit and "pgaudit" not in d.extensions else [])]:
            if e not in have_ext:
                out.append(Action(f"create extension {e} in {d.name}",
                                  (f"CREATE EXTENSION IF NOT EXISTS {quote_ident(e)}",), database=d.name,
                                  drift=db is not None and db.extensions is not None))
        have_s = (db.schemas or {}) if db else {}
        for s in d.schemas:
            if s not in have_s:
                out.append(Action(f"create schema {s} in {d.name}",
                                  (f"CREATE SCHEMA IF NOT EXISTS {quote_ident(s)} AUTHORIZATION {owner}",),
                                  database=d.name, drift=db is not None and db.schemas is not None))
            elif have_s[s] != d.owner:
                out.append(Action(f"alter schema {s} in {d.name}: owner {have_s[s]} -> {d.owner}",
                                  (f"ALTER SCHEMA {quote_ident(s)} OWNER TO {owner}",), database=d.name, drift=True))
    if prune:
        declared_db = {d.name for d in databases}
        declared_roles = {r.name for r in roles}
        for name, db in sorted(cat.databases.items()):
            if db.managed and name not in declared_db:
                out.append(Action(f"drop database {name} (prune: no longer declared)",
                                  (f"DROP DATABASE {quote_ident(name)} WITH (FORCE)",), prune=True))
        for name, role in sorted(cat.roles.items()):
            if role.managed and name not in declared_roles:
                out.append(Action(f"drop role {name} (prune: no longer declared)",
                                  (f"DROP ROLE {quote_ident(name)}",), prune=True))
    return out


def drift(roles: list[AppRole], databases: list[AppDatabase], cat: Catalog, passwords: dict[str, str],
          audit: bool = False) -> list[str]:
    """What differs from the spec (what the next `up` would do), one line each; empty: in sync."""
    return [a.what for a in plan(roles, databases, cat, passwords, audit=audit) if not a.prune]


def quiet_session() -> tuple[str, ...]:
    """Statements that keep the session's next statements out of PostgreSQL's log (superuser only):
    no statement logging, no duration lines, no statement text in an error, and no pgaudit line."""
    return ("SET log_statement = 'none'", "SET log_min_duration_statement = -1",
            "SET log_min_error_statement = 'panic'", "SET log_duration = off", "SET pgaudit.log = 'none'")


def preload_libraries(databases: list[AppDatabase], audit: bool = False) -> list[str]:
    """The preloaded libraries the declared extensions and audit logging need (shared_preload_libraries)."""
    wanted = {e for d in databases for e in d.extensions} | ({"pgaudit"} if audit else set())
    return [e for e in PRELOADED if e in wanted]


def audit_parameters(a: AuditLogging) -> dict[str, str]:
    """PostgreSQL parameters of pgAudit's session logging (none when it is off)."""
    if not a.enabled:
        return {}
    # Catalog queries (psql's \d, drivers' introspection) would drown the log; one line per statement.
    return {"pgaudit.log": a.log, "pgaudit.log_catalog": "off", "pgaudit.log_relation": "off",
            "pgaudit.log_parameter": "off"}
