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

    def __str__(self) -> str:
        return "Secrets(<hidden>)"

    def values(self) -> list[str]:
        return [self.superuser, self.replication, self.rewind, self.restapi]
