"""PostgreSQL, for the declared roles and databases: read the primary's catalog, run a plan.

The only place their SQL runs. Everything goes through HAProxy's R/W port as the superuser,
so it reaches the primary whichever node that is. Statements that carry a SCRAM verifier run
in a session told to log no statement (`stack.appdb.quiet_session`), so neither the verifier
nor the statement reaches PostgreSQL's log; errors are raised as one line naming the step, never
the statement.
"""

from __future__ import annotations

import psycopg

from stack import appdb
from stack.errors import PostgresError
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from tasks.postgres import connect


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def observe(spec: ClusterSpec, secrets: Secrets) -> appdb.Catalog:
    """Roles (with their SCRAM verifiers), databases, and in each declared database its extensions
    and schemas."""
    roles: dict[str, appdb.RoleObs] = {}
    dbs: dict[str, appdb.DatabaseObs] = {}
    try:
        with connect(spec, secrets, application_name="pgha-apps") as conn:
            for r in conn.execute(
                    "select r.rolname, r.rolcanlogin, r.rolconnlimit, coalesce(r.rolpassword, ''), "
                    " coalesce(shobj_description(r.oid, 'pg_authid'), '') = %s, "
                    " array(select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid "
                    "       where m.member = r.oid order by 1) "
                    "from pg_authid r where r.rolname !~ '^pg_'", (appdb.MANAGED,)).fetchall():
                roles[r[0]] = appdb.RoleObs(name=r[0], login=bool(r[1]), connection_limit=int(r[2]),
                                            verifier=str(r[3]), managed=bool(r[4]), member_of=list(r[5]))
            for d in conn.execute(
                    "select datname, pg_get_userbyid(datdba), "
                    " coalesce(shobj_description(oid, 'pg_database'), '') = %s "
                    "from pg_database where not datistemplate", (appdb.MANAGED,)).fetchall():
                dbs[d[0]] = appdb.DatabaseObs(name=d[0], owner=d[1], managed=bool(d[2]))
        for d in spec.databases:
            if d.name not in dbs:
                continue
            with connect(spec, secrets, dbname=d.name, application_name="pgha-apps") as conn:
                ext = [str(e[0]) for e in conn.execute("select extname from pg_extension").fetchall()]
                sch = {str(s[0]): str(s[1]) for s in conn.execute(
                    "select nspname, pg_get_userbyid(nspowner) from pg_namespace").fetchall()}
            dbs[d.name] = dbs[d.name].model_copy(update={"extensions": ext, "schemas": sch})
    except psycopg.Error as exc:
        raise PostgresError(f"reading roles and databases on the primary: {_first(exc)}") from None
    return appdb.Catalog(roles=roles, databases=dbs)


def apply(spec: ClusterSpec, secrets: Secrets, actions: list[appdb.Action]) -> list[str]:
    """Run the plan's actions in order (each in its own autocommit session); what was done."""
    done: list[str] = []
    for a in actions:
        try:
            with connect(spec, secrets, dbname=a.database or "postgres", application_name="pgha-apps") as conn:
                if a.secret:
                    for q in appdb.quiet_session():
                        conn.execute(q)  # type: ignore[arg-type]
                for stmt in a.statements:
                    conn.execute(stmt)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            # The statement may carry a verifier: the message names the step and PostgreSQL's reason.
            raise PostgresError(f"{a.what}: {_first(exc)}") from None
        done.append(a.what)
    return done
