"""The audit's checks of containers and their resources (`container.*`, `resource.*`): the engines' lists, running, restarts, log caps, memory, OOM kills."""

from __future__ import annotations

from stack.audit import OOM_WINDOW_S
from stack.audit_checks.check import Check

CHECKS: tuple[Check, ...] = (
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
        warn="a fencing watcher is missing or stopped; or a container's health check is still `starting` "
             "after a failed check (before its first check, within the health interval of a start, it is ok)",
        critical="a container is missing or not running; or it runs and its health check reports `unhealthy`",
        means="One component is down. The other rows say what it costs: `etcd.*` for an etcd member, "
              "`patroni.*` and `replication.*` for a node, `haproxy.*` for HAProxy. Without the fencing "
              "watcher, failover still works but a dead leader is replaced only after Patroni's `ttl`.",
        steps=("`pgha status` shows which members are down.",
               "`pgha logs MEMBER --since 30m` says why it stopped (etcd-N, pg-N, haproxy; for the pooler, "
               "the fencer or the repository host: `docker logs <scope>-MEMBER`).",
               "`pgha up` starts a stopped container and recreates a missing one; data volumes are kept.",
               "Unhealthy: `docker inspect <scope>-MEMBER` shows the health check's last outputs under "
               "`State.Health`. `starting` after a failed check within 30 s of a start can be a slow start: "
               "audit again in a minute."),
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
)
