"""ClusterSpec: the single source of truth for one pgha cluster.

Read from YAML (`pgha up --spec FILE`), validated with readable errors, passed as the flow
parameter, and used by the renderers in `stack.render` for every config file. Nothing else
holds a port, a node count or a name.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from stack import appdb, typed
from stack import hosts as hostplan
from stack.errors import SpecError
from stack.resources import check_memory, owned_reason
from stack.rolling import PATRONI_OWNED

SCOPE_RE = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")

# Which Debian suite ships which PostgreSQL major (see shared FIELD-NOTES): the image's base.
SUITE_FOR_MAJOR: dict[int, str] = {17: "trixie", 15: "bookworm"}


class Role(StrEnum):
    ETCD = "etcd"
    PATRONI = "patroni"
    HAPROXY = "haproxy"
    POOLER = "pooler"
    FENCER = "fencer"
    REPO = "repo"  # the pgBackRest repository host (backup.repo_host)
    METRICS = "metrics"  # pgha's Prometheus exporter (metrics.enabled)


class Insecure(StrEnum):
    """Combinations pgha refuses unless the spec's `insecure:` lists them (each exposes something)."""

    # tls.enabled false with hosts: etcd, Patroni's REST API and PostgreSQL in plain text between machines
    PLAINTEXT_BETWEEN_HOSTS = "plaintext-between-hosts"
    # a tcp:// engine without a tls block: the Docker API (root on that host) unauthenticated and in plain text
    PLAINTEXT_ENGINE_API = "plaintext-engine-api"


class Profile(StrEnum):
    """Timing profile for Patroni and HAProxy checks."""

    FAST = "fast"  # shortest gaps Patroni safely allows, synchronous replication
    PATRONI_DEFAULTS = "patroni-defaults"  # Patroni's and a typical HAProxy's own defaults


class _Strict(typed.Strict):
    """Unknown keys refused, frozen, no control character in any string (`stack.typed`)."""


class Ports(_Strict):
    """Host ports, published on 127.0.0.1 only."""

    rw: int = Field(5432, ge=1024, le=65535, description="read/write port (primary)")
    ro: int = Field(5433, ge=1024, le=65535, description="read-only port (replicas)")
    stats: int = Field(8404, ge=1024, le=65535, description="HAProxy stats and /metrics")
    pool: int = Field(6432, ge=1024, le=65535, description="PgBouncer (R/W through the pooler), when the pooler runs (the default)")
    # Not 9187 (postgres_exporter's) nor 9127 (pgbouncer_exporter's): either may run beside pgha.
    metrics: int = Field(9188, ge=1024, le=65535, description="pgha's Prometheus metrics (GET /metrics), "
                                                              "when metrics.enabled")

    @model_validator(mode="after")
    def _distinct(self) -> Ports:
        seen: dict[int, str] = {}
        for name in ("rw", "ro", "stats"):  # ports.pool: checked by ClusterSpec, only when the pooler runs
            port = getattr(self, name)
            if port in seen:
                raise ValueError(f"ports.{name} and ports.{seen[port]} are both {port}; they must differ")
            seen[port] = name
        return self


class PatroniTiming(_Strict):
    """Overrides of the profile's Patroni settings (unset keys come from the profile)."""

    ttl: int | None = Field(None, ge=20, description="leader lock TTL, seconds")
    loop_wait: int | None = Field(None, ge=1, description="seconds between HA loops")
    retry_timeout: int | None = Field(None, ge=3, description="DCS and PostgreSQL retry timeout, seconds")
    synchronous_mode: bool | None = Field(None, description="Patroni synchronous_mode: a commit waits for one "
                                                       "synchronous standby, so a failover loses no committed write")
    maximum_lag_on_failover: int | None = Field(None, ge=0, description="a replica lagging more than this many bytes "
                                                                         "is not promoted by a failover")


class HaproxyChecks(_Strict):
    """Overrides of the profile's HAProxy health-check settings."""

    inter_ms: int | None = Field(None, ge=100, le=60000, description="milliseconds between two health checks of a "
                                                                    "node (inter, fastinter and downinter)")
    check_timeout_ms: int | None = Field(None, ge=100, le=60000, description="how long one health check may take, "
                                                                            "milliseconds (timeout check)")
    retries: int | None = Field(None, ge=0, le=10, description="connection retries to a failed server")
    fall: int | None = Field(None, ge=1, le=10, description="failed checks in a row before a node is marked down "
                                                           "(its sessions are then cut)")
    rise: int | None = Field(None, ge=1, le=10, description="passed checks in a row before a node is marked up")


class AuditThresholds(_Strict):
    """Health-audit thresholds: a value at or above `*_warn` is a warning, at or above `*_critical` critical."""

    etcd_db_warn_pct: float = Field(70, gt=0, le=100, description="etcd DB size, % of its 2 GiB quota")
    etcd_db_critical_pct: float = Field(90, gt=0, le=100, description="etcd DB size, % of its quota: critical")
    lag_warn_bytes: int = Field(1048576, ge=0, description="replica replay lag, bytes")
    lag_critical_bytes: int = Field(67108864, ge=0, description="replica replay lag, bytes: critical")
    lag_warn_s: float = Field(10, ge=0, description="replica replay lag, seconds")
    lag_critical_s: float = Field(60, ge=0, description="replica replay lag, seconds: critical")
    connections_warn_pct: float = Field(80, gt=0, le=100, description="connections, % of max_connections")
    connections_critical_pct: float = Field(95, gt=0, le=100, description="connections, % of max_connections: "
                                                                           "critical")
    transaction_warn_s: float = Field(300, gt=0, description="oldest open transaction, seconds")
    transaction_critical_s: float = Field(3600, gt=0, description="oldest open transaction, seconds: critical")
    idle_in_transaction_warn_s: float = Field(60, gt=0, description="oldest idle-in-transaction session, seconds")
    idle_in_transaction_critical_s: float = Field(600, gt=0, description="oldest idle-in-transaction session, "
                                                                        "seconds: critical")
    slot_retained_warn_bytes: int = Field(1073741824, ge=0, description="WAL kept by an inactive replication slot, bytes")
    slot_retained_critical_bytes: int = Field(8589934592, ge=0, description="WAL kept by an inactive replication "
                                                                           "slot, bytes: critical")
    xid_age_warn: int = Field(500_000_000, gt=0, description="oldest database's transaction-ID age (wraparound at ~2.1e9)")
    xid_age_critical: int = Field(1_500_000_000, gt=0, description="oldest database's transaction-ID age: critical")
    disk_warn_pct: float = Field(80, gt=0, le=100, description="data volume use, %")
    disk_critical_pct: float = Field(90, gt=0, le=100, description="data volume use, %: critical")
    restarts_warn: int = Field(1, ge=1, description="container restarts since the last audit")
    restarts_critical: int = Field(5, ge=1, description="container restarts since the last audit: critical")
    flaps_warn: int = Field(4, ge=1, description="HAProxy backend UP->DOWN transitions since the last audit "
                                                   "(a warning only)")
    memory_warn_pct: float = Field(85, gt=0, le=100, description="container memory use, % of its limit")
    memory_critical_pct: float = Field(95, gt=0, le=100, description="container memory use, % of its limit: critical")
    wal_warn_ratio: float = Field(2, gt=0, description="pg_wal size as a multiple of max_wal_size + wal_keep_size "
                                                       "(what checkpoints keep): WAL held back by a slot, failing "
                                                       "archiving or stalled checkpoints")
    wal_critical_ratio: float = Field(4, gt=0, description="pg_wal size as a multiple of max_wal_size + "
                                                           "wal_keep_size: critical")
    repo_warn_pct: float = Field(80, gt=0, le=100, description="use of the filesystem holding the backup repository "
                                                               "volume, % (a warning too when it has less free space "
                                                               "than two full backups)")
    repo_critical_pct: float = Field(90, gt=0, le=100, description="use of the repository volume's filesystem, %: "
                                                                   "critical (critical too below one full backup free)")
    server_db_warn_mb: float = Field(2048, gt=0, description="the Prefect server's SQLite database with its WAL file, "
                                                             "MiB (with 30 days of history a cluster on the shipped "
                                                             "schedules stays well below)")
    server_db_critical_mb: float = Field(8192, gt=0, description="the Prefect server's database, MiB: critical")

    @model_validator(mode="after")
    def _ordered(self) -> AuditThresholds:
        for name in type(self).model_fields:
            if name.endswith("_warn") or "_warn_" in name:
                crit = name.replace("_warn", "_critical")
                if crit in type(self).model_fields and getattr(self, crit) < getattr(self, name):
                    raise ValueError(f"{crit} ({getattr(self, crit)}) is below {name} ({getattr(self, name)})")
        return self


class CompressType(StrEnum):
    ZST = "zst"
    LZ4 = "lz4"
    GZ = "gz"
    NONE = "none"


class S3Repo(_Strict):
    """An S3-compatible pgBackRest repository instead of the Docker volume.

    The access key and secret are never in the spec: put them in the cluster's state directory
    as `s3-credentials.json` ({"key": ..., "secret": ...}, mode 0600); pgha writes them into the
    nodes' 0600 pgBackRest configs only (never env, argv or labels).
    """

    bucket: str = Field(..., min_length=3, description="the bucket that holds the repository")
    endpoint: str = Field(..., min_length=3, description="e.g. s3.eu-west-1.amazonaws.com or minio.local:9000")
    region: str = Field("us-east-1", description="the bucket's region (any value for most self-hosted S3 servers)")
    path: str = Field("/pgha", description="repository path inside the bucket")
    uri_style: str = Field("host", pattern="^(host|path)$", description="host: bucket.endpoint (AWS); path: "
                                                                       "endpoint/bucket (most self-hosted servers)")
    verify_tls: bool = Field(True, description="verify the endpoint's TLS certificate (see ca_file for a private CA)")
    # --- b-backup: TLS to a private S3 endpoint ---
    port: int = Field(443, ge=1, le=65535, description="the endpoint's HTTPS port")
    ca_file: str | None = Field(None, description="host path of a PEM CA that signed the endpoint's certificate "
                                                 "(copied into the nodes as repo1-storage-ca-file)")
    network: str | None = Field(None, description="an existing Docker network through which the endpoint is "
                                                 "reached (a private S3 server in a container); nodes and restore "
                                                 "boxes join it. Absent: the default route")

    _bucket = field_validator("bucket")(typed.s3_bucket)
    _endpoint = field_validator("endpoint")(typed.endpoint)
    _region = field_validator("region")(typed.s3_region)
    _path = field_validator("path")(typed.safe_path)
    _ca_file = field_validator("ca_file")(typed.host_path)
    _network = field_validator("network")(typed.docker_name)


class BackupSpec(_Strict):
    """pgBackRest backups, WAL archiving, logical dumps and restore verification."""

    enabled: bool = Field(True, description="archive WAL and create the pgBackRest stanza on `up`")
    retention_full: int = Field(2, ge=1, le=100, description="full backups kept (with their diffs/incrs and WAL)")
    retention_diff: int = Field(7, ge=1, le=1000, description="differential backups kept")
    dump_retention: int = Field(3, ge=1, le=100, description="logical dump sets (pgha dump) kept")
    compress_type: CompressType = Field(CompressType.ZST, description="compression of backups and archived WAL")
    compress_level: int = Field(3, ge=0, le=19, description="compression level (zst 1-19, gz 0-9, lz4 0-12)")
    process_max: int = Field(2, ge=1, le=32, description="parallel processes for backup and restore")
    allow_primary: bool = Field(False, description="back up from the primary when no replica is healthy")
    block_incremental: bool = Field(
        True, description="bundle small files and store only the changed blocks of a file in diff/incr backups "
                          "(pgBackRest repo-bundle + repo-block); a full backup taken with it on starts the block "
                          "maps that later backups build on. Images with pgBackRest older than 2.46 (bookworm: "
                          "PostgreSQL 15) back up without it")
    verify_after_backup: bool = Field(True, description="restore each backup into a scratch container and check it")
    verify_heapallindexed: bool = Field(
        False, description="pg_amcheck --heapallindexed in the verification: also prove every heap tuple has its "
                           "index entries (about 3x slower); the default checks every heap page and B-tree structure")
    s3: S3Repo | None = Field(None, description="an S3-compatible repository; absent: a Docker volume on the engine "
                                                "(or the repository host, see repo_host)")
    # --- b-backup: repository encryption, backup-age thresholds ---
    encrypt: bool = Field(True, description="encrypt the repository (pgBackRest aes-256-cbc, a generated passphrase "
                                            "kept 0600 in the state directory) when it is created; an existing "
                                            "unencrypted repository stays as it is (the audit says so)")
    full_every_h: float = Field(168, gt=0, description="how often a full backup is scheduled (deployments: weekly); "
                                                       "the audit warns at 1.5x this age, critical at 2x")
    diff_every_h: float = Field(24, gt=0, description="how often a diff backup is scheduled (deployments: daily)")
    # --- r-repo: a pgBackRest repository host ---
    repo_host: str | None = Field(None, description="with hosts: the host whose `<scope>-repo` container holds the "
                                                    "repository and runs `pgbackrest server` (TLS); nodes archive "
                                                    "to it and backups run in it")


class PoolMode(StrEnum):
    """PgBouncer's pool_mode: when a server connection goes back to the pool."""

    TRANSACTION = "transaction"  # after each transaction: many clients share few server connections
    SESSION = "session"  # when the client disconnects (session state such as SET or temp tables kept)


class PoolerSpec(_Strict):
    """PgBouncer in front of the R/W path (`ports.pool`), next to HAProxy, connecting through it.

    On by default (`enabled` left out): one beside HAProxy on the local engine, one beside each
    host's HAProxy with `hosts`; `enabled: false` turns it off, `enabled: true` asks for it.
    `ClusterSpec.runs_pooler` is the resolved answer. Switchovers pause it, so its
    clients see a pause instead of an error. A cluster brought up before this default has
    `enabled: false` in its stored spec and keeps running without one until a spec says otherwise.
    """

    enabled: bool | None = Field(None, description="run PgBouncer beside HAProxy (on every host with hosts); "
                                                   "left out: on")
    pool_mode: PoolMode = Field(PoolMode.TRANSACTION, description="when a server connection goes back to the pool: "
                                                                  "after each transaction, or when the client "
                                                                  "disconnects (session state kept)")
    max_client_conn: int = Field(1000, ge=10, le=100000, description="client connections PgBouncer accepts")
    default_pool_size: int = Field(20, ge=1, le=1000, description="server connections per database and user")
    pause_timeout_s: float = Field(
        10, gt=0, le=300, description="longest wait for in-flight transactions when a switchover pauses the pooler; "
                                      "past it the switchover is refused and the pooler resumed")


class MetricsSpec(_Strict):
    """pgha's Prometheus exporter: a container that asks every Patroni node's REST API each
    `interval_s` and serves the result on 127.0.0.1:`ports.metrics` (docs: how-to/metrics).

    Off by default: it publishes one more host port, which a spec written before it must not
    find taken by another cluster on the same host.
    """

    enabled: bool = Field(False, description="run the exporter (one container, on the local engine)")
    interval_s: float = Field(5, ge=1, le=300, description="seconds between two snapshots of the cluster; a "
                                                           "scrape serves the latest (pgha_snapshot_age_seconds)")


# ---- container budgets (hardening) ----


class RoleResources(_Strict):
    """One role's container limits: CPUs (NanoCpus) and memory (hard limit, no swap beyond it)."""

    cpus: float = Field(..., gt=0, le=256, description="CPUs (fractions allowed: 0.5 = half a core)")
    memory_mib: int = Field(..., ge=64, le=4194304, description="memory limit, MiB")


class ResourcesSpec(_Strict):
    """Per-role container limits (CPU and memory).

    The Patroni node's memory limit also sizes PostgreSQL's memory parameters (shared_buffers,
    effective_cache_size, work_mem, maintenance_work_mem; `stack.resources.derive_memory_parameters`)
    unless `postgres_parameters` sets them.
    """

    patroni: RoleResources = Field(default_factory=lambda: RoleResources(cpus=1, memory_mib=2048),
                                   description="each Patroni/PostgreSQL node (its memory also sizes PostgreSQL's "
                                               "memory parameters)")
    etcd: RoleResources = Field(default_factory=lambda: RoleResources(cpus=0.5, memory_mib=512),
                                description="each etcd member")
    haproxy: RoleResources = Field(default_factory=lambda: RoleResources(cpus=0.2, memory_mib=256),
                                   description="HAProxy (one per host with hosts)")
    # PgBouncer is single-threaded and on every pooled transaction's path: half a core, and
    # 256 MiB for 1000 clients' buffers with room to spare.
    pooler: RoleResources = Field(default_factory=lambda: RoleResources(cpus=0.5, memory_mib=256),
                                  description="PgBouncer, when the pooler runs")
    # The fencer idles on an event stream (Python ~30 MiB + a tiny HAProxy); a reaction needs
    # milliseconds of CPU, which 0.2 CPU's CFS quota grants within one 100 ms period.
    fencer: RoleResources = Field(default_factory=lambda: RoleResources(cpus=0.2, memory_mib=128),
                                  description="each fencing watcher, when fencing is on")
    # The repository host: pgBackRest's server and the backups it runs (compression, process_max
    # workers of ~20 MiB each); a backup is bounded by the network and the replica, not this box.
    repo: RoleResources = Field(default_factory=lambda: RoleResources(cpus=1, memory_mib=512),
                                description="the pgBackRest repository host, when backup.repo_host is set")
    # The exporter: Python (~25 MiB) asking a few REST endpoints every few seconds.
    metrics: RoleResources = Field(default_factory=lambda: RoleResources(cpus=0.2, memory_mib=128),
                                   description="pgha's Prometheus exporter, when metrics.enabled")
    shm_mib: int = Field(256, ge=64, le=65536, description="size of a Patroni node's shared-memory tmpfs (parallel query, DSM)")

    @model_validator(mode="after")
    def _shm(self) -> ResourcesSpec:
        if self.shm_mib > self.patroni.memory_mib // 2:
            raise ValueError(f"shm_mib ({self.shm_mib}) is more than half of resources.patroni.memory_mib "
                             f"({self.patroni.memory_mib}); /dev/shm counts against the node's memory")
        return self

    def of(self, role: str) -> RoleResources:
        return getattr(self, role)  # type: ignore[no-any-return]
# ---- logs: every container's log capped (Docker's json-file driver, rotated) ----
LOG_SIZE_RE = re.compile(r"^([1-9][0-9]{0,5})([kmg])$")
LOG_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}  # Docker's units (go-units RAMInBytes): binary
# One log file holds at least this: a failover or an etcd outage writes bursts of hundreds of
# lines (a Patroni traceback alone is ~3 KB), and a file smaller than the burst would rotate the
# cause away before anyone reads it.
LOG_FILE_MIN = 1024**2


class LogsSpec(_Strict):
    """The log of every container pgha creates: Docker's json-file driver, rotated at `max_size`,
    at most `max_files` files kept, so one container never holds more than their product."""

    max_size: str = Field("20m", description="size at which a container's log file is rotated: a whole number "
                                             "and k, m or g (binary units, as Docker reads them); at least 1m")
    max_files: int = Field(5, ge=1, le=100, description="log files kept per container, the current one "
                                                        "included; the oldest is deleted at each rotation")

    @field_validator("max_size", mode="before")
    @classmethod
    def _size(cls, v: object) -> object:
        text = str(v).strip().lower().removesuffix("b") if isinstance(v, str | int) else v
        if not isinstance(text, str) or not (m := LOG_SIZE_RE.match(text)):
            raise ValueError(f"'{v}' is not a size: write a whole number and k, m or g (e.g. 20m)")
        if int(m.group(1)) * LOG_UNITS[m.group(2)] < LOG_FILE_MIN:
            raise ValueError(f"{v} is below the 1m floor: one log file must hold a burst of Patroni lines "
                             "(a failover, a traceback) or the rotation drops the cause")
        return text

    @property
    def file_bytes(self) -> int:
        m = LOG_SIZE_RE.match(self.max_size)
        assert m is not None  # validated
        return int(m.group(1)) * LOG_UNITS[m.group(2)]

    @property
    def cap_bytes(self) -> int:
        """The most one container's log holds on disk (every file full)."""
        return self.file_bytes * self.max_files

    def driver_options(self) -> dict[str, str]:
        """The json-file driver's options, as `docker run --log-opt` takes them."""
        return {"max-size": self.max_size, "max-file": str(self.max_files)}
# ---- end logs ----


# ---- tls (hardening issue: encryption and authentication) ----
class TlsSpec(_Strict):
    """TLS from the cluster's own CA for etcd (client and peer, client certificates required), Patroni's
    REST API and PostgreSQL (hostssl only)."""

    enabled: bool = Field(True, description="TLS everywhere (default). The off switch exists only so "
                                            "benchmarks/tls.py can compare against plain TCP; never turn it off "
                                            "in production")
    days: int = Field(365, ge=1, le=3650, description="validity of the member and client certificates, days")
    expiry_warn_days: int = Field(30, ge=1, le=365, description="the audit warns this many days before a member or "
                                                                "client certificate expires")
    renew_within_days: int = Field(45, ge=2, le=3650, description="the scheduled `certs-renew/daily` deployment (and "
                                                                  "`pgha certs renew`) renews the member and client "
                                                                  "certificates once fewer days than this remain; more "
                                                                  "than `expiry_warn_days`, so the audit never warns "
                                                                  "while renewal works")

    @model_validator(mode="after")
    def _renew_before_the_warning(self) -> TlsSpec:
        if self.renew_within_days <= self.expiry_warn_days:
            raise ValueError(f"renew_within_days ({self.renew_within_days}) must be more than expiry_warn_days "
                             f"({self.expiry_warn_days}): the audit would warn about certificates before the "
                             "scheduled renewal renews them")
        return self
# ---- end tls ----


class EffectiveTiming(BaseModel):
    """The resolved timing: profile defaults with the spec's overrides applied."""

    ttl: int
    loop_wait: int
    retry_timeout: int
    synchronous_mode: bool
    maximum_lag_on_failover: int
    inter_ms: int
    check_timeout_ms: int
    retries: int
    fall: int
    rise: int


PROFILES: dict[Profile, EffectiveTiming] = {
    # loop_wait + 2*retry_timeout = 12 <= ttl 20 (Patroni's rule); ttl 20 is Patroni's floor.
    # check_timeout 1000 ms: a check is a TLS handshake with Patroni's REST API; at 500 ms two slow
    # answers in a row on a busy machine marked a healthy primary down (and cut its sessions). A dead
    # node refuses at once, so the timeout only matters for a silent one, where Patroni's ttl rules.
    Profile.FAST: EffectiveTiming(
        ttl=20, loop_wait=2, retry_timeout=5, synchronous_mode=True,
        maximum_lag_on_failover=1048576, inter_ms=500, check_timeout_ms=1000, retries=0, fall=2, rise=1,
    ),
    Profile.PATRONI_DEFAULTS: EffectiveTiming(
        ttl=30, loop_wait=10, retry_timeout=10, synchronous_mode=False,
        maximum_lag_on_failover=1048576, inter_ms=1000, check_timeout_ms=2000, retries=3, fall=2, rise=2,
    ),
}


class RestartPolicy(StrEnum):
    """How a rolling restart or upgrade treats the primary once every replica is done."""

    SWITCHOVER = "switchover"  # hand the leadership to an upgraded replica, then treat the old leader as one
    RESTART = "restart"  # restart the primary in place (a write gap of one PostgreSQL restart)


class UpgradePolicy(_Strict):
    """Thresholds and policy of rolling changes (`pgha upgrade`, `pgha config set`, `pgha scale`)."""

    max_lag_bytes: int = Field(1048576, ge=0, description="refuse to start when a replica lags more than this")
    max_transaction_age_s: int = Field(300, ge=1, description="refuse to start while a transaction is older than this")
    caught_up_lag_bytes: int = Field(65536, ge=0, description="a restarted replica counts as caught up at this lag")
    node_timeout_s: int = Field(180, ge=10, le=3600, description="time one node may take to come back; else roll back")
    primary: RestartPolicy = Field(RestartPolicy.SWITCHOVER,
                                   description="what to do with the primary once every replica is done: switchover "
                                               "(hand over to a done replica, then treat the old leader as one) or "
                                               "restart (in place: a write gap of one PostgreSQL restart)")
    node_image: str | None = Field(None, description="image the Patroni nodes run (set by `pgha upgrade`)")

    _image = field_validator("node_image")(typed.image_ref)


class MajorUpgradePolicy(_Strict):
    """Blue/green major upgrades (`pgha upgrade --major`)."""

    green_port_offset: int = Field(10, ge=1, le=10000, description="green's own ports = blue's + this")
    cutover_lag_bytes: int = Field(1048576, ge=0, description="start the cutover once green lags less than this")
    catchup_timeout_s: int = Field(900, ge=10, le=86400, description="time green may take to copy and catch up")
    cutover_timeout_s: int = Field(30, ge=2, le=600, description="longest write gap before returning to blue")


class StateLimits(_Strict):
    """What the cluster's state directory keeps of its history (`stack.housekeeping`): bounded by the
    code that writes it, so the directory does not grow with the cluster's age."""

    journal_kib: int = Field(1024, ge=64, le=1_048_576, description="size of the operations journal "
                                                                     "(operations.jsonl) at which it is cut to its "
                                                                     "newest half, KiB; `pgha history` names the "
                                                                     "cause of leader changes it still covers")
    drill_charts: int = Field(50, ge=1, le=10_000, description="drill charts (drills/*.png) kept, the newest; an "
                                                               "older one is deleted when a drill writes a new one")


# ---- delayed replicas: a node that replays WAL late, to undo a human error (docs/howto/delayed-replica.md) ----
DELAY_RE = re.compile(r"^([1-9][0-9]{0,6})\s*(s|m|h|d)?$")
DELAY_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Past a week the delayed node's pg_wal holds a week of the cluster's WAL, and the "minutes to undo
# a mistake" promise is gone: such a spec is a typo (`7d` for `7h`), refused.
DELAY_MAX_S = 7 * 86400


def delay_seconds(text: str) -> int:
    """`30s`, `10m`, `1h`, `2d` or a bare number of seconds as seconds; ValueError with one line."""
    m = DELAY_RE.match(text.strip().lower())
    if not m:
        raise ValueError(f"'{text}' is not a delay: write a whole number and s, m, h or d (e.g. 1h, 30m, 90s)")
    return int(m.group(1)) * DELAY_UNITS[m.group(2) or "s"]


class DelayedNode(_Strict):
    """One node that applies WAL `delay` after the primary committed it: never a failover or switchover
    candidate, never in R/O routing, never the synchronous standby."""

    name: str = Field(..., description="the node (pg-N, one of the cluster's nodes)")
    delay: str = Field(..., description="how late it replays: a whole number and s, m, h or d (e.g. 1h); "
                                        "1s to 7d")

    @field_validator("delay", mode="before")
    @classmethod
    def _delay(cls, v: object) -> str:
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise ValueError(f"'{v}' is not a delay: write a whole number and s, m, h or d (e.g. 1h)")
        text = str(v).strip().lower()
        if text.lstrip("-").rstrip("smhd ").isdigit() and (text.startswith("-") or int(text.rstrip("smhd ")) == 0):
            raise ValueError(f"delay {v} is not positive: a delayed node replays at least 1s late")
        secs = delay_seconds(text)
        if secs > DELAY_MAX_S:
            raise ValueError(f"delay {v} is more than 7d: the node's pg_wal would hold that much WAL and a "
                             "mistake would stay unrecoverable for that long; use at most 7d")
        return text.replace(" ", "")

    @property
    def seconds(self) -> int:
        return delay_seconds(self.delay)


# ---- a second site: a standby cluster following a primary site (docs/howto/standby-cluster.md) ----
class StandbyOf(_Strict):
    """The primary site a standby cluster follows (Patroni `standby_cluster`).

    The primary site is another pgha cluster brought up from this machine. On one Docker engine
    the standby's Patroni nodes join the primary site's network and stream from its R/W endpoint
    (its HAProxy, which always routes to the primary site's current primary); over hosts (both
    sites with `hosts:`) they stream from the primary site's HAProxy R/W port at its hosts'
    addresses. Through a replication slot pgha keeps on the primary site, with TLS verified
    against the primary site's CA.
    """

    scope: str = Field(..., description="the primary site's cluster (its scope, brought up with `pgha up` "
                                        "from this machine, on the same engine)")
    slot: bool = Field(True, description="a permanent replication slot on the primary site for this standby "
                                         "(the primary keeps the WAL the standby has not received; the audit's "
                                         "slot rows watch it)")
    hosts: list[str] | None = Field(None, description="with hosts: the primary site's host addresses whose HAProxy "
                                                      "R/W port the standby leader streams from (a libpq host list); "
                                                      "pgha fills them from the primary's stored spec")
    port: int | None = Field(None, ge=1, le=65535, description="with hosts: the primary site's HAProxy R/W port on "
                                                              "its hosts (pgha fills it from the primary's stored spec)")

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: str) -> str:
        if not SCOPE_RE.match(v):
            raise ValueError(f"standby_of.scope '{v}' is not a valid scope")
        return v


class ClusterSpec(_Strict):
    """One pgha cluster. Defaults describe the seed stack (scope hy-home-db, 5432/5433)."""

    scope: str = Field("hy-home-db", description="cluster name: Patroni scope, Docker name prefix and label")
    nodes: int = Field(3, ge=1, le=9, description="Patroni/PostgreSQL nodes")
    etcd_members: int = Field(3, ge=1, le=7, description="etcd members (odd)")
    ports: Ports = Field(default_factory=Ports, description="host ports of the cluster's endpoints")  # type: ignore[arg-type]
    postgres_version: int = Field(17, description="PostgreSQL major version")
    profile: Profile = Field(Profile.FAST, description="timing of Patroni and HAProxy checks: fast (short gaps, "
                                                       "synchronous replication) or patroni-defaults; patroni and "
                                                       "haproxy override single values")
    patroni: PatroniTiming = Field(default_factory=PatroniTiming,  # type: ignore[arg-type]
                                   description="overrides of the profile's Patroni timing")
    haproxy: HaproxyChecks = Field(default_factory=HaproxyChecks,  # type: ignore[arg-type]
                                   description="overrides of the profile's HAProxy health checks")
    backup: BackupSpec = Field(default_factory=BackupSpec,  # type: ignore[arg-type]
                               description="pgBackRest backups, WAL archiving, dumps and restore verification")
    postgres_parameters: dict[str, str] = Field(
        default_factory=dict, description="extra PostgreSQL parameters (Patroni dynamic config)"
    )
    image: str | None = Field(None, description="use this image tag instead of building pgha's own")
    base_image: str | None = Field(None, description="base for the image build (default debian:<suite>-slim)")
    upgrade: UpgradePolicy = Field(default_factory=UpgradePolicy,  # type: ignore[arg-type]
                                   description="thresholds and policy of rolling changes (upgrade, config set, "
                                               "scale, restart)")
    audit: AuditThresholds = Field(default_factory=AuditThresholds,  # type: ignore[arg-type]
                                   description="thresholds of the health audit's warnings and critical findings")
    pooler: PoolerSpec = Field(default_factory=PoolerSpec,  # type: ignore[arg-type]
                               description="PgBouncer in front of the read/write endpoint (on by default without hosts)")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec,  # type: ignore[arg-type]
                                 description="pgha's Prometheus exporter on ports.metrics (off by default)")
    fencing: bool = Field(True, description="run the fencing watcher: a leader the engine confirms dead loses "
                                            "its leader key at once instead of after Patroni's ttl")
    failsafe_mode: bool = Field(True, description="Patroni failsafe_mode: keep the primary while etcd has no "
                                                  "quorum as long as it reaches every member's REST API")
    major: MajorUpgradePolicy = Field(default_factory=MajorUpgradePolicy,  # type: ignore[arg-type]
                                      description="blue/green major upgrades (`pgha upgrade --major`)")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec,  # type: ignore[arg-type]
                                     description="CPU and memory limits of each role's containers")
    tls: TlsSpec = Field(default_factory=TlsSpec,  # type: ignore[arg-type]
                         description="TLS from the cluster's own CA for etcd, Patroni's REST API and PostgreSQL")
    logs: LogsSpec = Field(default_factory=LogsSpec,  # type: ignore[arg-type]
                           description="every container's log capped: the size of a file and the files kept")
    state: StateLimits = Field(default_factory=StateLimits,  # type: ignore[arg-type]
                               description="how much of the cluster's history its state directory keeps "
                                           "(operations journal, drill charts)")

    # ---- the application's side: declared roles and databases (stack/appdb.py) ----
    roles: list[appdb.AppRole] = Field(default_factory=list, description="application roles `pgha up` creates "
                                                                         "and keeps as declared (see "
                                                                         "docs/howto/app-database.md)")
    databases: list[appdb.AppDatabase] = Field(default_factory=list, description="application databases `pgha up` "
                                                                                 "creates and keeps as declared")
    prune: bool = Field(False, description="drop roles and databases pgha created that are no longer declared "
                                           "(off: never drop anything)")
    audit_logging: appdb.AuditLogging = Field(default_factory=appdb.AuditLogging,  # type: ignore[arg-type]
                                              description="pgAudit's session audit logging to PostgreSQL's log "
                                                          "(off by default)")
    # ---- end application's side ----

    delayed: list[DelayedNode] = Field(default_factory=list, description="nodes that replay WAL late (e.g. "
                                       "`[{name: pg-3, delay: 1h}]`): never a failover candidate, not in R/O "
                                       "routing; `pgha recover-from-delayed` brings a dropped table back from one")
    standby_of: StandbyOf | None = Field(None, description="a standby cluster (second site): `{scope: <primary "
                                         "site>}`; its standby leader follows that cluster, its replicas follow "
                                         "the standby leader; `pgha site promote` makes it a primary site")
    # ---- many hosts (docs/howto/many-hosts.md); absent: today's single local engine ----
    hosts: list[hostplan.HostSpec] | None = Field(None, description="machines with a Docker engine; absent = "
                                                                    "the local engine only")
    placement: hostplan.Placement = Field(default_factory=hostplan.Placement,  # type: ignore[arg-type]
                                          description="with hosts: which host runs which etcd member and node")
    allow_unsafe_placement: bool = Field(False, description="accept a placement where losing one host stops "
                                                            "the cluster")
    # ---- end many hosts ----
    insecure: list[Insecure] = Field(default_factory=list, description="insecure combinations this spec accepts, "
                                     "each named: plaintext-between-hosts (tls.enabled false with hosts: etcd, "
                                     "Patroni's REST API and PostgreSQL unencrypted between machines), "
                                     "plaintext-engine-api (a tcp:// engine without tls: the Docker API, root on that "
                                     "host, unauthenticated and unencrypted). Without the entry such a spec is refused; "
                                     "an entry the spec does not need is refused too")

    _images = field_validator("image", "base_image")(typed.image_ref)

    @field_validator("postgres_parameters")
    @classmethod
    def _parameter_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            typed.parameter_name(name)
        return v

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: str) -> str:
        if not SCOPE_RE.match(v):
            raise ValueError(
                f"'{v}' is not a valid scope: use 2-40 lowercase letters, digits and dashes, "
                "starting with a letter and not ending with a dash"
            )
        return v

    @field_validator("etcd_members")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd (1, 3, 5 or 7) so a quorum exists, not {v}")
        return v

    @field_validator("postgres_version")
    @classmethod
    def _pg(cls, v: int) -> int:
        if v not in SUITE_FOR_MAJOR:
            known = ", ".join(str(k) for k in sorted(SUITE_FOR_MAJOR))
            raise ValueError(f"PostgreSQL {v} is not packaged for pgha's images; choose one of {known}")
        return v

    @model_validator(mode="after")
    def _timing(self) -> ClusterSpec:
        t = self.timing
        if t.loop_wait + 2 * t.retry_timeout > t.ttl:
            raise ValueError(
                f"patroni timing breaks Patroni's rule loop_wait + 2*retry_timeout <= ttl "
                f"({t.loop_wait} + 2*{t.retry_timeout} > {t.ttl})"
            )
        return self

    @model_validator(mode="after")
    def _pool_port(self) -> ClusterSpec:
        """ports.pool is published only when the pooler runs; a spec without one may use 6432 otherwise."""
        if self.runs_pooler:
            for name in ("rw", "ro", "stats"):
                if getattr(self.ports, name) == self.ports.pool:
                    raise ValueError(f"ports.pool and ports.{name} are both {self.ports.pool}; they must differ "
                                     "(the pooler is on by default: set ports.pool, or pooler.enabled: false)")
        return self

    @model_validator(mode="after")
    def _metrics_port(self) -> ClusterSpec:
        """ports.metrics is published only when the exporter runs."""
        if self.metrics.enabled:
            for name in ("rw", "ro", "stats", *(("pool",) if self.runs_pooler else ())):
                if getattr(self.ports, name) == self.ports.metrics:
                    raise ValueError(f"ports.metrics and ports.{name} are both {self.ports.metrics}; they must differ")
        return self

    @model_validator(mode="after")
    def _parameters(self) -> ClusterSpec:
        """postgres_parameters may not set what pgha owns, nor memory the node cannot hold."""
        for name, value in self.postgres_parameters.items():
            why = owned_reason(name) or PATRONI_OWNED.get(name.lower())
            if why:
                raise ValueError(f"postgres_parameters.{name} cannot be set here: {why}")
            if err := check_memory(name, str(value), self.resources.patroni.memory_mib):
                raise ValueError(f"postgres_parameters.{err}")
        return self

    @model_validator(mode="after")
    def _app(self) -> ClusterSpec:
        """Declared roles and databases: owners and memberships declared, pool sizes PostgreSQL can serve."""
        raw = str(self.postgres_parameters.get("max_connections", 100))
        max_conn = int(raw) if raw.isdigit() else 100
        if why := appdb.spec_problem(self.roles, self.databases, max_conn, self.pooler.default_pool_size,
                                       self.postgres_version):
            raise ValueError(why)
        return self

    @model_validator(mode="after")
    def _hosts(self) -> ClusterSpec:
        """Many hosts: distinct hosts, a placement that survives the loss of any one (or says it accepts not)."""
        if self.hosts is None:
            return self
        if not self.hosts:
            raise ValueError("hosts is empty; leave it out for the local engine, or name at least one host")
        if (dup := hostplan.duplicate(self.hosts)) is not None:
            raise ValueError(dup)
        names = [h.name for h in self.hosts]
        etcd_on = hostplan.place(self.etcd_names(), names, self.placement.etcd, "etcd")
        nodes_on = hostplan.place(self.node_names(), names, self.placement.patroni, "patroni")
        if (why := hostplan.unsafe_reason(etcd_on, nodes_on, names)) and not self.allow_unsafe_placement:
            raise ValueError(f"unsafe placement: {why}; add hosts or set allow_unsafe_placement: true")
        for on, role in ((etcd_on, "etcd member"), (nodes_on, "Patroni node")):
            if (why := hostplan.crowded(on, role)) is not None:
                raise ValueError(why)
        for key in ("rw", "ro", "stats", *(("pool",) if self.runs_pooler else ())):
            port = getattr(self.ports, key)
            if port in hostplan.MEMBER_PORTS:
                raise ValueError(f"ports.{key} {port} is {hostplan.MEMBER_PORTS[port]}'s port on every host "
                                 "(host networking); choose another, e.g. 5000/5001/7000")
        if self.backup.enabled and self.backup.s3 is None and self.backup.repo_host is None:
            raise ValueError("backup over several hosts needs backup.s3 or backup.repo_host (a repository host; "
                             "the volume repository lives on one engine); set one, or backup.enabled: false")
        if self.metrics.enabled:
            raise ValueError("metrics.enabled is not supported with hosts yet; scrape Patroni's /metrics on each host")
        return self

    @model_validator(mode="after")
    def _insecure(self) -> ClusterSpec:
        """An insecure combination only when `insecure:` names it; every entry must name one the spec has."""
        found = insecure_combinations(self)
        for kind, why in found.items():
            if kind not in self.insecure:
                raise ValueError(f"{why}; fix it, or add '{kind}' to insecure: to accept that")
        for kind in self.insecure:
            if kind not in found:
                raise ValueError(f"insecure lists '{kind}' but the spec has no such combination; remove it")
        return self

    @model_validator(mode="after")
    def _repo_host(self) -> ClusterSpec:
        """backup.repo_host names one of `hosts:`, and is not an S3 repository as well."""
        host = self.backup.repo_host
        if host is None:
            return self
        if self.hosts is None:
            raise ValueError(f"backup.repo_host '{host}' needs hosts: (without them the repository is the local "
                             "volume); remove backup.repo_host or list the hosts")
        if host not in [h.name for h in self.hosts]:
            raise ValueError(f"backup.repo_host names unknown host '{host}' (hosts: "
                             f"{', '.join(h.name for h in self.hosts)})")
        if self.backup.s3 is not None:
            raise ValueError("backup.repo_host and backup.s3 are two repositories; choose one")
        if not self.backup.enabled:
            raise ValueError("backup.repo_host is set but backup.enabled is false; remove one of them")
        return self

    @model_validator(mode="after")
    def _delayed(self) -> ClusterSpec:
        """Delayed nodes are nodes of this cluster, each once, and leave at least one failover candidate."""
        names = [d.name for d in self.delayed]
        for name in names:
            if name not in self.node_names():
                raise ValueError(f"delayed names unknown node '{name}' (nodes: {', '.join(self.node_names())})")
        if len(set(names)) != len(names):
            raise ValueError(f"delayed lists node '{next(n for n in names if names.count(n) > 1)}' twice")
        if names and len(names) >= self.nodes:
            raise ValueError("every node is delayed: no node could be the primary; leave at least two undelayed")
        if names and self.nodes - len(names) < 2:
            raise ValueError(f"with {len(names)} of {self.nodes} nodes delayed no failover candidate is left "
                             "(the primary needs an undelayed replica); add a node or delay fewer")
        return self

    @model_validator(mode="after")
    def _standby(self) -> ClusterSpec:
        """A standby cluster follows another scope, on this engine, and writes nothing of its own."""
        if self.standby_of is None:
            return self
        if self.standby_of.scope == self.scope:
            raise ValueError(f"standby_of.scope is this cluster's own scope ({self.scope}): a standby cluster "
                             "follows another cluster")
        if self.hosts is None and (self.standby_of.hosts is not None or self.standby_of.port is not None):
            raise ValueError("standby_of.hosts and standby_of.port go with hosts: only (pgha fills them from the "
                             "primary site's stored spec); leave them out")
        if self.backup.enabled:
            raise ValueError("a standby cluster takes no backups of its own (the primary site's cover the data); "
                             "set backup: {enabled: false}")
        if self.roles or self.databases or self.prune:
            raise ValueError("a standby cluster is a physical copy of its primary site: its roles and databases are "
                             "the primary's; remove roles:, databases: and prune: from this spec")
        return self

    # ---- derived values (the only place names are made) ----

    @property
    def multi_host(self) -> bool:
        return self.hosts is not None

    def host_named(self, name: str) -> hostplan.HostSpec:
        for h in self.hosts or []:
            if h.name == name:
                return h
        raise KeyError(name)

    def host_of(self, member: str) -> str | None:
        """The host that runs `member` (None: single engine; HAProxy: the first host, it runs on all)."""
        if self.hosts is None:
            return None
        names = [h.name for h in self.hosts]
        if member in self.etcd_names():
            return hostplan.place(self.etcd_names(), names, self.placement.etcd, "etcd")[member]
        if member in self.node_names():
            return hostplan.place(self.node_names(), names, self.placement.patroni, "patroni")[member]
        if member == self.repo_member and self.backup.repo_host is not None:
            return self.backup.repo_host
        if (watched := self.fencer_hosts().get(member)) is not None:
            return watched
        return names[0]

    def address(self, member: str) -> str:
        """How other members reach `member`: its host's address, or its container name on the cluster network."""
        host = self.host_of(member)
        return self.host_named(host).address if host is not None else self.container(member)

    def client_endpoints(self, read_only: bool = False, pooled: bool = False) -> list[tuple[str, int]]:
        """(host, port) of every HAProxy (`pooled`: every pooler, beside each HAProxy) clients use, in
        host order (one: 127.0.0.1 of the local engine)."""
        if self.hosts is None:
            return [("127.0.0.1", self.ports.pool if pooled else self.ports.ro if read_only else self.ports.rw)]
        if pooled:
            return [(h.client_address or h.address, h.pool_port or self.ports.pool) for h in self.hosts]
        return [(h.client_address or h.address,
                 (h.ro_port or self.ports.ro) if read_only else (h.rw_port or self.ports.rw)) for h in self.hosts]

    @property
    def timing(self) -> EffectiveTiming:
        base = PROFILES[self.profile].model_dump()
        base.update({k: v for k, v in self.patroni.model_dump().items() if v is not None})
        base.update({k: v for k, v in self.haproxy.model_dump().items() if v is not None})
        return EffectiveTiming(**base)

    @property
    def suite(self) -> str:
        return SUITE_FOR_MAJOR[self.postgres_version]

    @property
    def network(self) -> str:
        return f"{self.scope}-net"

    def etcd_names(self) -> list[str]:
        return [f"etcd-{i}" for i in range(1, self.etcd_members + 1)]

    def node_names(self) -> list[str]:
        return [f"pg-{i}" for i in range(1, self.nodes + 1)]

    def delay_of(self, member: str) -> DelayedNode | None:
        """The delayed-node entry of `member` (None: it replays at once)."""
        return next((d for d in self.delayed if d.name == member), None)

    def delayed_names(self) -> list[str]:
        return [d.name for d in self.delayed]

    def expected_members(self) -> list[tuple[str, str]]:
        """(member, role) of every container the spec runs: etcd, Patroni nodes, HAProxy, and the
        pooler, the fencing watcher and the repository host when the spec has them."""
        out = [(m, "etcd") for m in self.etcd_names()] + [(m, "patroni") for m in self.node_names()]
        out.append((self.haproxy_member, "haproxy"))
        if self.runs_pooler:
            out.append((self.pooler_member, "pooler"))
        out += [(m, "fencer") for m in self.fencer_members()]
        if self.backup.enabled and self.backup.repo_host is not None:
            out.append((self.repo_member, "repo"))
        if self.metrics.enabled:
            out.append((self.metrics_member, "metrics"))
        return out

    def container(self, member: str) -> str:
        """Container name (and DNS name on the cluster network) of a member."""
        return f"{self.scope}-{member}"

    def volume(self, member: str) -> str:
        return f"{self.scope}-{member}-data"

    @property
    def haproxy_api_volume(self) -> str:
        """The tmpfs-backed volume that holds HAProxy's runtime-API socket for the fencer."""
        return f"{self.scope}-haproxy-api"

    @property
    def haproxy_member(self) -> str:
        return "haproxy"

    @property
    def runs_pooler(self) -> bool:
        """Whether the cluster runs PgBouncer: `pooler.enabled` when the spec says, else on (one beside
        each HAProxy: one on the local engine, one on every host with `hosts`)."""
        return self.pooler.enabled if self.pooler.enabled is not None else True

    @property
    def pooler_member(self) -> str:
        """PgBouncer's member name; it runs beside HAProxy, on every host that runs one."""
        return "pooler"

    @property
    def metrics_member(self) -> str:
        """pgha's Prometheus exporter (metrics.enabled), on the local engine."""
        return "metrics"

    @property
    def fencer_member(self) -> str:
        """The fencing watcher of the local engine (without `hosts`); see `fencer_members`."""
        return "fencer"

    def fencer_hosts(self) -> dict[str, str]:
        """Many hosts: fencing watcher member -> the host it watches (`fencer-<host>`, one per host
        running a Patroni node). Empty without hosts or with fencing off."""
        if self.hosts is None or not self.fencing:
            return {}
        names = [h.name for h in self.hosts]
        nodes_on = hostplan.place(self.node_names(), names, self.placement.patroni, "patroni")
        return {f"{self.fencer_member}-{h}": h for h in hostplan.watched_hosts(nodes_on, names)}

    def fencer_members(self) -> list[str]:
        """Every fencing watcher the spec runs: `fencer` on the local engine, one per node's host
        with `hosts`, none with fencing off."""
        if not self.fencing:
            return []
        return list(self.fencer_hosts()) if self.hosts is not None else [self.fencer_member]

    @property
    def repo_member(self) -> str:
        """The pgBackRest repository host's member name (`<scope>-repo`, on backup.repo_host)."""
        return "repo"


def insecure_combinations(spec: ClusterSpec) -> dict[Insecure, str]:
    """Each insecure combination of the spec with one line saying what it exposes."""
    found: dict[Insecure, str] = {}
    if spec.hosts is not None and not spec.tls.enabled:
        found[Insecure.PLAINTEXT_BETWEEN_HOSTS] = (
            "tls.enabled: false with hosts sends etcd's data (the cluster's state, writable by anyone who reaches it), "
            "Patroni's REST API and PostgreSQL sessions (passwords included) unencrypted over the hosts' network")
    plain = [h for h in spec.hosts or [] if h.docker.startswith("tcp://") and h.tls is None]
    if plain:
        found[Insecure.PLAINTEXT_ENGINE_API] = (
            f"host {plain[0].name}'s engine {plain[0].docker} has no tls: its Docker API (root on that machine) would "
            "take any caller and carry every secret pgha pushes in plain text; give the host tls: {ca, cert, key}")
    return found


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One readable line for the first problem pydantic found."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "spec"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check spelling; every field is in docs/reference/spec.md)"
    extra = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"invalid spec {source}: {loc}: {msg}{extra}"


def parse_spec(data: Any, source: str = "") -> ClusterSpec:
    """Validate a mapping as a ClusterSpec, raising SpecError with one readable line."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"invalid spec {source}: expected a mapping of keys, got {type(data).__name__}")
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source)) from None


def as_deployed(spec: ClusterSpec, stored: object) -> ClusterSpec:
    """`spec` without the pooler when it is on only by default and the last `pgha up` did not run one.

    `stored` is the cluster's stored spec as read from YAML (None: never brought up). A cluster
    brought up before the pooler was on by default stored `pooler.enabled: false` (or, older
    still, no pooler at all): reading and judging it (status, audit) must not call its absent
    pooler broken. The next `pgha up` with a spec that leaves `pooler.enabled` out adds it.
    """
    if spec.pooler.enabled is not None or not spec.runs_pooler or not isinstance(stored, dict):
        return spec
    pooler = stored.get("pooler")
    enabled = pooler.get("enabled", False) if isinstance(pooler, dict) else False
    if enabled is True or (enabled is None and stored.get("hosts") is None):
        return spec
    return spec.model_copy(update={"pooler": spec.pooler.model_copy(update={"enabled": False})})


def as_stored(spec: ClusterSpec) -> ClusterSpec:
    """`spec` as `pgha up` stores it: with `hosts`, a pooler on by default is stored as
    `pooler.enabled: true`, since a stored many-hosts spec that leaves it out was stored by a pgha
    that ran no pooler there (`as_deployed` reads it so)."""
    if spec.hosts is None or spec.pooler.enabled is not None:
        return spec
    return spec.model_copy(update={"pooler": spec.pooler.model_copy(update={"enabled": spec.runs_pooler})})


def load_spec(path: Path | None) -> ClusterSpec:
    """Read a spec from a YAML file (None: the default cluster)."""
    if path is None:
        return ClusterSpec()
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"invalid spec {path}:{where}: not valid YAML") from None
    return parse_spec(data, str(path))
