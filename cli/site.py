"""`pgha site`: a second site (a standby cluster, `standby_of:` in its spec): its status and its promotion."""

from __future__ import annotations

from pathlib import Path

import typer

from cli import render
from cli.core import DAY_TWO, Done, JsonOpt, ScopeOpt, SpecOpt, Verb, WaitOpt, app, checks, command
from stack.results import (
    SiteFailoverResult,
    SitePromoteResult,
    SiteRebuildResult,
    SiteStatusResult,
    SiteSwitchoverResult,
)

site_app = typer.Typer(no_args_is_help=True, help="A second site: a standby cluster following a primary site.")
app.add_typer(site_app, name="site", rich_help_panel=DAY_TWO)


@site_app.command("status")
@command(render.site_status, flows=True)
def site_status(spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt,
                as_json: bool = JsonOpt) -> Done[SiteStatusResult]:
    """Each site's role; a standby site's lag in bytes and seconds and the last WAL it replayed.

    Example: pgha site status --scope site-b
    """
    verb = Verb.open("site status", spec_file, scope).engines().warm()
    from flows.site import site_status as status_flow

    return verb.run(status_flow)


@site_app.command("promote")
@command(render.site_promote, flows=True)
def site_promote(yes: bool = typer.Option(False, "--yes", help="confirm: the standby site becomes a primary site "
                                                                "that accepts writes, independent of the other"),
                 primary_writable_ok: bool = typer.Option(False, "--primary-writable-ok",
                                                          help="promote even though the primary site still accepts "
                                                               "writes (two writable sites diverge)"),
                 spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, wait: float = WaitOpt,
                 as_json: bool = JsonOpt) -> Done[SitePromoteResult]:
    """Site failover: the standby site's standby leader promoted (Patroni's standby_cluster removed); needs --yes.

    Example: pgha site promote --scope site-b --yes
    """
    verb = Verb.open("site promote", spec_file, scope, wait).engines()
    from flows.site import promote_preflight
    from flows.site import site_promote as promote_flow

    with checks() as check:
        check(promote_preflight, verb.spec, yes, primary_writable_ok)  # refusals: one line, before the flow starts
        return verb.warm().run(promote_flow, yes=yes, primary_writable_ok=primary_writable_ok, wait_seconds=wait)


@site_app.command("switchover")
@command(render.site_switchover, flows=True)
def site_switchover(yes: bool = typer.Option(False, "--yes", help="confirm: the primary site becomes a standby of "
                                                                "this one, writes stop for a few seconds"),
                    spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, wait: float = WaitOpt,
                    as_json: bool = JsonOpt) -> Done[SiteSwitchoverResult]:
    """Site switchover, run on the standby site: the primary site demoted, this one promoted; no write lost.

    The primary site's leader restarts as a standby leader, this site replays its last WAL, is
    promoted, and the old primary site follows it. Both stored specs are swapped. Needs --yes.

    Example: pgha site switchover --scope site-b --yes
    """
    verb = Verb.open("site switchover", spec_file, scope, wait).engines()
    from flows.site import site_switchover as switchover_flow
    from flows.site import switchover_preflight

    with checks() as check:
        check(switchover_preflight, verb.spec, yes)
        return verb.warm().run(switchover_flow, yes=yes, wait_seconds=wait)


@site_app.command("failover")
@command(render.site_failover, flows=True)
def site_failover(yes: bool = typer.Option(False, "--yes", help="confirm: this site becomes the primary site; the "
                                                                "other's writes not yet streamed are lost"),
                  spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, wait: float = WaitOpt,
                  as_json: bool = JsonOpt) -> Done[SiteFailoverResult]:
    """Site failover, run on the standby site: the old primary site fenced (its nodes stopped) if reachable, this one promoted.

    When the engine does not reach the old primary site, the result says what the operator must
    do. Rebuild the old site as a standby afterwards (`pgha site rebuild`). Needs --yes.

    Example: pgha site failover --scope site-b --yes
    """
    verb = Verb.open("site failover", spec_file, scope, wait).engines()
    from flows.site import failover_preflight
    from flows.site import site_failover as failover_flow

    with checks() as check:
        check(failover_preflight, verb.spec, yes)
        return verb.warm().run(failover_flow, yes=yes, wait_seconds=wait)


@site_app.command("rebuild")
@command(render.site_rebuild, flows=True)
def site_rebuild(standby_of: str = typer.Option(..., "--standby-of", help="the site that is primary now, which "
                                                                          "this one will follow"),
                 yes: bool = typer.Option(False, "--yes", help="confirm: this site's nodes are stopped, and what it "
                                                               "wrote that the primary site never received is "
                                                               "discarded (rewind) or its data deleted (clone)"),
                 clone: bool = typer.Option(False, "--clone", help="clone the site afresh from the primary site "
                                                                   "instead of keeping and rewinding its data"),
                 spec_file: Path | None = SpecOpt, scope: str | None = ScopeOpt, wait: float = WaitOpt,
                 as_json: bool = JsonOpt) -> Done[SiteRebuildResult]:
    """The old primary site (after a site failover) made a standby of the new primary site: its data rewound, else cloned afresh; needs --yes.

    Its nodes are stopped first (a site that came back takes writes again). When its old leader's
    data directory is intact (same system identifier, wal_log_hints or checksums) and its etcd
    answers, the data is kept: `standby_cluster` is written to its etcd and Patroni rewinds its
    leader onto the primary site's timeline with pg_rewind; the writes it discards (that the
    primary site never received) are counted. Else, with --clone, or when the rewind fails, its
    containers and volumes are replaced by a fresh clone. Its passwords and CA stay.

    Example: pgha site rebuild --scope site-a --standby-of site-b --yes
    """
    verb = Verb.open("site rebuild", spec_file, scope, wait).engines()
    from flows.site import rebuild_preflight
    from flows.site import site_rebuild as rebuild_flow

    with checks() as check:
        check(rebuild_preflight, verb.spec, standby_of, yes, clone)
        return verb.warm().run(rebuild_flow, standby_of=standby_of, yes=yes, clone=clone, wait_seconds=wait)
