"""Teardown decisions, pure: when destroying data is confirmed, and what becomes of the secrets.

The state directory holds what a backup repository needs to be usable (passwords, the
cluster CA and the pgBackRest keys, the repository passphrase once it is encrypted): it is
deleted only when no repository that needs it is left; otherwise it is moved aside.
"""

from __future__ import annotations

from enum import StrEnum


class StateFate(StrEnum):
    KEEP = "keep"  # containers only: the cluster comes back with `pgha up`
    MOVE_ASIDE = "move-aside"  # data gone, a repository kept: the secrets it needs are kept aside
    DELETE = "delete"  # data and repository gone: nothing needs the secrets any more


def confirm_refusal(scope: str, volumes: bool, purge_backups: bool, confirm: str) -> str | None:
    """None when the teardown may run; else the one-line reason it is refused (nothing changed)."""
    if purge_backups and not volumes:
        return "purge_backups (--purge-backups) deletes the backup repository and needs volumes (--volumes) too"
    if volumes and confirm != scope:
        what = "the data volumes, the backup repository and the secrets" if purge_backups else "the data volumes"
        return (f"removing {what} of {scope} needs an explicit confirmation: `pgha down --volumes --yes` "
                f"(a flow or deployment run: confirm={scope}); nothing was removed")
    return None


def state_fate(volumes: bool, purge_backups: bool, repository_left: bool) -> StateFate:
    """What to do with the state directory once the resources are removed."""
    if not volumes:
        return StateFate.KEEP
    if repository_left:
        return StateFate.MOVE_ASIDE
    return StateFate.DELETE


def kept_repository_refusal(scope: str, volume: str, aside: str) -> str:
    """Why `pgha up` refuses a new cluster over a repository that outlived `down --volumes`.

    The repository's stanza belongs to the removed cluster (its system identifier): a new
    cluster could not archive into it, and overwriting it would lose the backups.
    """
    where = f" (its secrets are in {aside})" if aside else ""
    return (f"the backup repository of the removed cluster {scope} is kept in volume {volume}{where}; a new "
            f"cluster cannot archive into it: move that directory back to restore from it, or delete the "
            f"repository first with `pgha down --volumes --purge-backups --yes --spec FILE`")
