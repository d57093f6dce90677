"""What prefect.yaml deploys: one entry flow per operation, taking a cluster's scope and the
operation's own options, never a spec.

Anyone who can start a deployment (a schedule, an automation, a click in the Prefect UI, a
script holding the server's auth string) must not be able to choose what a cluster is made
of: an image, an engine socket, a host's address or a path would make a Prefect credential
host root. So the parameters of these flows (what Prefect renders as the run form and what the
server validates every run against) are `scope` and the operation's options; the cluster is
the one `pgha up` stored for that scope on the worker's host, loaded under the operation's lock
(`flows.steps.deployment.pinned_spec`); a scope with no stored spec is refused in one line before
anything changes, except by `bootstrap`, which creates a cluster from the code's defaults. Changing the spec stays a CLI
operation on the host (`pgha up --spec`, `pgha config set`, `pgha scale`...).

Each entry runs the operation's flow body in its own flow run (`op.fn`: a subflow would not be
the deployment's run, and would not load the stored spec), imported when the run starts (a run
imports one operation's modules, not all of them), under the operation's flow name, so deployment names (`health-audit/default`...), tags, alerts and the
lock stay what they were. The flows in `flows/*.py` keep their `spec` parameter for the CLI,
which resolves the spec on the host itself. `pgha server start` also closes each deployment's
parameter schema (`additionalProperties: false`, `tasks.prefect_server.seal_schemas`), so the
server refuses a run that passes any other parameter (`spec` included); a run that skips the
schema fails binding its parameters, before any step.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.states import State
from pydantic import Field

from stack import backup_decisions as bkd
from stack.deployed import not_brought_up
from stack.drill import DrillKind
from stack.errors import UsageError
from stack.results import (
    BackupResult,
    BootstrapResult,
    CertsRenewResult,
    ConfigSetResult,
    DrillResult,
    DumpResult,
    EtcdReplaceResult,
    PauseResult,
    ReinitResult,
    RestartResult,
    RestoreResult,
    ScaleResult,
    SwitchoverResult,
    TeardownResult,
    UpgradeResult,
    VerifyResult,
)
from stack.spec import SCOPE_RE, ClusterSpec
from tasks.host.lock import WaitSeconds

DEFAULT_SCOPE = "hy-home-db"  # ClusterSpec().scope (a literal, so the docs show it)
Scope = Annotated[str, Field(pattern=SCOPE_RE.pattern, description="the cluster: the scope `pgha up` brought up "
                                                                   "on the worker's host (its stored spec is used)")]
IntoScope = Annotated[str, Field(description="the new cluster's scope ('' with in_place)")]


def named(scope: str) -> ClusterSpec:
    """The cluster named by `scope`: only its name. The operation takes its lock, then the spec
    stored for it on this host (`flows.steps.deployment.pinned_spec`: refused in one line when
    there is none), so a run that meets a busy cluster is told that first, on any machine."""
    return ClusterSpec(scope=scope)


def stored(scope: str) -> ClusterSpec:
    """The spec stored for `scope` on this host, for an entry that needs it before the operation
    starts (UsageError, one line, when there is none)."""
    from tasks.host.generations import stored_spec, stored_spec_file

    if not stored_spec_file(scope).exists():
        raise UsageError(not_brought_up(scope))
    return stored_spec(scope)


@flow(name="bootstrap", description="Create or converge the cluster `pgha up` brought up for scope (its stored spec; "
                                    "the code's defaults for a scope never brought up).")
def bootstrap(scope: Scope = DEFAULT_SCOPE, wait_seconds: WaitSeconds = 0) -> BootstrapResult:
    from flows.bootstrap import bootstrap as op

    return op.fn(spec=ClusterSpec(scope=scope), wait_seconds=wait_seconds)  # a new one: the defaults


@flow(name="teardown", description="Remove the cluster; data volumes stay unless volumes=true (the run then waits "
                                   "for the scope typed in its Resume form); the backup repository stays unless "
                                   "purge_backups=true.")
def teardown(scope: Scope = DEFAULT_SCOPE, volumes: bool = False, purge_backups: bool = False,
             wait_seconds: WaitSeconds = 0) -> TeardownResult:
    from flows.teardown import teardown as op

    return op.fn(spec=named(scope), volumes=volumes, purge_backups=purge_backups, wait_seconds=wait_seconds)


@flow(name="drill", description="Failover/fault drill under write load: measure RTO/RPO and always heal.")
def drill(scope: Scope = DEFAULT_SCOPE, kind: DrillKind = DrillKind.SWITCHOVER, to: str | None = None,
          probe_interval_ms: int = 50, heal_timeout_s: int = 180, wait_seconds: WaitSeconds = 0,
          seconds: int | None = None, host: str | None = None, kill_hosts: bool = False) -> DrillResult:
    """`host`: for the host drills, one of the stored spec's hosts by name (any other is refused);
    `kill_hosts`: site-loss kills the primary site's lab hosts and boots them again before the rebuild."""
    from flows.drill import drill as op

    return op.fn(spec=named(scope), kind=kind, to=to, probe_interval_ms=probe_interval_ms,
                       heal_timeout_s=heal_timeout_s, wait_seconds=wait_seconds, seconds=seconds, host=host,
                       kill_hosts=kill_hosts)


@flow(name="health-audit", description="Read-only health audit: every check as a row; Failed when any is critical.")
def audit(scope: Scope = DEFAULT_SCOPE) -> State:
    from flows.audit import audit as op

    return op.fn(spec=named(scope))


@flow(name="certs-renew", description="Renew the member and client certificates when fewer than "
                                      "tls.renew_within_days days remain (a rotation); otherwise nothing.")
def certs_renew(scope: Scope = DEFAULT_SCOPE, within_days: int | None = None,
                wait_seconds: WaitSeconds = 0) -> CertsRenewResult:
    from flows.certs import certs_renew as op

    return op.fn(spec=named(scope), within_days=within_days, wait_seconds=wait_seconds)


@flow(name="backup", description="pgBackRest backup from a replica, then a verified restore of it.")
def backup(scope: Scope = DEFAULT_SCOPE, type: bkd.BackupType = bkd.BackupType.FULL,  # noqa: A002 - the CLI's word
           verify: bool | None = None) -> BackupResult:
    from flows.backup import backup as op

    return op.fn(spec=named(scope), type=type, verify=verify)


@flow(name="dump", description="pg_dump -Fc of every database from a replica into the repository volume.")
def dump(scope: Scope = DEFAULT_SCOPE) -> DumpResult:
    from flows.backup import dump as op

    return op.fn(spec=named(scope))


@flow(name="verify-restore", description="Restore a backup set into a scratch container and check it.")
def verify_restore(scope: Scope = DEFAULT_SCOPE, label: str | None = None) -> VerifyResult:
    from flows.verify import verify_restore as op

    return op.fn(spec=named(scope), label=label)


@flow(name="upgrade", description="Rolling minor upgrade: an interrupted upgrade finished, else the stored spec's "
                                  "image rebuilt with the suite's security updates and rolled out.")
def upgrade(scope: Scope = DEFAULT_SCOPE, node_timeout_s: Annotated[int, Field(ge=10, le=3600)] | None = None,
            ) -> UpgradeResult:
    """No image is a parameter (any image would be a container on the cluster's networks with its
    volumes): the target is the pending upgrade's, else pgha's own build of the spec's image with
    security updates (`pgha upgrade --updates security`). Any other image: `pgha upgrade --image`."""
    from flows.upgrade import upgrade as op
    from flows.upgrade import upgrade_target

    return op.fn(spec=named(scope), image=upgrade_target(stored(scope)), node_timeout_s=node_timeout_s)


@flow(name="config-set", description="Change PostgreSQL parameters (Patroni dynamic config) with a rolling restart.")
def config_set(scope: Scope = DEFAULT_SCOPE, parameters: dict[str, str] | None = None,
               restart: bool = True) -> ConfigSetResult:
    from flows.config import config_set as op

    return op.fn(spec=named(scope), parameters=parameters, restart=restart)


@flow(name="scale", description="Add or remove Patroni nodes; HAProxy reloaded without dropping sessions.")
def scale(scope: Scope = DEFAULT_SCOPE, nodes: int = 3) -> ScaleResult:
    from flows.scale import scale as op

    return op.fn(spec=named(scope), nodes=nodes)


@flow(name="etcd-replace", description="Replace one etcd member, keeping quorum throughout.")
def etcd_replace(scope: Scope = DEFAULT_SCOPE, member: str = "etcd-1") -> EtcdReplaceResult:
    from flows.etcd_replace import etcd_replace as op

    return op.fn(spec=named(scope), member=member)


@flow(name="switchover", description="Planned switchover: pooler paused, new primary routed at once, pooler resumed.")
def switchover(scope: Scope = DEFAULT_SCOPE, to: str | None = None, wait_seconds: WaitSeconds = 0) -> SwitchoverResult:
    from flows.switchover import switchover as op

    return op.fn(spec=named(scope), to=to, wait_seconds=wait_seconds)


@flow(name="restart", description="Rolling restart of PostgreSQL: replicas first, switchover, the leader last.")
def restart(scope: Scope = DEFAULT_SCOPE, member: str | None = None, wait_seconds: WaitSeconds = 0) -> RestartResult:
    from flows.restart import restart as op

    return op.fn(spec=named(scope), member=member, wait_seconds=wait_seconds)


@flow(name="reinit", description="Rebuild one replica from the leader (its data is wiped) after the scope is typed "
                                 "in the run's Resume form.")
def reinit(scope: Scope = DEFAULT_SCOPE, member: str = "pg-2", wait_seconds: WaitSeconds = 0) -> ReinitResult:
    from flows.reinit import reinit as op

    return op.fn(spec=named(scope), member=member, wait_seconds=wait_seconds)


@flow(name="pause", description="Maintenance mode on: Patroni stops failing over and restarting until resume.")
def pause(scope: Scope = DEFAULT_SCOPE, wait_seconds: WaitSeconds = 0) -> PauseResult:
    from flows.maintenance import pause as op

    return op.fn(spec=named(scope), wait_seconds=wait_seconds)


@flow(name="resume", description="Maintenance mode off: Patroni manages failover again.")
def resume(scope: Scope = DEFAULT_SCOPE, wait_seconds: WaitSeconds = 0) -> PauseResult:
    from flows.maintenance import resume as op

    return op.fn(spec=named(scope), wait_seconds=wait_seconds)


@flow(name="restore", description="Point-in-time restore of a cluster's backups into a new cluster (into: its "
                                  "scope) or, after the scope is typed in the run's Resume form, in place.")
def restore(scope: Scope = DEFAULT_SCOPE, target: str = "", into: IntoScope = "", in_place: bool = False) -> RestoreResult:
    """Into a new cluster: the source's stored spec with `into` as its scope and its ports + 10
    (`pgha restore --into SCOPE`); any other spec for it: `pgha restore --into-spec` on the host."""
    from flows.restore import restore as op
    from flows.restore import target_spec

    if in_place:
        if into:
            raise UsageError("in_place and into exclude each other")
        return op.fn(spec=named(scope), target=target, in_place=True)
    if not into:
        raise UsageError("say where to restore: into=<a new scope>, or in_place=true")
    if not SCOPE_RE.match(into):
        raise UsageError(f"into: '{into}' is not a valid scope")
    return op.fn(spec=named(scope), target=target, into=target_spec(stored(scope), into, None))
