"""Where things are inside the cluster's containers: ports, paths and role names.

Constants only, imported by the renderers (`stack.render`, `stack.backup`) and the adapters,
so no renderer needs another for a port or a path.
"""

from __future__ import annotations

# Ports inside the containers; host ports come from spec.ports.
PATRONI_API_PORT = 8008
PG_PORT = 5432
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
HAPROXY_RW_PORT = 5432
HAPROXY_RO_PORT = 5433
HAPROXY_STATS_PORT = 8404
PGBACKREST_TLS_PORT = 8432
# The repository host's `pgbackrest server` (backup.repo_host): its own port, since with host
# networking a Patroni node on the same host already listens on 8432.
PGBACKREST_REPO_PORT = 8433
PGBOUNCER_PORT = 6432
METRICS_PORT = 9188  # pgha's exporter inside its container (published on ports.metrics)
METRICS_AUDIT = "audit.json"  # in the exporter's config dir: the last audit's sample (`pgha audit` writes it)
HAPROXY_ADMIN_SOCKET = "/run/haproxy/admin.sock"  # HAProxy's runtime API (level admin), inside its container
PGBOUNCER_INI = "pgbouncer.ini"  # in the pooler's config dir, copied to RUN_DIR by the entrypoint
PGBOUNCER_USERLIST = "userlist.txt"  # SCRAM secrets (never passwords) of the roles that log in through it

ETCD_QUOTA_BYTES = 2147483648  # etcd backend quota (2 GiB); the health audit compares the DB size with it
# Patroni's etcd namespace (patroni.yml sets none, so Patroni's default): keys live under
# <namespace>/<scope>/ (leader, members/<name>, config, initialize, history, …).
PATRONI_NAMESPACE = "/service"

DATA_MOUNT = "/var/lib/postgresql/data"
PGDATA = f"{DATA_MOUNT}/pgdata"
ETCD_MOUNT = "/var/lib/etcd"
CONFIG_MOUNT = "/etc/pgha"  # the member's config dir, read-only (bind-mounted, or its pushed volume on hosts)
RUN_DIR = "/run/pgha"  # private copies of the mounted 0600 files, owned by the service user
PATRONI_YML = f"{RUN_DIR}/patroni.yml"
SOCKET_DIR = "/var/run/postgresql"

# pgBackRest: the repository volume and the postgres-owned copies of its 0600 files.
REPO_MOUNT = "/var/lib/pgbackrest"
PGBACKREST_RUN_DIR = f"{RUN_DIR}/pgbackrest"
NODE_CONF = f"{PGBACKREST_RUN_DIR}/node.conf"  # archive-push/-get and the TLS server
BACKUP_CONF = f"{PGBACKREST_RUN_DIR}/backup.conf"  # backup/expire/check/info on the runner (repository host)
REPO_START = "repo.sh"  # the repository host's start script, in its config dir
PGBACKREST_HOST_SUBDIR = "pgbackrest"  # in the member's config dir (/etc/pgha/pgbackrest/...)
TLS_SUBDIR = "tls"  # the cluster TLS files: <state>/<scope>/tls on the host, /etc/pgha/tls and /run/pgha/tls in a member

# The fencing watcher: the engine's socket (mounted read-only, reached only through an HAProxy
# inside the fencer that lets GET /_ping, /events and /containers/<id>/json through), the
# proxy's loopback address, and the agent's counters (read by the audit). With `hosts` the
# fencer shares its host's network namespace, whose loopback is the machine's: there the proxy
# listens on a unix socket in the fencer's private tmpfs instead (nothing else on the host
# reaches it, and no port can collide).
DOCKER_SOCKET = "/var/run/docker.sock"
FENCER_PROXY = "127.0.0.1:2375"
FENCER_PROXY_DIR = f"{RUN_DIR}/engine"
FENCER_PROXY_SOCKET = f"{FENCER_PROXY_DIR}/proxy.sock"
FENCER_STATS = f"{RUN_DIR}/fencer-stats.json"
# HAProxy's runtime API for the fencer: a second admin socket in a tmpfs-backed volume that only
# HAProxy and the fencer of the same engine mount (no port, no file on disk). When the engine
# confirms a member dead, the fencer marks it down in HAProxy at once and routes the new leader
# the moment it holds the lock, instead of waiting for `fall` failed health checks.
HAPROXY_FENCE_DIR = "/run/haproxy-fence"
HAPROXY_FENCE_SOCKET = f"{HAPROXY_FENCE_DIR}/api.sock"
# The volume's tmpfs: the directory is writable and searchable but not listable by the two
# containers' users (HAProxy's user creates the socket, the agent's user connects), sticky.
HAPROXY_FENCE_TMPFS = "size=64k,mode=1733,nosuid,nodev,noexec"
# Every cluster container's Docker health check runs this often (30 s grace after a start). Each
# check is an exec through dockerd, containerd and runc: about 0.11 CPU-seconds whatever it runs,
# so at 5 s the checks of an idle 1 etcd / 2 node cluster cost about as much as its PostgreSQL,
# Patroni, etcd and HAProxy together (docs/benchmarks.md, "An idle cluster's CPU"). pgha's verbs
# ask Patroni, etcd and HAProxy directly and never wait on this status; `status` and the audit show it.
HEALTH_INTERVAL_S = 15

# Users the cluster creates; the superuser name is the seed's (`postgres`).
SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
REWIND_USER = "rewind_user"
RESTAPI_USER = "patroni"
