"""The audit's checks of fencing (`fencing.*`): the fencer's watcher and unconfirmed fences."""

from __future__ import annotations

from stack.audit import FENCER_STALE_S
from stack.audit_checks.check import Check

CHECKS: tuple[Check, ...] = (
    Check(
        name="fencing.watcher",
        component="fencing",
        target="each fencing watcher (the scope with one engine; `fencer-<host>` with `hosts:`)",
        checks=f"that the fencing watcher runs: a heartbeat in its counters newer than {FENCER_STALE_S:g} s; "
               "the observed column also counts what it fenced or skipped",
        warn=f"the watcher is missing or its counters unreadable; or its heartbeat is {FENCER_STALE_S:g} s old or older",
        thresholds=("fencing",),
        means="Without the watcher a dead leader is replaced only after Patroni's `ttl` (tens of "
              "seconds of no writes) instead of at once. With `fencing: false` the row is ok and says so.",
        steps=("`docker logs --since 30m <scope>-fencer` (with `hosts:`, `<scope>-fencer-<host>`).",
               "`pgha up` starts it again."),
        fixes=("pgha up",),
    ),
    Check(
        name="fencing.unconfirmed",
        component="fencing",
        target="each fencing watcher (the scope with one engine; `fencer-<host>` with `hosts:`)",
        checks="deaths the watcher saw but did not fence, because etcd or the engine did not answer",
        warn="any",
        thresholds=("fencing",),
        means="Those failovers waited for Patroni's `ttl`. The count is the watcher's since it started.",
        steps=("Check etcd (`etcd.*` rows) and the engine (`container.list`) around those times: "
               "`docker logs <scope>-fencer`.",
               "Restarting the watcher (`docker restart <scope>-fencer`) resets its counters."),
    ),
)
