"""The audit's checks of Patroni (`patroni.*`): its API, the leader, pause, members, timelines, pending restarts, probes, failsafe."""

from __future__ import annotations

from stack.audit_checks.check import Check

CHECKS: tuple[Check, ...] = (
    Check(
        name="patroni.api",
        component="Patroni",
        target="the cluster (its scope)",
        checks="that a Patroni node answers its REST API's `/cluster`",
        critical="no Patroni node answers",
        means="Every Patroni node is down or unreachable: no PostgreSQL, no failover.",
        steps=("`pgha status` and the `container.running` rows: are the nodes running?",
               "`pgha logs pg-N --since 30m` for each node.",
               "`pgha up` starts stopped nodes."),
        fixes=("pgha up",),
    ),
    Check(
        name="patroni.leader",
        component="Patroni",
        target="the cluster (its scope)",
        checks="the members Patroni reports with role `leader`",
        critical="none, or more than one",
        means="No writable primary (writes fail), or two leaders (should never happen: Patroni's "
              "leader lock is in etcd). Between a primary's death and the promotion of a replica "
              "there is no leader for a few seconds; a row that persists is an outage.",
        steps=("Check the `etcd.*` rows: without etcd Patroni cannot elect a leader.",
               "`pgha status` for the members' states; `pgha logs pg-N --since 10m`.",
               "Paused (`patroni.paused`): Patroni does not fail over; start the primary again with "
               "`pgha up`, or `pgha resume`.",
               "`pgha history` shows the last leader changes and what caused them."),
        fixes=("pgha up", "pgha resume"),
    ),
    Check(
        name="patroni.paused",
        component="Patroni",
        target="the cluster (its scope)",
        checks="Patroni's maintenance mode",
        warn="the cluster is paused",
        means="Patroni neither fails over nor restarts PostgreSQL: a dead primary stays dead. "
              "`pgha restart`, `pgha reinit` and `pgha upgrade` refuse to run meanwhile.",
        steps=("If no maintenance is going on, `pgha resume`.",),
        fixes=("pgha resume",),
    ),
    Check(
        name="patroni.member",
        component="Patroni",
        target="each Patroni node",
        checks="that the node is registered in Patroni and its state: `running` for the leader, "
               "`streaming` (or `running`) for a replica",
        critical="not registered, or in another state (`stopped`, `start failed`, `crashed`, "
                 "`creating replica`, ...)",
        means="This node does not serve: one copy fewer, and if it was a failover candidate, fewer "
              "candidates. `creating replica` is a clone in progress (after `pgha reinit` or a new node).",
        steps=("`pgha status`; `pgha logs pg-N --since 30m`.",
               "Not registered: its container is down; `pgha up` starts it.",
               "`start failed` or a replica that cannot follow the leader: `pgha reinit pg-N --yes` wipes "
               "its data and clones it from the leader (refused for the leader)."),
        fixes=("pgha up", "pgha reinit"),
    ),
    Check(
        name="patroni.timeline",
        component="Patroni",
        target="each Patroni node",
        checks="the node's timeline against the leader's",
        critical="the node is on another timeline",
        means="The node did not follow the last promotion: it diverged from the leader (Patroni's "
              "`pg_rewind` did not bring it back) and replicates nothing new.",
        steps=("Right after a switchover or failover, audit again: a replica takes a moment to follow.",
               "`pgha logs pg-N --since 30m` for the rewind's error.",
               "`pgha reinit pg-N --yes` clones it again from the leader."),
        fixes=("pgha reinit",),
    ),
    Check(
        name="patroni.pending_restart",
        component="Patroni",
        target="each Patroni node",
        checks="Patroni's `pending_restart` flag",
        warn="a changed parameter waits for a restart",
        means="A PostgreSQL parameter that needs a restart was changed (e.g. `pgha config set "
              "--no-restart`); the node runs with the old value.",
        steps=("`pgha restart pg-N` (a replica is drained first; the leader's turn is a switchover), "
               "or `pgha restart --all`.",),
        fixes=("pgha restart",),
    ),
    Check(
        name="patroni.liveness",
        component="Patroni",
        target="each Patroni node",
        checks="HTTP code of the node's own `/liveness` (Patroni's HA loop runs)",
        critical="no answer, or not HTTP 200",
        means="Patroni on this node is stuck or down: it neither manages its PostgreSQL nor takes part "
              "in failover.",
        steps=("`pgha logs pg-N --since 10m`.",
               "A stopped container: `pgha up`.",
               "A Patroni that runs but does not answer: `docker restart <scope>-pg-N`. On the leader "
               "that is a failover; while its API still answers, `pgha switchover` first hands the "
               "leadership over cleanly."),
        fixes=("pgha up", "pgha switchover"),
    ),
    Check(
        name="patroni.readiness",
        component="Patroni",
        target="each Patroni node",
        checks="HTTP code of the node's own `/readiness` (Patroni leads, or its PostgreSQL is up and running)",
        critical="no answer, or not HTTP 200",
        means="The node is not ready to serve: its PostgreSQL is down or still starting. HAProxy's own "
              "checks (`/primary`, `/replica`) fail for it too, so it gets no clients.",
        steps=("Look at the same node's `patroni.member` and `replication.streaming` rows.",
               "`pgha logs pg-N --since 10m`; `pgha reinit pg-N --yes` for a replica that cannot catch up."),
        fixes=("pgha up", "pgha reinit"),
    ),
    Check(
        name="patroni.failsafe_mode",
        component="Patroni",
        target="the cluster (its scope)",
        checks="`failsafe_mode` in Patroni's dynamic configuration against the spec's `failsafe_mode`",
        warn="it differs from the spec, or Patroni's configuration cannot be read",
        thresholds=("failsafe_mode",),
        means="The cluster reacts to an etcd outage otherwise than the spec says: with failsafe off, a "
              "primary demotes as soon as etcd loses its quorum.",
        steps=("`pgha up` sets it as the spec says (a change of the dynamic configuration, no restart).",),
        fixes=("pgha up",),
    ),
    Check(
        name="patroni.failsafe_active",
        component="Patroni",
        target="the cluster (its scope)",
        checks="whether a node runs on failsafe now (`failsafe_mode_is_active` in its status)",
        warn="a node runs on failsafe",
        thresholds=("failsafe_mode",),
        means="etcd lost its quorum: the primary is kept only while it reaches every Patroni node's "
              "REST API. No failover is possible until etcd is back.",
        steps=("Repair etcd first: the `etcd.*` rows; `pgha up` restarts stopped members, "
               "`pgha etcd replace etcd-N` rebuilds a damaged one.",),
        fixes=("pgha up", "pgha etcd replace"),
    ),
)
