"""The audit's checks of HAProxy (`haproxy.*`): stats, its ports, the primary and replica backends, flapping."""

from __future__ import annotations

from stack.audit_checks.check import Check

CHECKS: tuple[Check, ...] = (
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
)
