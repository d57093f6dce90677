"""Health verbs: drill (break the cluster on purpose under load, measure, heal) and audit.

Both run their flows tagged `pgha`, `health`: the alert automations match those tags.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from cli import render
from cli.core import (
    HEALTH,
    Done,
    JsonOpt,
    ScopeOpt,
    SpecOpt,
    Verb,
    WaitOpt,
    app,
    checks,
    command,
    require_engines,
    resolve_spec,
    run_flow,
    warm,
)
from stack.drill import DrillKind, site_drill_refusal, spec_host_target
from stack.errors import PghaError, UsageError
from stack.results import AuditReport, DrillResult


@app.command(rich_help_panel=HEALTH)
@command(render.drill, flows=True)
def drill(kind: DrillKind = typer.Argument(..., help="the fault to inject"),
          spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
          to: str | None = typer.Option(None, "--to", help="switchover candidate / replica to kill"),
          interval_ms: int = typer.Option(50, "--interval-ms", min=10, max=5000, help="probe interval"),
          heal_timeout: int = typer.Option(180, "--heal-timeout", help="seconds the cluster may take to be whole again"),
          seconds: int | None = typer.Option(None, "--seconds", help="how long freeze / etcd-quorum-loss last "
                                             "(default ttl+5 / 60)"),
          host: str | None = typer.Option(None, "--host", help="host-loss: the host (of the spec's hosts) that dies"),
          kill_hosts: bool = typer.Option(False, "--kill-hosts", help="site-loss over lab hosts: kill the primary "
                                          "site's lab hosts (not only its containers), boot them again after the "
                                          "failover (the site returns and takes writes), then rebuild it"),
          as_json: bool = JsonOpt, wait: float = WaitOpt) -> Done[DrillResult]:
    """Break the cluster on purpose under write load, measure the gaps and lost writes, heal it.

    site-switchover and site-loss run with --scope of a standby site (its standby_of names the
    primary site): the site switchover under writes, or the whole primary site killed then a site
    failover, its RPO and RTO measured, and the dead site rebuilt as a standby (its data rewound,
    else cloned afresh). With --kill-hosts (a lab), the primary site's lab hosts die and boot again:
    the returning site takes writes, which the rebuild stops, discards and counts.

    Example: pgha drill hard-kill --heal-timeout 300
    """
    verb = Verb.open("drill", spec_file, scope, wait)
    try:
        spec_host_target(verb.spec, kind, host)  # a bad --host: one line, before any API or engine is asked
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if why := site_drill_refusal(verb.spec, kind, to, seconds, host, kill_hosts):
        raise UsageError(why)
    if kind.is_site:
        require_engines(verb.spec)
        from flows.site import switchover_preflight

        with checks() as check:  # both sites healthy, the standby streaming: one line, before the flow
            check(switchover_preflight, verb.spec, True)
            verb.warm()
            from flows.drill import drill as drill_flow

            return verb.engines().run(drill_flow, kind, probe_interval_ms=interval_ms, heal_timeout_s=heal_timeout,
                                      wait_seconds=wait, kill_hosts=kill_hosts, tags=("pgha", "health"))
    verb.warm()
    from flows.drill import drill as drill_flow

    return verb.engines().run(drill_flow, kind, to=to, probe_interval_ms=interval_ms, heal_timeout_s=heal_timeout,
                              wait_seconds=wait, seconds=seconds, host=host, tags=("pgha", "health"))


class QuietDrain(logging.Filter):
    """Drops Prefect's note that a service still has queued items while it drains them at exit."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Still processing items")


@app.command("audit", rich_help_panel=HEALTH)
@command(render.audit, flows=True, failed=lambda report: report.status == "critical", fast_exit=True)
def audit(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
          as_json: bool = typer.Option(False, "--json", help="machine-readable report")) -> Done[AuditReport]:
    """Run the health-audit flow: every check as a row; exit 1 when any finding is critical.

    Example: pgha audit --json
    """
    spec = resolve_spec(spec_file, scope)
    warm()
    require_engines(spec)
    from tasks.host.generations import deployed, serving
    from tasks.observe import prefetch, prefetch_rest

    # The cluster is observed while the flow is imported and its run created (mostly time spent
    # waiting on the engine and the network): the flow's gathering takes this snapshot.
    judged = deployed(serving(spec))
    prefetch(judged)
    from prefect.settings import temporary_settings

    from flows.audit import audit as audit_flow

    prefetch_rest(judged)  # Prefect is imported now: the parts that need it join while the run is created

    # The flow ends Failed on a critical finding (that is what alerts) and still returns its report.
    # No crash heartbeat for a run in this process: its first would say nothing a user watching it does
    # not see, and ending its thread waits up to a second (it sleeps in whole seconds).
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        state = run_flow(audit_flow, spec, return_state=True, tags=("pgha", "health"))  # the tags alerts match
    # The run's last events (its final state, the artifacts, pgha.audit.completed) are still being sent
    # when the process exits, which waits for them; Prefect's "Still processing items" about it is noise.
    logging.getLogger("EventsWorker").addFilter(QuietDrain())
    report = state.result(raise_on_failure=False)
    if not isinstance(report, AuditReport):
        raise PghaError(f"the audit flow ended {state.name}: {state.message or report}")
    return Done(report, spec)
