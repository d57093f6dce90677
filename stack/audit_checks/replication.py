"""The audit's checks of replication (`replication*`, `delayed.within`, `site.standby`): streaming, lag, a delayed replica, a standby site, the sync standby."""

from __future__ import annotations

from stack.audit_checks.check import Check

CHECKS: tuple[Check, ...] = (
    Check(
        name="replication",
        component="replication",
        target="the cluster (its scope)",
        checks="that `pg_stat_replication` can be read on the primary",
        critical="there is no single leader, or the primary cannot be queried",
        means="Replication cannot be checked: there is no primary to ask.",
        steps=("Follow `patroni.leader` and `postgres.connect` first: this row clears with them.",),
        fixes=("pgha up",),
    ),
    Check(
        name="replication.streaming",
        component="replication",
        target="each replica",
        checks="the replica's row in the primary's `pg_stat_replication`",
        critical="absent, or in a state other than `streaming` (`startup`, `catchup`, `backup`, ...)",
        means="The replica receives no WAL: it falls behind, it is no failover candidate, and in "
              "synchronous mode commits may have no second copy.",
        steps=("`pgha status`; `pgha logs pg-N --since 30m` (e.g. the WAL it needs was already removed "
               "on the primary).",
               "A stopped node: `pgha up`.",
               "A replica that cannot catch up: `pgha reinit pg-N --yes`."),
        fixes=("pgha up", "pgha reinit"),
    ),
    Check(
        name="replication.lag_bytes",
        component="replication",
        target="each streaming replica",
        checks="bytes of WAL between the primary's position and the replica's replay position",
        warn="≥ `audit.lag_warn_bytes`",
        critical="≥ `audit.lag_critical_bytes`",
        thresholds=("audit.lag_warn_bytes", "audit.lag_critical_bytes", "patroni.maximum_lag_on_failover"),
        means="The replica replays behind the primary: reads from the R/O port are stale, and a replica "
              "further behind than `maximum_lag_on_failover` is no failover candidate.",
        steps=("`pgha status` shows every replica's lag.",
               "Look at the replica's `resource.memory` and `disk.data_volume` rows, and at long queries "
               "on it: `pgha psql --ro -c \"select pid, now() - query_start, query from pg_stat_activity "
               "where state = 'active'\"`.",
               "A bulk load on the primary lags every replica for a while: audit again later.",
               "A replica that never catches up: `pgha reinit pg-N --yes`."),
        fixes=("pgha reinit",),
    ),
    Check(
        name="replication.lag_seconds",
        component="replication",
        target="each streaming replica",
        checks="`replay_lag` of the replica in `pg_stat_replication` (time between a commit on the "
               "primary and its replay)",
        warn="≥ `audit.lag_warn_s`",
        critical="≥ `audit.lag_critical_s`",
        thresholds=("audit.lag_warn_s", "audit.lag_critical_s"),
        means="The replica replays late: reads from the R/O port see data this old.",
        steps=("As for `replication.lag_bytes`: the replica's resources, long queries on it, load on the "
               "primary; `pgha reinit pg-N --yes` for a replica that never catches up.",),
        fixes=("pgha reinit",),
    ),
    Check(
        name="delayed.within",
        component="replication",
        target="each delayed replica (`delayed:`)",
        checks="`replay_lag` of the delayed replica in `pg_stat_replication` against its delay, and that "
               "HAProxy's replicas backend does not route reads to it",
        warn="replays later than its delay + `audit.lag_warn_s`",
        critical="later than its delay + `audit.lag_critical_s`, in R/O routing, or the primary (declared "
                 "delayed while it led)",
        thresholds=("delayed", "audit.lag_warn_s", "audit.lag_critical_s"),
        only_when="the spec has `delayed:` nodes (their `replication.lag_*` rows are left out: they lag on purpose)",
        means="The delayed replica no longer keeps the window it promises (replay paused and forgotten, a "
              "node too slow to replay), or reads from the R/O port may land on data a delay old.",
        steps=("`pgha status` shows the node as `replica (delayed …)`; its replay: "
               "`docker exec -u postgres <scope>-pg-N psql -c \"select pg_is_wal_replay_paused(), now() - "
               "pg_last_xact_replay_timestamp()\"`.",
               "Replay left paused (an interrupted `pgha recover-from-delayed`): "
               "`docker exec -u postgres <scope>-pg-N psql -c \"select pg_wal_replay_resume()\"`.",
               "In R/O routing: its patroni.yml lost its tags; `pgha up` renders them again.",
               "The primary: `pgha switchover` to another node; it then follows as a delayed replica."),
        fixes=("pgha up", "pgha switchover"),
    ),
    Check(
        name="site.standby",
        component="replication",
        target="the standby cluster (`standby_of:`)",
        checks="the standby leader's WAL receiver, and how far it replays behind the primary site: bytes from "
               "the primary site's current LSN, seconds as the age of the last replayed transaction (0 when "
               "caught up)",
        warn="lag at or above `audit.lag_warn_bytes` or `audit.lag_warn_s`",
        critical="not streaming from the primary site, or lag at or above `audit.lag_critical_bytes` or "
                 "`audit.lag_critical_s`",
        thresholds=("standby_of", "audit.lag_warn_bytes", "audit.lag_critical_bytes", "audit.lag_warn_s",
                    "audit.lag_critical_s"),
        only_when="the spec has `standby_of:` (a second site)",
        means="The standby site no longer follows the primary site closely: a site failover now would lose "
              "what it has not replayed.",
        steps=("`pgha site status --scope <standby>`: each site's role, whether the standby streams, its lag.",
               "Not streaming: is the primary site up (`pgha status --scope <primary>`)? Its HAProxy and "
               "network must run; the standby's Patroni logs (`pgha logs pg-N --scope <standby>`) say why.",
               "The primary site is lost: `pgha site promote --scope <standby> --yes` (docs/howto/standby-"
               "cluster.md)."),
        fixes=("pgha site promote",),
    ),
    Check(
        name="replication.sync_standby",
        component="replication",
        target="the cluster (its scope)",
        checks="a replica with `sync_state` `sync` (or `quorum`)",
        critical="synchronous mode is on and no replica is synchronous",
        thresholds=("patroni.synchronous_mode", "profile"),
        only_when="synchronous mode (profile `fast`, or `patroni.synchronous_mode: true`) and more than one node",
        means="Commits wait for, or go without, their second copy: a failover now may lose "
              "acknowledged writes.",
        steps=("The `replication.streaming` rows name the replicas that do not stream; bring one back "
               "with `pgha up` or `pgha reinit pg-N --yes`.",),
        fixes=("pgha up", "pgha reinit"),
    ),
)
