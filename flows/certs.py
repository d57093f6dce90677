"""certs rotate: new member and client certificates from the cluster's CA, installed with reloads;
certs renew: the same, only when they are due (the `certs-renew/daily` deployment).

No restart and no switchover: etcd reads its certificate files on every new TLS connection,
Patroni reloads its REST API certificate on `POST /reload`, PostgreSQL its SSL files on
`pg_reload_conf()`. Clients trust the CA, which does not change, so connections made before,
during and after the rotation all verify. The fencer, whose agent loads its etcd client
certificate once, is restarted (it only watches; fencing pauses for a second or two).
Each member in turn; afterwards every TLS endpoint must serve the new certificate.
"""

from __future__ import annotations

from prefect import flow

from flows.steps.cluster import require_healthy
from flows.steps.deployment import pinned_spec
from flows.steps.ops import current, mutating_flow, note
from stack import tls
from stack.errors import StateError
from stack.results import CertsRenewResult, CertsRotateResult
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import certs, docker_hosts, patroni, pgbouncer, postgres
from tasks.host import tls as host_tls
from tasks.host.generations import deployed, serving
from tasks.host.lock import WaitSeconds


def check(spec: ClusterSpec) -> None:
    """Refusals before anything changes."""
    if not spec.tls.enabled:
        raise StateError(f"cluster {spec.scope} runs without TLS (tls.enabled: false): there is nothing to rotate")
    if not host_tls.ca_path(spec.scope).exists():
        raise StateError(f"cluster {spec.scope} has no CA in its state directory; run `pgha up` first")


@flow(name="certs-rotate", description="New certificates from the cluster CA, rolled out with reloads (no restart).")
@mutating_flow("certs-rotate")
def certs_rotate(spec: ClusterSpec = ClusterSpec(), wait_seconds: WaitSeconds = 0) -> CertsRotateResult:  # noqa: B008
    spec = deployed(spec)  # a pooler on by default that `pgha up` has not added yet: none to rotate
    check(spec)
    require_healthy(spec, "a certificate rotation")
    old = {i.name: i for i in host_tls.certificates(spec)}
    leaves = host_tls.renew(spec)
    new = tls.cert_info("member.crt", leaves["member.crt"])
    note(f"new certificates issued by the cluster CA, valid until {new.not_after:%Y-%m-%d}")
    for m in spec.etcd_names():
        host_tls.install(spec, m)
        docker_hosts.sync_config(spec, m)  # many hosts: into its config volume
        certs.reinstall(spec, m, "etcd")  # etcd loads them on its next TLS handshake
        note(f"{m}: installed")
    for m in spec.node_names():
        host_tls.install(spec, m)
        docker_hosts.sync_config(spec, m)  # many hosts: into its config volume
        certs.reinstall(spec, m, "postgres")
        patroni.reload_member(spec, m)
        postgres.node_sql(spec, m, "select pg_reload_conf()")
        note(f"{m}: installed, Patroni and PostgreSQL reloaded")
    host_tls.install(spec, spec.haproxy_member)  # the CA it verifies with is unchanged: nothing to reload
    docker_hosts.sync_config(spec, spec.haproxy_member)
    if spec.runs_pooler:
        host_tls.install(spec, spec.pooler_member)
        docker_hosts.sync_config(spec, spec.pooler_member)
        certs.reinstall(spec, spec.pooler_member, "postgres")
        pgbouncer.reload(spec)  # RELOAD re-reads its certificate; its clients stay connected
        note(f"{spec.pooler_member}: installed, PgBouncer reloaded")
    if spec.metrics.enabled:
        host_tls.install(spec, spec.metrics_member)  # the CA it verifies the REST API with: read per request
        docker_hosts.sync_config(spec, spec.metrics_member)
    for m in spec.fencer_members():  # with hosts, one watcher per node's host
        host_tls.install(spec, m)
        docker_hosts.sync_config(spec, m)
        eng = docker_hosts.engines(spec).of(m)
        eng.restart(spec.container(m), timeout=1)  # the agent holds no state worth a graceful stop
        note(f"{m} restarted with the new client certificate")

    serials = {f: tls.cert_info(f, leaves[f]).serial for f in tls.LEAVES}

    def stale() -> list[str]:
        return [f"{m}:{port}" for m, port, st, f in certs.endpoints(spec)
                if certs.served_serial(spec, m, port, st) != serials[f]]

    wait_for("every TLS endpoint to serve the new certificate", stale, lambda s: not s, timeout=30, interval=1,
             describe=lambda s: "still old: " + ", ".join(s))
    require_healthy(spec, "finishing the certificate rotation")
    note(f"{len(certs.endpoints(spec))} TLS endpoints serve the new certificate")
    before = old.get("member.crt")
    return CertsRotateResult(scope=spec.scope, old_not_after=f"{before.not_after:%Y-%m-%d}" if before else "",
                             new_not_after=f"{new.not_after:%Y-%m-%d}", endpoints=len(certs.endpoints(spec)),
                             restarts=0, switchovers=0, events=list(current().events), elapsed_s=current().elapsed())


@flow(name="certs-renew", description="Renew the member and client certificates when fewer than "
                                      "tls.renew_within_days days remain (a rotation); otherwise nothing.")
def certs_renew(spec: ClusterSpec = ClusterSpec(), within_days: int | None = None,  # noqa: B008
                wait_seconds: WaitSeconds = 0) -> CertsRenewResult:
    """`within_days`: renew when fewer days than this remain (default the spec's
    `tls.renew_within_days`). Read-only unless they are due; then a `certs-rotate` subflow."""
    spec = serving(pinned_spec(spec))
    import datetime as dt

    check(spec)
    due, detail = tls.renewal_due(host_tls.certificates(spec), dt.datetime.now(dt.UTC),
                                  within_days or spec.tls.renew_within_days)
    if not due:
        return CertsRenewResult(scope=spec.scope, renewed=False, detail=detail)
    rotation = certs_rotate(spec, wait_seconds=wait_seconds)
    return CertsRenewResult(scope=spec.scope, renewed=True, detail=detail, rotation=rotation)
