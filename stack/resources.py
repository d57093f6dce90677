"""Container budgets and the PostgreSQL settings that follow from them; parameters pgha owns.

Pure: the spec's per-role `resources:` become each container's CPU/memory limits
(`stack.topology`), the Patroni node's memory limit gives the default memory parameters
(`derive_memory_parameters`, used by `stack.render.dcs_config`), and `check_memory` refuses
a memory setting that the container could never hold (`shared_buffers=200GB` on a 2 GiB
node would be OOM-killed on its first busy hour, not refused by PostgreSQL).
`OWNED` lists the parameters pgha sets itself: `pgha config set` and
`spec.postgres_parameters` refuse them with the reason.
"""

from __future__ import annotations

import re

MIB = 1024 * 1024

# ---- parameters pgha owns (besides stack.rolling.PATRONI_OWNED, which Patroni owns) ----

_BACKUP = "pgha sets it from the spec's backup section (WAL archiving to pgBackRest); change `backup:` instead"
_TLS = "pgha owns PostgreSQL's TLS settings (certificates from the cluster CA)"
OWNED_EXACT: dict[str, str] = {
    "restore_command": _BACKUP,
    "archive_cleanup_command": _BACKUP,
    "password_encryption": "pgha's pg_hba and roles use scram-sha-256; a weaker hash would lock clients out "
                           "or weaken them",
    "listen_addresses": "Patroni sets it from postgresql.listen in each node's patroni.yml",
    "port": "Patroni sets it from postgresql.listen; HAProxy and the health checks depend on it",
    "hba_file": "Patroni writes pg_hba.conf from pgha's rules (SCRAM only, the cluster network only)",
    "ident_file": "Patroni writes pg_ident.conf itself",
    "data_directory": "Patroni sets it from postgresql.data_dir; the data volume layout depends on it",
    "config_file": "Patroni writes postgresql.conf itself",
    "external_pid_file": "Patroni manages the postmaster's pid",
    "unix_socket_directories": "Patroni and the image depend on /var/run/postgresql",
    "unix_socket_permissions": "peer authentication of postgres through the socket depends on it",
    "shared_memory_type": "the container's /dev/shm and memory limit are sized for pgha's defaults",
    "dynamic_shared_memory_type": "the container's /dev/shm is sized for pgha's defaults",
}
OWNED_PREFIXES: dict[str, str] = {
    "archive_": _BACKUP,  # archive_mode, archive_command, archive_library, archive_timeout
    "ssl": _TLS,  # ssl, ssl_cert_file, ssl_key_file, ssl_ca_file, ssl_ciphers, ...
}


def owned_reason(name: str) -> str | None:
    """Why pgha refuses to let `name` be set as a plain parameter; None when it may be."""
    name = name.lower()
    if name in OWNED_EXACT:
        return OWNED_EXACT[name]
    for prefix, why in OWNED_PREFIXES.items():
        if name.startswith(prefix):
            return why
    return None


# ---- memory values ----

_UNITS = {"b": 1, "kb": 1024, "mb": MIB, "gb": 1024 * MIB, "tb": 1024 * 1024 * MIB}
_MEM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

# PostgreSQL's memory parameters and the unit of a bare number (pg_settings.unit).
MEMORY_PARAMS: dict[str, int] = {
    "shared_buffers": 8192,
    "effective_cache_size": 8192,
    "wal_buffers": 8192,
    "work_mem": 1024,
    "maintenance_work_mem": 1024,
    "autovacuum_work_mem": 1024,
    "logical_decoding_work_mem": 1024,
    "temp_buffers": 8192,
}

# Share of the container's memory limit one setting may claim before it is refused. Not for
# effective_cache_size, a planner hint that allocates nothing. shared_buffers is allocated
# once for the whole server; work_mem is per sort/hash node per backend, so a single value
# above a quarter of the node can exhaust it with a handful of queries.
MAX_SHARE: dict[str, float] = {
    "shared_buffers": 0.5,
    "wal_buffers": 0.1,
    "work_mem": 0.25,
    "maintenance_work_mem": 0.5,
    "autovacuum_work_mem": 0.5,
    "logical_decoding_work_mem": 0.25,
    "temp_buffers": 0.25,
}


def parse_memory(name: str, value: str) -> int | None:
    """Bytes of a PostgreSQL memory setting ('512MB', '64kB', '16384' in the parameter's own
    unit); None when it is not a memory parameter or not a plain value (-1 = default)."""
    unit = MEMORY_PARAMS.get(name.lower())
    m = _MEM.match(str(value))
    if unit is None or m is None:
        return None
    num, suffix = float(m.group(1)), m.group(2).lower()
    if suffix == "":
        return int(num * unit)
    if suffix not in _UNITS:
        return None
    return int(num * _UNITS[suffix])


def check_memory(name: str, value: str, limit_mib: int | None) -> str | None:
    """None when `name=value` fits a node limited to `limit_mib`; else why not (one line)."""
    share = MAX_SHARE.get(name.lower())
    if share is None or not limit_mib:
        return None
    got = parse_memory(name, value)
    if got is None:
        return None
    cap = int(limit_mib * MIB * share)
    if got > cap:
        return (f"{name}={value} is more than {share:.0%} of the node's memory limit "
                f"({limit_mib} MiB, resources.patroni.memory_mib): at most {fmt_mb(cap)}")
    return None


def fmt_mb(n: int) -> str:
    """Bytes as PostgreSQL's MB (rounded down, at least 1MB), or kB below a megabyte."""
    if n < MIB:
        return f"{max(n // 1024, 64)}kB"
    return f"{n // MIB}MB"


def derive_memory_parameters(limit_mib: int, max_connections: int = 100) -> dict[str, str]:
    """PostgreSQL's memory settings for a node limited to `limit_mib` MiB.

    The usual dedicated-server rules (the PostgreSQL wiki's tuning guide, pgtune):
    shared_buffers 25 % of RAM, effective_cache_size 75 %, maintenance_work_mem 1/16 (64 MB
    to 2 GB), and work_mem such that every connection running three sort/hash nodes at once
    stays inside what shared_buffers leaves (4 MB to 64 MB). In a container the page cache
    counts against the limit too, which is why 75 % and not more.
    """
    total = limit_mib * MIB
    shared = total // 4
    work = (total - shared) // (max(max_connections, 1) * 3)
    work = min(max(work, 4 * MIB), 64 * MIB)
    maint = min(max(total // 16, 64 * MIB), 2048 * MIB)
    return {
        "shared_buffers": fmt_mb(shared),
        "effective_cache_size": fmt_mb(total * 3 // 4),
        "work_mem": fmt_mb(work),
        "maintenance_work_mem": fmt_mb(maint),
    }
