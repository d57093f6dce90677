"""PgBouncer: its admin console, the only place the pooler is touched.

The console is reached on the pooler's published port (127.0.0.1:`ports.pool`, database
`pgbouncer`) as the superuser, an `admin_users` entry: one psycopg connection, opened before a
switchover, carries PAUSE and RESUME, so resuming costs a round trip and not a `docker exec`
(about 0.1 s) while clients wait. The console speaks only the simple query protocol, hence
`ClientCursor`. Failures raise `PoolerError` with one line.

With `hosts` a pooler runs beside every host's HAProxy: each is reached on its host's client
address (`ClusterSpec.client_endpoints(pooled=True)`); a switchover pauses them all, status and
the audit read them all into one observation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg

from stack.errors import PoolerError
from stack.layout import SUPERUSER
from stack.pooler import ADMIN_DB, PoolerObs, parse_pools
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from tasks.host.secrets import cluster_secrets
from tasks.postgres import server_auth_params


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def endpoints(spec: ClusterSpec) -> list[tuple[str, int]]:
    """(address, port) of every pooler of the cluster, in host order (one without `hosts`)."""
    return spec.client_endpoints(pooled=True)


class Admin:
    """One admin-console session of one pooler (default: the first, 127.0.0.1:`ports.pool` on one engine)."""

    def __init__(self, spec: ClusterSpec, secrets: Secrets | None = None, timeout: int = 3,
                 endpoint: tuple[str, int] | None = None) -> None:
        self.spec = spec
        self.host, self.port = endpoint or endpoints(spec)[0]
        self.where = f"{self.host}:{self.port}"
        s = self.secrets = secrets or cluster_secrets(spec.scope)
        try:
            # The password goes to libpq as a keyword, never into a URI, an argv or a message;
            # only to a pooler that proves it is the cluster's: its certificate verified against
            # the cluster CA (spec.tls) and its knowledge of the SCRAM verifier (require_auth).
            self.conn = psycopg.connect(host=self.host, port=self.port, user=SUPERUSER, password=s.superuser,
                                        dbname=ADMIN_DB, connect_timeout=timeout, autocommit=True,
                                        cursor_factory=psycopg.ClientCursor, **server_auth_params(spec))
        except psycopg.Error as exc:
            raise PoolerError(f"pooler admin console on {self.where}: {_first_line(exc)}") from None

    def close(self) -> None:
        self.conn.close()

    def command(self, sql: str) -> None:
        try:
            self.conn.execute(sql)
        except psycopg.Error as exc:
            raise PoolerError(f"pooler {sql.split()[0]} on {self.where}: {_first_line(exc)}") from None

    def show(self, what: str) -> list[dict[str, object]]:
        """SHOW <what> as one dict per row (column name -> value)."""
        try:
            cur = self.conn.execute(f"SHOW {what}")
            cols = [d.name for d in cur.description or []]
            return [dict(zip(cols, row, strict=False)) for row in cur.fetchall()]
        except psycopg.Error as exc:
            raise PoolerError(f"pooler SHOW {what} on {self.where}: {_first_line(exc)}") from None

    def pause(self, timeout_s: float) -> None:
        """PAUSE: wait until every in-flight transaction has finished and its server connection is closed.

        New transactions queue meanwhile. PAUSE blocks its session until done, so it runs on a
        second session in a thread while this one stays free for RESUME: past `timeout_s` (a
        transaction that does not end) the pause is undone here and PoolerError raised.
        """
        pauser = Admin(self.spec, self.secrets, endpoint=(self.host, self.port))
        failure: list[BaseException] = []

        def run() -> None:
            try:
                pauser.conn.execute("PAUSE")
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                failure.append(exc)

        t = threading.Thread(target=run, name="pgbouncer-pause", daemon=True)
        t.start()
        t.join(timeout_s)
        if t.is_alive():
            self.resume()
            t.join(2)
            if not t.is_alive():
                pauser.close()  # else left to the daemon thread: closing a busy session could block
            raise PoolerError(f"the pooler could not pause within {timeout_s:g}s on {self.where} (a transaction "
                              "kept running); it was resumed and nothing else was changed")
        pauser.close()
        if failure:
            raise PoolerError(f"pooler PAUSE on {self.where}: {_first_line(failure[0])}") from None

    def resume(self) -> None:
        """RESUME; a pooler that is not paused is left as it is."""
        try:
            self.conn.execute("RESUME")
        except psycopg.Error as exc:
            if "not paused" in str(exc).lower():
                return
            raise PoolerError(f"pooler RESUME on {self.where}: {_first_line(exc)}") from None


@contextmanager
def admin(spec: ClusterSpec, secrets: Secrets | None = None,
          endpoint: tuple[str, int] | None = None) -> Iterator[Admin]:
    a = Admin(spec, secrets, endpoint=endpoint)
    try:
        yield a
    finally:
        a.close()


@contextmanager
def paused(spec: ClusterSpec, secrets: Secrets | None = None) -> Iterator[list[Admin]]:
    """Every pooler paused for the block (their clients queue), and ALWAYS resumed after it.

    Over hosts the poolers are paused one after the other (each PAUSE waits for its own
    in-flight transactions); one that cannot be paused resumes those already paused and raises.
    The RESUME goes through the session that paused; should that session have died, a new
    one is opened to resume, and only if that fails too is the error raised (after every
    other pooler was resumed).
    """
    secrets = secrets or cluster_secrets(spec.scope)
    held: list[Admin] = []
    try:
        for end in endpoints(spec):
            a = Admin(spec, secrets, endpoint=end)
            held.append(a)
            a.pause(spec.pooler.pause_timeout_s)
        yield held
    finally:
        failed: list[PoolerError] = []
        for a in held:
            try:
                try:
                    a.resume()
                except PoolerError:
                    with admin(spec, secrets, (a.host, a.port)) as b:
                        b.resume()
            except PoolerError as exc:
                failed.append(exc)
            finally:
                a.close()
        if failed:
            raise failed[0]


def _observe_one(spec: ClusterSpec, secrets: Secrets | None, end: tuple[str, int]) -> PoolerObs:
    try:
        with admin(spec, secrets, end) as a:
            pools = parse_pools(a.show("POOLS"))
            paused_now = any(str(r.get("paused", "0")) == "1" for r in a.show("DATABASES"))
    except PoolerError as exc:
        return PoolerObs(reachable=False, error=str(exc))
    return PoolerObs(reachable=True, pools=pools, paused=paused_now)


def observe(spec: ClusterSpec, secrets: Secrets | None = None) -> PoolerObs:
    """Pools, waiting clients and server connections of every pooler as one observation; never
    raises (unreachable is an observation). Over hosts: reachable only when every one answers
    (the error names those that do not), paused when any is, their pools together."""
    ends = endpoints(spec)
    if len(ends) == 1:
        return _observe_one(spec, secrets, ends[0])
    with ThreadPoolExecutor(len(ends), thread_name_prefix="pooler-observe") as ex:
        seen = list(ex.map(lambda e: _observe_one(spec, secrets, e), ends))
    down = [o.error for o in seen if not o.reachable]
    return PoolerObs(reachable=not down, error="; ".join(down),
                     pools=[p for o in seen for p in o.pools], paused=any(o.paused for o in seen))


def reload(spec: ClusterSpec, secrets: Secrets | None = None) -> None:
    """RELOAD: every pooler re-reads its configuration and TLS files (a rotated certificate)."""
    for end in endpoints(spec):
        with admin(spec, secrets, end) as a:
            a.command("RELOAD")


def stats(spec: ClusterSpec, secrets: Secrets | None = None) -> list[dict[str, object]]:
    """SHOW STATS rows (per database: transactions, queries, bytes, wait and transaction times)."""
    with admin(spec, secrets) as a:
        return a.show("STATS")
