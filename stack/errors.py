"""The pgha exception hierarchy.

Tasks raise these; flows decide; the CLI turns any `PghaError` into one readable line and a
non-zero exit code. Messages must never contain a password: a failed Prefect flow run pickles
its exception into local storage.
"""

from __future__ import annotations


class PghaError(Exception):
    """Base of every error pgha reports to a user as one line."""

    exit_code: int = 1


class SpecError(PghaError):
    """The ClusterSpec (file, keys or values) is invalid."""

    exit_code = 2


class UsageError(PghaError):
    """A CLI argument or flow parameter is invalid."""

    exit_code = 2


class StateError(PghaError):
    """The cluster or the host is in a state that forbids the operation (port taken, …)."""

    exit_code = 3


class DockerError(PghaError):
    """The Docker engine is unreachable or refused an operation."""


class ExecError(DockerError):
    """A command run inside a container (docker exec) failed or timed out."""


class ImageError(DockerError):
    """An image cannot be found or built."""


class EtcdError(PghaError):
    """etcd is unhealthy or has no quorum."""


class PatroniError(PghaError):
    """Patroni's REST API reports a problem or cannot be reached."""


class HaproxyError(PghaError):
    """HAProxy does not route as expected."""


class PostgresError(PghaError):
    """PostgreSQL refused a connection or a query."""


class PoolerError(PghaError):
    """PgBouncer's admin console refused a command or cannot be reached."""


class RolledBack(PghaError):
    """A change failed part-way and was undone: the cluster runs as before (`config set`)."""

    exit_code = 4


class WaitTimeout(PghaError):
    """A named wait ran out of time; carries the last state observed."""

    def __init__(self, what: str, timeout: float, last: object, logs: str = "") -> None:
        self.what = what
        self.timeout = timeout
        self.last = last
        self.logs = logs
        message = f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last}"
        if logs:
            message += f"\n--- logs ---\n{logs}"
        super().__init__(message)
