"""The health audit's table of checks: every check the audit can report, and its runbook.

One entry per check name a `Finding` can carry (`stack.audit`, `stack.audit_backup`,
`stack.pooler`, `flows/audit.py`): which component it looks at, when it warns and when it is
critical (and which spec fields set those thresholds), what it means when it fires, what to do
and which pgha verb fixes it. The documentation renders it twice (docs/hooks/gen_audit.py): the
reference table of checks and the runbooks page, one entry per check under the anchor that a
non-ok finding's hint names (`stack.audit.runbook_ref`). `tests/unit/test_audit_checks.py`
fails when the code emits a check that has no entry here, or an entry names no emitted check.

Pure data: text in Markdown (inline code in backticks), thresholds quoted from the code's
constants so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from stack import tls
from stack.audit import FENCER_STALE_S, OOM_WINDOW_S, runbook_anchor
from stack.audit_backup import CRITICAL_FACTOR, WARN_FACTOR
from stack.backup import CIPHER_TYPE
from stack.layout import ETCD_CLIENT_PORT, ETCD_QUOTA_BYTES
from stack.major import FORWARD_SUB, REVERSE_SUB
from stack.pooler import ADMIN_DB, WAIT_CRITICAL_S, WAIT_WARN_S

_QUOTA_GIB = ETCD_QUOTA_BYTES / 2**30
_ETCDCTL = (f"docker exec <scope>-etcd-N etcdctl --endpoints=https://localhost:{ETCD_CLIENT_PORT} "
            f"--cacert={tls.ROOT_CA} --cert={tls.ROOT_CLIENT_CERT} --key={tls.ROOT_CLIENT_KEY}")


@dataclass(frozen=True)
class Check:
    """One check of the health audit and its runbook entry."""

    name: str  # the finding's `check` column, e.g. "patroni.member"
    component: str  # etcd, Patroni, replication, HAProxy, ...
    target: str  # what a row's target is (one row per ...)
    checks: str  # what it looks at
    warn: str = ""  # when it is a warning ("" = never)
    critical: str = ""  # when it is critical ("" = never)
    thresholds: tuple[str, ...] = ()  # spec fields that set the thresholds or switch the check on
    only_when: str = ""  # the row appears only when ... ("" = always)
    means: str = ""  # what it means when it fires
    steps: tuple[str, ...] = ()  # what to do, in order
    fixes: tuple[str, ...] = ()  # the pgha verbs that fix it (each starts with "pgha ")

    def __post_init__(self) -> None:
        # A one-step tuple written without its comma is a str: caught at import, not in the docs.
        for f in ("thresholds", "steps", "fixes"):
            value = getattr(self, f)
            if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"{self.name}: {f} must be a tuple of str, not {value!r}")
        if bad := [v for v in self.fixes if not v.startswith("pgha ")]:
            raise ValueError(f"{self.name}: fixes are pgha verbs ('pgha up'), not {bad}")
        if (self.warn or self.critical) and not self.steps:
            raise ValueError(f"{self.name}: a check that can fire needs steps (what to do)")

    @property
    def anchor(self) -> str:
        """The runbook entry's anchor, the one a non-ok finding's hint names."""
        return runbook_anchor(self.name)

    @property
    def informational(self) -> bool:
        """A row that is always ok: it reports a figure, it never fires."""
        return not self.warn and not self.critical


CHECKS: tuple[Check, ...] = (
    # ---- containers and resources ----
    Check(
        name="container.list",
        component="containers",
        target="the cluster (its scope)",
        checks="that the Docker engine (every engine of `hosts:`) lists the cluster's containers",
        critical="an engine does not answer: no container row can be judged",
        means="pgha cannot reach a Docker engine: the daemon is stopped, or with `hosts:` a host, its SSH or "
              "its TLS certificates are unreachable. The cluster itself may still serve.",
        steps=("`docker info` on the machine (or the host) named in the observed error.",
               "With `hosts:`, check the host's address, its SSH access or engine certificates in the spec.",
               "Once the engine answers, `pgha audit` again; `pgha up` restarts whatever stopped with it."),
        fixes=("pgha up",),
    ),
    Check(
        name="container.running",
        component="containers",
        target="each container the spec runs (etcd, Patroni nodes, HAProxy, pooler, fencer, repository host)",
        checks="that the container exists, runs, and its health check passes",
        warn="a fencing watcher is missing or stopped; or a container's health check is still `starting`",
        critical="a container is missing or not running; or it runs and its health check reports `unhealthy`",
        means="One component is down. The other rows say what it costs: `etcd.*` for an etcd member, "
              "`patroni.*` and `replication.*` for a node, `haproxy.*` for HAProxy. Without the fencing "
              "watcher, failover still works but a dead leader is replaced only after Patroni's `ttl`.",
        steps=("`pgha status` shows which members are down.",
               "`pgha logs MEMBER --since 30m` says why it stopped (etcd-N, pg-N, haproxy; for the pooler, "
               "the fencer or the repository host: `docker logs <scope>-MEMBER`).",
               "`pgha up` starts a stopped container and recreates a missing one; data volumes are kept.",
               "Unhealthy: `docker inspect <scope>-MEMBER` shows the health check's last outputs under "
               "`State.Health`. `starting` right after a start is normal: audit again in a minute."),
        fixes=("pgha up",),
    ),
    Check(
        name="container.restarts",
        component="containers",
        target="each running container",
        checks="restarts since the previous audit (the engine's RestartCount against the audit baseline "
               "kept in the state directory); the first audit and a recreated container start a new count",
        warn="restarts since the last audit ≥ `audit.restarts_warn`",
        critical="≥ `audit.restarts_critical`",
        thresholds=("audit.restarts_warn", "audit.restarts_critical"),
        means="The process in the container keeps exiting and Docker restarts it: a crash loop, a bad "
              "configuration, or an out-of-memory kill.",
        steps=("`pgha logs MEMBER --since 1h` for the last exits.",
               "Look at the `resource.oom` and `resource.memory` rows of the same member: an OOM kill "
               "restarts a container too.",
               "Fix the cause (memory limit, configuration), then `pgha up` to converge the container.",
               "The count is relative to the previous audit: once the restarts stop, the next audit is ok."),
        fixes=("pgha up",),
    ),
    Check(
        name="container.log_cap",
        component="containers",
        target="each container the spec runs",
        checks="the container's log driver and options (`HostConfig.LogConfig`) against the spec's `logs:`: "
               "`json-file`, rotated at `logs.max_size`, `logs.max_files` files kept",
        warn="the container's log has no cap (it was created by a pgha without log caps), or a cap other "
             "than the spec's",
        thresholds=("logs.max_size", "logs.max_files"),
        means="Docker sets a container's log options only when it creates the container, so a container "
              "made before the spec's cap (or before pgha capped logs at all) keeps its old options: its "
              "log may grow without bound until the disk is full.",
        steps=("`pgha up` recreates each container whose cap differs: etcd members one at a time, Patroni "
               "nodes one at a time (replicas first, the leader after a switchover), then HAProxy, the "
               "pooler and the fencing watchers. Recreating HAProxy closes the client connections open "
               "through it.",
               "Audit again: every row is ok once each container carries the spec's cap."),
        fixes=("pgha up",),
    ),
    Check(
        name="resource.memory",
        component="resources",
        target="each container (the scope when the engine's stats do not answer)",
        checks="memory in use (page cache the kernel can drop excluded) against the container's limit",
        warn="use ≥ `audit.memory_warn_pct` of the limit; or the container has no memory limit; "
             "or the engine's stats do not answer",
        critical="use ≥ `audit.memory_critical_pct` of the limit",
        thresholds=("audit.memory_warn_pct", "audit.memory_critical_pct", "resources"),
        means="The container is close to its memory limit: the kernel will kill its largest process "
              "(PostgreSQL backends first in a node). A container without a limit was made before "
              "the spec's `resources:` existed.",
        steps=("Raise `resources.<role>.memory_mib` (the hint names the role) in the spec, or lower the "
               "memory settings (`shared_buffers`, `work_mem`) with `pgha config set`.",
               "`pgha up` recreates the containers whose limit changed: Patroni nodes one at a time, "
               "replicas first and the leader after a switchover; etcd members one at a time."),
        fixes=("pgha up", "pgha config set"),
    ),
    Check(
        name="resource.oom",
        component="resources",
        target="each container",
        checks=f"OOM kills: the container's last exit, and the engine's `oom` events of the last "
               f"{OOM_WINDOW_S / 3600:g} h",
        critical="an OOM kill",
        thresholds=("resources",),
        means="The kernel killed a process of the container for memory. In a Patroni node that is a "
              "PostgreSQL backend (every session restarts) or PostgreSQL itself (a failover when it led).",
        steps=("`pgha logs MEMBER --since 1h` around the kill.",
               "Raise `resources.<role>.memory_mib` and run `pgha up`, or lower the memory settings "
               "with `pgha config set work_mem=...`.",
               f"The row clears once no kill happened in the last {OOM_WINDOW_S / 3600:g} h."),
        fixes=("pgha up", "pgha config set"),
    ),
    # ---- etcd ----
    Check(
        name="etcd.api",
        component="etcd",
        target="the cluster (its scope)",
        checks="that etcdctl, run in a running etcd member, gets an answer from the etcd cluster",
        critical="no etcd member answers",
        means="Patroni has no DCS: it cannot renew the leader lock. With `failsafe_mode` the primary keeps "
              "running while it reaches every Patroni node; otherwise it demotes and the cluster is read-only.",
        steps=("`pgha status` and `pgha logs etcd-1 --since 30m` (each member).",
               "`pgha up` starts stopped etcd containers.",
               "A member whose data is damaged: `pgha etcd replace etcd-N` once the others have a quorum."),
        fixes=("pgha up", "pgha etcd replace"),
    ),
    Check(
        name="etcd.auth",
        component="etcd",
        target="the cluster (its scope)",
        checks="`etcdctl auth status` (pgha's client certificate), and whether pgha switched etcd's "
               "authentication on when it made the cluster (`<state>/<scope>/etcd-auth-on`)",
        warn="authentication is off on a cluster made before pgha switched it on at creation, "
             "or etcd did not answer",
        critical="authentication is off although pgha had switched it on",
        only_when="`tls.enabled`",
        means="With authentication off, every holder of a certificate from the cluster's CA (the Patroni nodes "
              "and the fencer among them) can write every key of the cluster: the DCS configuration (with it "
              "`archive_command`, a shell on the primary) and the leader key. A cluster made before etcd "
              "authentication has no rolling path to it: Patroni cannot be given its etcd password while "
              "authentication is off, and switching it on first cuts every node from etcd at once.",
        steps=("Critical (pgha had switched it on: someone or something switched it off, or etcd was recreated "
               "empty by hand): `pgha up` switches it on again and sets the users' passwords from the state "
               "directory.",
               "Warning, a cluster made before etcd authentication: move it by rebuilding it, either "
               "`pgha restore --into NEW-SCOPE` (a new cluster, with etcd authentication, from the last "
               "backup; point clients at its `pgha dsn`, then `pgha down` the old one) or `pgha upgrade "
               "--major` (its green cluster is new). Until then keep the CA's certificates where only the "
               "cluster's containers read them."),
        fixes=("pgha up", "pgha restore", "pgha upgrade"),
    ),
    Check(
        name="etcd.leader_key",
        component="etcd",
        target="the cluster (its scope)",
        checks="Patroni's leader key in etcd: the lease it carries against the session (lease) of the member "
               "key of the member it names. Patroni writes both with its own session; the fencer, the only other "
               "etcd user allowed to write the leader key, may write no member key",
        warn="etcd did not answer",
        critical="the leader key has no lease, names a member without a member key, or carries another lease "
                 "than that member's (read again for two of Patroni's loops before it is reported)",
        means="Something other than Patroni wrote the leader key (a fencer's credentials misused, or a hand "
              "with pgha's client certificate): the members act on a leader Patroni did not elect. A key "
              "without a lease never expires: no election happens while it stays.",
        steps=("Delete the key (the members elect a leader again within a loop): "
               "`docker exec <scope>-etcd-1 etcdctl --endpoints=https://localhost:2379 --cacert=/etc/pgha/tls/ca.crt "
               "--cert=/etc/pgha/tls/client.crt --key=/etc/pgha/tls/client.key del /service/<scope>/leader`.",
               "Find out who wrote it: the fencer's log (`pgha logs fencer --since 1h`) and the etcd members' "
               "logs (`pgha logs etcd-1 --since 1h`)."),
        fixes=("pgha logs",),
    ),
    Check(
        name="etcd.member",
        component="etcd",
        target="each etcd member",
        checks="`etcdctl endpoint health` of the member",
        critical="the member does not answer or reports unhealthy",
        means="One etcd member is down. The others keep the quorum as long as a majority is healthy "
              "(see `etcd.quorum`); one more failure may take it.",
        steps=("`pgha logs etcd-N --since 30m`.",
               "`pgha up` restarts a stopped member.",
               "A member that runs but does not rejoin (damaged data, lost membership): "
               "`pgha etcd replace etcd-N` gives it fresh data and adds it back, keeping the quorum "
               "(it needs at least 3 members and every other member healthy)."),
        fixes=("pgha up", "pgha etcd replace"),
    ),
    Check(
        name="etcd.quorum",
        component="etcd",
        target="the cluster (its scope)",
        checks="healthy etcd members against the majority the raft group needs (`etcd_members // 2 + 1`)",
        critical="fewer than a majority are healthy",
        means="etcd accepts no writes: Patroni cannot renew its leader lock. With `failsafe_mode` on "
              "(`patroni.failsafe_active` says so) the primary stays while it reaches every Patroni node; "
              "otherwise it demotes and no writes are possible. No failover can happen.",
        steps=("The `etcd.member` rows name the members down; `pgha logs etcd-N` for each.",
               "`pgha up` restarts the stopped ones: the quorum is back with the majority.",
               "Then replace damaged members one at a time with `pgha etcd replace etcd-N`."),
        fixes=("pgha up", "pgha etcd replace"),
    ),
    Check(
        name="etcd.leader",
        component="etcd",
        target="the cluster (its scope)",
        checks="the healthy members that report being the raft leader",
        critical="none, or more than one",
        means="etcd has no leader (an election that does not end: members cannot reach each other) or "
              "two members each believe they lead (a network partition). Writes stall meanwhile.",
        steps=("Check the `etcd.member` and `etcd.quorum` rows first.",
               "`pgha logs etcd-N --since 30m` on each member: look for lost peers and elections.",
               "With `hosts:`, check the network between the hosts; `pgha up` restarts stopped members."),
        fixes=("pgha up",),
    ),
    Check(
        name="etcd.db_size",
        component="etcd",
        target="each etcd member",
        checks=f"the member's database size against etcd's {_QUOTA_GIB:g} GiB backend quota",
        warn="≥ `audit.etcd_db_warn_pct` of the quota",
        critical="≥ `audit.etcd_db_critical_pct`",
        thresholds=("audit.etcd_db_warn_pct", "audit.etcd_db_critical_pct"),
        means="At the quota etcd raises a NOSPACE alarm and refuses every write, so Patroni cannot renew "
              "its lock. pgha runs etcd with hourly auto-compaction; the space of compacted revisions "
              "returns only with a defragmentation.",
        steps=("Defragment one member at a time (it blocks that member briefly): "
               f"`{_ETCDCTL} defrag` (without TLS: `http://` and no certificate flags).",
               "If the NOSPACE alarm was raised, disarm it afterwards with the same command and "
               "`alarm disarm`.",
               "A size that keeps growing means something writes into etcd besides Patroni."),
    ),
    # ---- Patroni ----
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
    # ---- replication ----
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
    # ---- HAProxy ----
    Check(
        name="haproxy.stats",
        component="HAProxy",
        target="the cluster (its scope)",
        checks="that HAProxy's stats endpoint (`ports.stats` on 127.0.0.1) answers",
        critical="it does not answer",
        thresholds=("ports.stats",),
        means="HAProxy is down or unreachable: clients reach neither the R/W nor the R/O port.",
        steps=("`pgha logs haproxy --since 30m`.",
               "`pgha up` starts it again (its configuration is rendered from the spec)."),
        fixes=("pgha up",),
    ),
    Check(
        name="haproxy.rw_port",
        component="HAProxy",
        target="the R/W port",
        checks="a connection through the R/W port (`ports.rw`): which node it reaches, and that it is "
               "writable and Patroni's leader",
        critical="no connection, a read-only node, or another node than the leader",
        thresholds=("ports.rw",),
        means="Writes do not reach the primary. During a switchover or failover this lasts a few "
              "seconds; longer, it is an outage for writers.",
        steps=("Audit again: a switchover may have been in progress.",
               "`pgha status` for the leader; the `haproxy.primary_backend` row for HAProxy's view.",
               "`pgha logs haproxy --since 10m`; `pgha up` renders and reloads HAProxy's configuration."),
        fixes=("pgha up",),
    ),
    Check(
        name="haproxy.ro_port",
        component="HAProxy",
        target="the R/O port",
        checks="a connection through the R/O port (`ports.ro`): that it reaches a replica",
        critical="no connection, or it reaches the primary",
        thresholds=("ports.ro",),
        only_when="more than one node",
        means="Readers get no replica (no connection) or read from the primary, which the R/O port "
              "must never route to.",
        steps=("The `replication.streaming` and `haproxy.replica_backend` rows: is a replica streaming "
               "and UP in HAProxy?",
               "`pgha logs haproxy --since 10m`; `pgha up` reloads its configuration."),
        fixes=("pgha up", "pgha reinit"),
    ),
    Check(
        name="haproxy.primary_backend",
        component="HAProxy",
        target="the cluster (its scope)",
        checks="the servers UP in HAProxy's primary backend against Patroni's leader",
        critical="the UP set is not exactly the leader",
        means="HAProxy routes writes otherwise than Patroni decided: to no node, or to a former primary. "
              "HAProxy checks each node's Patroni API every `haproxy.inter_ms`, so a row right "
              "after a switchover may be mid-transition.",
        steps=("Audit again.",
               "Persisting: HAProxy cannot reach the leader's Patroni API (network, TLS): "
               "`pgha logs haproxy --since 10m`, and the leader's `patroni.liveness` row.",
               "`pgha up` renders and reloads HAProxy's configuration."),
        fixes=("pgha up",),
    ),
    Check(
        name="haproxy.replica_backend",
        component="HAProxy",
        target="the cluster (its scope)",
        checks="the servers UP in HAProxy's replica backend against Patroni's streaming replicas",
        warn="the UP set differs from the streaming replicas",
        critical="no replica UP while the cluster has replicas; or the leader is UP in it",
        means="The R/O port misses a healthy replica, serves one that is not streaming, has none at all, "
              "or may send readers to the primary.",
        steps=("Audit again: a node's check may be mid-transition.",
               "`pgha status` and the `replication.streaming` rows; `pgha logs haproxy --since 10m`.",
               "`pgha up` reloads HAProxy's configuration; `pgha reinit pg-N --yes` for a replica that "
               "does not stream."),
        fixes=("pgha up", "pgha reinit"),
    ),
    Check(
        name="haproxy.flapping",
        component="HAProxy",
        target="each backend server (`primary/pg-N`, `replicas/pg-N`)",
        checks="UP→DOWN transitions of the server's health check since the previous audit "
               "(HAProxy's `chkdown` against the audit baseline)",
        warn="≥ `audit.flaps_warn` transitions",
        thresholds=("audit.flaps_warn", "haproxy", "profile"),
        means="A node's check keeps failing and recovering: clients routed to it lose their sessions "
              "each time. Causes: its Patroni API answers slowly (CPU, memory), the network, or "
              "check timeouts too tight for the machine's load.",
        steps=("`pgha logs pg-N --since 1h` and `pgha logs haproxy --since 1h`.",
               "The node's `resource.memory` and `container.restarts` rows.",
               "On a loaded machine, loosen the checks (`haproxy.check_timeout_ms`, `haproxy.fall`) or use "
               "`profile: patroni-defaults`, then `pgha up`."),
        fixes=("pgha up",),
    ),
    # ---- PostgreSQL ----
    Check(
        name="postgres.connect",
        component="PostgreSQL",
        target="the R/W port",
        checks="that the audit connects to the primary through the R/W port",
        critical="no connection",
        thresholds=("ports.rw",),
        means="Clients cannot connect either: no leader, HAProxy down, every connection slot taken, "
              "or the stored password no longer matches.",
        steps=("The `patroni.leader`, `haproxy.rw_port` and `postgres.connections` rows narrow it down; "
               "the observed error says which.",
               "`pgha status`; `pgha psql -c 'select 1'` tries the same path."),
        fixes=("pgha up",),
    ),
    Check(
        name="postgres.connections",
        component="PostgreSQL",
        target="the primary",
        checks="client connections against `max_connections`",
        warn="≥ `audit.connections_warn_pct` of `max_connections`",
        critical="≥ `audit.connections_critical_pct`",
        thresholds=("audit.connections_warn_pct", "audit.connections_critical_pct"),
        means="New connections will soon be refused (`too many clients`).",
        steps=("Who holds them: `pgha psql -c \"select usename, application_name, state, count(*) from "
               "pg_stat_activity group by 1, 2, 3 order by 4 desc\"`.",
               "Put clients behind the pooler (on by default without `hosts`; clients on `pgha dsn --pool`).",
               "Or raise the limit: `pgha config set max_connections=200` (a rolling restart)."),
        fixes=("pgha config set", "pgha up"),
    ),
    Check(
        name="postgres.oldest_transaction",
        component="PostgreSQL",
        target="the primary",
        checks="age of the oldest open transaction of a client",
        warn="≥ `audit.transaction_warn_s`",
        critical="≥ `audit.transaction_critical_s`",
        thresholds=("audit.transaction_warn_s", "audit.transaction_critical_s"),
        means="A long transaction holds back vacuum (tables and indexes bloat) and its locks may block "
              "others; a switchover has to wait for it or cut it.",
        steps=("Find it: `pgha psql -c \"select pid, usename, application_name, now() - xact_start as age, "
               "state, query from pg_stat_activity where xact_start is not null order by xact_start "
               "limit 5\"`.",
               "Ask its owner; if it must go: `pgha psql -c 'select pg_terminate_backend(PID)'`."),
    ),
    Check(
        name="postgres.idle_in_transaction",
        component="PostgreSQL",
        target="the primary",
        checks="how long the oldest session has been `idle in transaction`",
        warn="≥ `audit.idle_in_transaction_warn_s`",
        critical="≥ `audit.idle_in_transaction_critical_s`",
        thresholds=("audit.idle_in_transaction_warn_s", "audit.idle_in_transaction_critical_s"),
        means="A client opened a transaction and went quiet: it holds its locks and holds back vacuum.",
        steps=("Find it: `pgha psql -c \"select pid, usename, application_name, now() - state_change as idle "
               "from pg_stat_activity where state like 'idle in transaction%' order by state_change\"`.",
               "`pgha psql -c 'select pg_terminate_backend(PID)'`; fix the client (a missing commit).",
               "To have PostgreSQL do it: `pgha config set idle_in_transaction_session_timeout=10min`."),
        fixes=("pgha config set",),
    ),
    Check(
        name="postgres.inactive_slots",
        component="PostgreSQL",
        target="the primary",
        checks="that no inactive replication slot exists (the row shown when there is none; each "
               "inactive slot gets a `postgres.inactive_slot` row)",
        means="Informational: no inactive slot retains WAL.",
    ),
    Check(
        name="postgres.inactive_slot",
        component="PostgreSQL",
        target="each inactive replication slot",
        checks="WAL retained on the primary by a slot no consumer is attached to",
        warn="≥ `audit.slot_retained_warn_bytes`",
        critical="≥ `audit.slot_retained_critical_bytes`",
        thresholds=("audit.slot_retained_warn_bytes", "audit.slot_retained_critical_bytes"),
        means="The primary keeps every WAL segment since the slot's position: `pg_wal` grows until the "
              "data volume is full (see `disk.data_volume`), and then the primary stops.",
        steps=("A slot named after a node (`pg_N`) belongs to a replica that is down: start it "
               "(`pgha up`), or remove the node for good (`pgha scale --nodes N`); Patroni drops the slot "
               "of a member that left.",
               f"`{FORWARD_SUB}` / `{REVERSE_SUB}`: a major upgrade in progress; finish it "
               "(`pgha upgrade --major --finish --yes`) or roll it back (`pgha upgrade --major --rollback`).",
               "Any other slot whose consumer is gone: `pgha psql -c \"select "
               "pg_drop_replication_slot('NAME')\"`."),
        fixes=("pgha up", "pgha scale", "pgha upgrade"),
    ),
    Check(
        name="postgres.xid_age",
        component="PostgreSQL",
        target="the primary",
        checks="the oldest database's transaction-ID age (`age(datfrozenxid)`; wraparound at about 2.1 billion)",
        warn="≥ `audit.xid_age_warn`",
        critical="≥ `audit.xid_age_critical`",
        thresholds=("audit.xid_age_warn", "audit.xid_age_critical"),
        means="Vacuum does not freeze old rows fast enough. Near wraparound PostgreSQL refuses new "
              "transactions to protect the data.",
        steps=("Long transactions and inactive slots hold vacuum back: look at `postgres.oldest_transaction`, "
               "`postgres.idle_in_transaction` and `postgres.inactive_slot` first.",
               "Find the database: `pgha psql -c \"select datname, age(datfrozenxid) from pg_database "
               "order by 2 desc\"`.",
               "Freeze it: `pgha psql -d DBNAME -c 'VACUUM (FREEZE, VERBOSE)'`."),
    ),
    Check(
        name="postgres.data_checksums",
        component="PostgreSQL",
        target="the primary",
        checks="`data_checksums` of the cluster",
        warn="off",
        means="Silent corruption of data pages goes unnoticed. Clusters pgha creates have checksums "
              "(initdb `--data-checksums`); this one was created otherwise.",
        steps=("Checksums can be turned on only offline (`pg_checksums --enable` on a stopped data "
               "directory, each node in turn); pgha has no verb for that, and a restored copy keeps "
               "the setting.",
               "The next major upgrade (`pgha upgrade --major`) copies the data logically into a new "
               "cluster that pgha initialises with checksums: after it, the row is ok."),
        fixes=("pgha upgrade",),
    ),
    # ---- disk ----
    Check(
        name="disk.data_volume",
        component="disk",
        target="each running Patroni node",
        checks="use of the node's data volume",
        warn="≥ `audit.disk_warn_pct` used",
        critical="≥ `audit.disk_critical_pct`",
        thresholds=("audit.disk_warn_pct", "audit.disk_critical_pct"),
        means="A full data volume stops PostgreSQL on that node (a primary that cannot write WAL shuts "
              "down).",
        steps=("What grows: WAL held by an inactive slot (`postgres.inactive_slot`) or by failed archiving "
               "(`backup.archiving`), table bloat, or the data itself.",
               "Size per database: `pgha psql -c \"select datname, pg_size_pretty(pg_database_size(datname)) "
               "from pg_database\"`.",
               "Free space on the Docker host's volume storage, or move the data to a larger one."),
    ),
    Check(
        name="disk.wal",
        component="disk",
        target="each running Patroni node",
        checks="the size of `pg_wal` on the node's data volume (`du`), against what checkpoints keep: "
               "`max_wal_size` + `wal_keep_size` as the spec sets them (PostgreSQL's 1 GB `max_wal_size` "
               "unless `postgres_parameters` changes it), and the volume's free space",
        warn="≥ `audit.wal_warn_ratio` × that size, or the volume has less free space than that size",
        critical="≥ `audit.wal_critical_ratio` × that size",
        thresholds=("audit.wal_warn_ratio", "audit.wal_critical_ratio", "postgres_parameters"),
        means="PostgreSQL keeps WAL it would normally recycle: an inactive replication slot holds it, "
              "archiving fails (every segment waits for `archive-push`), or checkpoints cannot finish. "
              "`pg_wal` grows until the data volume is full and PostgreSQL stops on that node.",
        steps=("Look at the same audit's `postgres.inactive_slot` and `backup.archiving` rows: they name "
               "the usual cause, and their runbooks fix it.",
               "On a replica, WAL waits for replay: its `replication.lag_bytes` row.",
               "The node's log names a checkpoint that does not finish: `pgha logs pg-N`.",
               "A volume with less free space than `max_wal_size`: free space on the Docker host, or set a "
               "smaller `max_wal_size` in `postgres_parameters`."),
        fixes=("pgha backup", "pgha config"),
    ),
    # ---- pooler ----
    Check(
        name="pooler.reachable",
        component="pooler",
        target="the pooler",
        checks="that PgBouncer's admin console answers on `ports.pool`",
        critical="it does not answer",
        thresholds=("pooler.enabled", "ports.pool"),
        only_when="the pooler runs (`pooler.enabled`; on by default without `hosts`)",
        means="Clients of the pooler cannot connect (the R/W and R/O ports still work).",
        steps=("`docker logs --since 30m <scope>-pooler`.",
               "`pgha up` recreates it."),
        fixes=("pgha up",),
    ),
    Check(
        name="pooler.paused",
        component="pooler",
        target="the pooler",
        checks="that PgBouncer is not left paused",
        critical="paused",
        only_when="the pooler runs (`pooler.enabled`; on by default without `hosts`)",
        means="A switchover pauses the pooler and resumes it; one killed half-way left it paused: "
              "its clients wait and never get an answer.",
        steps=(f"`pgha psql --pool -d {ADMIN_DB} -c RESUME` (the admin console; psql on this machine).",),
        fixes=("pgha psql",),
    ),
    Check(
        name="pooler.waiting",
        component="pooler",
        target="the pooler",
        checks="clients waiting for a server connection, and the oldest one's wait",
        warn=f"clients wait and the oldest has waited ≥ {WAIT_WARN_S:g} s",
        critical=f"≥ {WAIT_CRITICAL_S:g} s",
        thresholds=("pooler.default_pool_size",),
        only_when="the pooler runs (`pooler.enabled`; on by default without `hosts`)",
        means="The pool is too small for the load, or transactions hold their server connections too long.",
        steps=("Long transactions: the `postgres.oldest_transaction` and `postgres.idle_in_transaction` rows.",
               "Raise `pooler.default_pool_size` in the spec and run `pgha up` (mind `max_connections`)."),
        fixes=("pgha up",),
    ),
    Check(
        name="pooler.client_connections",
        component="pooler",
        target="the pooler",
        checks="client connections (active and waiting) against `pooler.max_client_conn`",
        warn="≥ `audit.connections_warn_pct` of `pooler.max_client_conn`",
        critical="≥ `audit.connections_critical_pct`",
        thresholds=("audit.connections_warn_pct", "audit.connections_critical_pct", "pooler.max_client_conn"),
        only_when="the pooler runs (`pooler.enabled`; on by default without `hosts`)",
        means="The pooler will soon refuse new clients.",
        steps=("Raise `pooler.max_client_conn` in the spec and run `pgha up`; or find the client that "
               "opens connections without closing them.",),
        fixes=("pgha up",),
    ),
    Check(
        name="pooler.server_connections",
        component="pooler",
        target="the pooler",
        checks="PgBouncer's server connections to PostgreSQL",
        only_when="the pooler runs (`pooler.enabled`; on by default without `hosts`)",
        means="Informational: how many server connections the pool holds "
              "(`pooler.default_pool_size` per database and user).",
    ),
    # ---- declared roles and databases ----
    Check(
        name="apps.drift",
        component="roles and databases",
        target="the declared roles and databases",
        checks="that every role and database of the spec's `roles:` and `databases:` exists on the primary as "
               "declared: login, connection limit, memberships, password, owner, extensions, schemas",
        warn="something differs from the spec (changed by hand, or missing), or the catalog could not be read",
        thresholds=("roles", "databases"),
        only_when="the spec declares `roles:` or `databases:`",
        means="Someone changed a declared role or database by hand (`ALTER ROLE`, `DROP EXTENSION`, a new "
              "password), or a restore brought back an older catalog. The row names each difference.",
        steps=("Read the differences in the row; if the change by hand was wanted, put it in the spec instead.",
               "Run `pgha up`: it restores what the spec declares and records it in the operations journal."),
        fixes=("pgha up",),
    ),
    # ---- fencing ----
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
    # ---- TLS ----
    Check(
        name="tls.cert_expiry",
        component="TLS",
        target="the cluster (its scope)",
        checks="the member, client or pooler certificate nearest to expiry (in the state directory)",
        warn="it expires within `tls.expiry_warn_days`",
        critical="it has expired, or the certificates cannot be read",
        thresholds=("tls.expiry_warn_days", "tls.renew_within_days", "tls.days"),
        only_when="`tls.enabled`",
        means="At expiry every TLS connection fails: etcd, Patroni's API, replication, clients. The "
              "`certs-renew/daily` deployment renews them `tls.renew_within_days` before expiry, earlier than "
              "this warning: a warning means that renewal did not run or failed.",
        steps=("`pgha certs renew` renews them now if they are due (`pgha certs rotate` renews them whatever "
               "their age): new member, client and pooler certificates from the cluster's CA, installed with reloads "
               "(no restart, no switchover).",
               "Then find out why the scheduled renewal did not: `pgha server status` (is the worker running?), "
               "and the `certs-renew` runs in the Prefect UI.",
               "Certificates that cannot be read: `pgha up` creates the missing ones."),
        fixes=("pgha certs renew", "pgha certs rotate", "pgha up"),
    ),
    Check(
        name="tls.ca_expiry",
        component="TLS",
        target="the cluster (its scope)",
        checks="the cluster's own CA (`ca.crt` in the state directory), which signs every member and client "
               "certificate and which clients trust (`sslrootcert`)",
        warn=f"it expires within {tls.CA_WARN_DAYS} days",
        critical=f"it expires within {tls.CA_CRITICAL_DAYS} days, or there is none",
        only_when="`tls.enabled`",
        means=f"The CA is made for {tls.CA_DAYS // 365} years by the first `pgha up`, and neither a rotation nor "
              "the renewal replaces it: when it expires no certificate it signed verifies. It is reported a year "
              "ahead because replacing it changes what every client must trust.",
        steps=("Plan a new cluster: `pgha restore --into NEW-SCOPE` creates "
               "a cluster with a new CA from the same data; point clients at it with its `pgha dsn`.",
               "Then take the old cluster down."),
        fixes=("pgha restore", "pgha down"),
    ),
    # ---- backups ----
    Check(
        name="backup.archiving",
        component="backup",
        target="the primary",
        checks="`pg_stat_archiver`: the last archive failure against the last success",
        critical="a failure newer than the last success (or failures and no success); or the archiver's "
                 "statistics cannot be read",
        only_when="`backup.enabled`",
        means="WAL piles up in `pg_wal` (see `disk.data_volume`) and point-in-time recovery stops at the "
              "last archived segment. A failure followed by a success is ok (\"since recovered\").",
        steps=("`pgha backup` runs `pgbackrest check` first and fails with the archiver's error.",
               "Is the repository reachable and writable (the repository volume, the S3 bucket and its "
               "credentials, the repository host)? `pgha logs pg-N` of the primary shows "
               "`archive-push` errors.",
               "Once fixed, the next archived segment clears the row."),
        fixes=("pgha backup",),
    ),
    Check(
        name="backup.repository",
        component="backup",
        target="the repository",
        checks="that `pgbackrest info` reads the repository",
        critical="it fails",
        only_when="`backup.enabled`",
        means="Neither the backup ages nor encryption can be checked; backups and restores will fail too.",
        steps=("`pgha backups` shows the same error; the observed column has pgBackRest's message.",
               "Check the repository (volume, S3 bucket and credentials, repository host) as for "
               "`backup.archiving`."),
        fixes=(),
    ),
    Check(
        name="backup.repository_size",
        component="backup",
        target="the repository",
        checks="the repository's size (`du` of the repository volume where it is mounted) and the use of "
               "its filesystem, against the newest full backup's stored size; with S3, the sum of the "
               "backup sets' stored sizes (report only)",
        warn="filesystem ≥ `audit.repo_warn_pct` used, or less free space than two full backups",
        critical="filesystem ≥ `audit.repo_critical_pct` used, or less free space than one full backup",
        thresholds=("audit.repo_warn_pct", "audit.repo_critical_pct", "backup.retention_full"),
        only_when="`backup.enabled`",
        means="The repository's filesystem (the Docker host's volume storage, or the repository host's) "
              "fills up: the next full backup, then WAL archiving, fail, and archiving failures make "
              "`pg_wal` grow on the primary.",
        steps=("How much each set holds: `pgha backups` (the repo column).",
               "Keep fewer full backups: lower `backup.retention_full` and run `pgha backup` (pgBackRest "
               "expires the older sets after a backup).",
               "Free space on the filesystem that holds the repository volume, or move the repository to "
               "a larger disk or to S3 (`backup.s3`)."),
        fixes=("pgha backup",),
    ),
    Check(
        name="backup.full_age",
        component="backup",
        target="the repository",
        checks="age of the newest good full backup against the schedule (`backup.full_every_h`)",
        warn=f"≥ {WARN_FACTOR:g} × `backup.full_every_h` (one scheduled run missed), or no full backup yet",
        critical=f"≥ {CRITICAL_FACTOR:g} × `backup.full_every_h`",
        thresholds=("backup.full_every_h",),
        only_when="`backup.enabled`",
        means="The scheduled full backup (deployment `weekly-full-backup`) did not run or failed: a "
              "restore replays more WAL, and the point-in-time window rests on older sets.",
        steps=("In the Prefect UI, the `backup` flow runs of the `weekly-full-backup` deployment and "
               "their logs; is the worker running (`pgha server status`)?",
               "Take one now: `pgha backup --type full`.",
               "Change `backup.full_every_h` together with the deployment's schedule."),
        fixes=("pgha backup", "pgha server start"),
    ),
    Check(
        name="backup.diff_age",
        component="backup",
        target="the repository",
        checks="age of the newest good diff or full backup (a full counts as a newer diff) against the "
               "schedule (`backup.diff_every_h`)",
        warn=f"≥ {WARN_FACTOR:g} × `backup.diff_every_h`, or no backup yet",
        critical=f"≥ {CRITICAL_FACTOR:g} × `backup.diff_every_h`",
        thresholds=("backup.diff_every_h",),
        only_when="`backup.enabled`",
        means="The scheduled diff backup (deployment `nightly-diff-backup`) did not run or failed.",
        steps=("The `nightly-diff-backup` runs in the Prefect UI; `pgha server status` for the worker.",
               "Take one now: `pgha backup --type diff`."),
        fixes=("pgha backup", "pgha server start"),
    ),
    Check(
        name="backup.encryption",
        component="backup",
        target="the repository",
        checks=f"the repository's cipher as `pgbackrest info` reports it (`{CIPHER_TYPE}` when encrypted)",
        warn="unencrypted while `backup.encrypt` is on",
        thresholds=("backup.encrypt",),
        only_when="`backup.enabled`",
        means="The repository was created before encryption; it cannot be switched in place, so its "
              "backups stay readable to whoever reads the repository.",
        steps=("Restore into a new scope, whose repository is created encrypted: "
               "`pgha restore --to TIME --into NEWSCOPE`; move the clients to it.",),
        fixes=("pgha restore",),
    ),
    # ---- the Prefect server ----
    Check(
        name="server.database",
        component="server",
        target="the Prefect server of this machine",
        checks="the size of the Prefect server's SQLite database with its `-wal` file "
               "(`$PREFECT_HOME/prefect.db` unless `PREFECT_SERVER_DATABASE_CONNECTION_URL` says otherwise), "
               "read on the machine the audit runs on, and its filesystem's free space; a database this "
               "machine cannot read (a server elsewhere, or one on PostgreSQL) is an ok row that says so",
        warn="≥ `audit.server_db_warn_mb` MiB, or its filesystem has less free space than the database",
        critical="≥ `audit.server_db_critical_mb` MiB",
        thresholds=("audit.server_db_warn_mb", "audit.server_db_critical_mb"),
        means="The server keeps more run history than its retention should allow, or its disk is nearly "
              "full. A server whose disk is full stops scheduling, and with it every audit, backup and "
              "alert.",
        steps=("`pgha server status` shows how many days of flow runs the server keeps; "
               "`PGHA_HISTORY_RETENTION_DAYS` sets it (restart the server to apply).",
               "SQLite reuses the space of deleted runs but does not give it back to the filesystem: "
               "after lowering the retention the file stops growing rather than shrinks.",
               "Free space on the filesystem of `$PREFECT_HOME`."),
        fixes=("pgha server stop", "pgha server start"),
    ),
)

BY_NAME: dict[str, Check] = {c.name: c for c in CHECKS}


def entry(check: str) -> Check | None:
    """The table's entry for a finding's check name (None: a check without an entry, a bug)."""
    return BY_NAME.get(check)
