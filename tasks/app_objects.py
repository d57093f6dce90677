"""The declared roles and databases made so on the primary, as one step of `pgha up` (`flows.steps.converge`):
the plan is `stack.appdb`'s, the catalog read and the statements run are `tasks.pg_apps`'."""

from __future__ import annotations

from prefect import get_run_logger, task

from stack import appdb
from stack.errors import StateError
from stack.spec import ClusterSpec
from tasks import pg_apps
from tasks._prefect import SIDE_EFFECT
from tasks.host import app_passwords
from tasks.host.secrets import cluster_secrets


def apps_preflight(spec: ClusterSpec) -> None:
    """Refuse unusable password files before anything is created or changed."""
    if why := app_passwords.refusal(spec):
        raise StateError(why)


@task(name="ensure-app-objects", **SIDE_EFFECT)
def ensure_app_objects(spec: ClusterSpec) -> list[str]:
    """Create and alter the declared roles and databases (drop only with `prune: true`); what was done.

    The caller puts the list in the operations journal (`apps` in the operation's line): names
    and fields, never a password.
    """
    if not spec.roles and not spec.databases and not spec.prune:
        return []
    secrets = cluster_secrets(spec.scope)
    pw = app_passwords.passwords(spec)
    cat = pg_apps.observe(spec, secrets)
    actions = appdb.plan(spec.roles, spec.databases, cat, pw, prune=spec.prune, audit=spec.audit_logging.enabled)
    done = pg_apps.apply(spec, secrets, actions)
    log = get_run_logger()
    for what in done:
        log.info("roles and databases: %s", what)
    if not done:
        log.info("roles and databases: as declared, nothing changed")
    return done
