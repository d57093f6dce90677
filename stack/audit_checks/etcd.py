"""The audit's checks of etcd (`etcd.*`): its API, auth, the leader key, members, quorum, its leader, its database size."""

from __future__ import annotations

from stack import tls
from stack.audit_checks.check import Check
from stack.layout import ETCD_CLIENT_PORT, ETCD_QUOTA_BYTES

_QUOTA_GIB = ETCD_QUOTA_BYTES / 2**30
_ETCDCTL = (f"docker exec <scope>-etcd-N etcdctl --endpoints=https://localhost:{ETCD_CLIENT_PORT} "
            f"--cacert={tls.ROOT_CA} --cert={tls.ROOT_CLIENT_CERT} --key={tls.ROOT_CLIENT_KEY}")

CHECKS: tuple[Check, ...] = (
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
)
