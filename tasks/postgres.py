"""PostgreSQL: client connections through HAProxy's ports on 127.0.0.1 (psycopg)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import psycopg
from prefect import task

from stack.errors import PostgresError
from stack.render import SUPERUSER
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks._prefect import READ_ONLY


def dsn(spec: ClusterSpec, read_only: bool = False, password: str | None = None, dbname: str = "postgres") -> str:
    """Connection URI; the password appears only when explicitly passed."""
    port = spec.ports.ro if read_only else spec.ports.rw
    auth = SUPERUSER + (f":{quote(password, safe='')}" if password else "")
    return f"postgresql://{auth}@127.0.0.1:{port}/{dbname}"


def connect(spec: ClusterSpec, secrets: Secrets, read_only: bool = False, timeout: int = 3,
            dbname: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
    port = spec.ports.ro if read_only else spec.ports.rw
    try:
        return psycopg.connect(host="127.0.0.1", port=port, user=SUPERUSER, password=secrets.superuser,
                               dbname=dbname, connect_timeout=timeout, autocommit=autocommit,
                               application_name="pgha")
    except psycopg.Error as exc:
        # psycopg's message names host/port/user, never the password.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PostgresError(f"127.0.0.1:{port}: {first}") from None


@dataclass(frozen=True)
class EndpointProbe:
    port: int
    in_recovery: bool


def probe(spec: ClusterSpec, secrets: Secrets, read_only: bool) -> EndpointProbe:
    with connect(spec, secrets, read_only=read_only) as conn:
        row = conn.execute("select pg_is_in_recovery()").fetchone()
    return EndpointProbe(spec.ports.ro if read_only else spec.ports.rw, bool(row and row[0]))


@task(name="wait-endpoints", **READ_ONLY)
def wait_endpoints(spec: ClusterSpec, secrets: Secrets, timeout: float = 60) -> tuple[EndpointProbe, EndpointProbe | None]:
    """Wait until the R/W port reaches a writable primary and the R/O port a replica."""
    rw = wait_for(f"R/W port {spec.ports.rw} to reach a writable primary",
                  lambda: probe(spec, secrets, read_only=False), lambda p: not p.in_recovery,
                  timeout=timeout, interval=0.3)
    ro = None
    if spec.nodes > 1:
        ro = wait_for(f"R/O port {spec.ports.ro} to reach a replica",
                      lambda: probe(spec, secrets, read_only=True), lambda p: p.in_recovery,
                      timeout=timeout, interval=0.3)
    return rw, ro
