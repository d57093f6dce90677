"""Cluster passwords as a value that never shows itself.

A `Secrets` object never shows its values in repr/str, so a password cannot reach a log
line, an artifact or an exception message by accident. Reading and writing the password
file is `tasks.host.secrets`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ENV_SUPERUSER = "POSTGRES_PASSWORD"  # the seed stack's variable


@dataclass(frozen=True)
class Secrets:
    superuser: str = field(repr=False)
    replication: str = field(repr=False)
    rewind: str = field(repr=False)
    restapi: str = field(repr=False)
    # etcd users' passwords (stack/etcd_auth.py); empty in a file written by an older pgha until
    # `tasks.host.secrets` adds them.
    etcd_patroni: str = field(repr=False, default="")
    etcd_fencer: str = field(repr=False, default="")

    def __str__(self) -> str:
        return "Secrets(<hidden>)"

    def values(self) -> list[str]:
        every = [self.superuser, self.replication, self.rewind, self.restapi, self.etcd_patroni, self.etcd_fencer]
        return [v for v in every if v]
