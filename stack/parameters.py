"""Which PostgreSQL parameters `pgha config set` lets users change: an allowlist, not a denylist.

Pure. A parameter is judged by what the running server says of it in `pg_settings` (its
`context` and `category`), read from the leader at the time of the change, not from a table
kept here: the server is the one authority on its own version's parameters (PostgreSQL 15 and
17 differ in names and categories), and a parameter added by a future minor or by a loaded
library is judged by the same rule instead of slipping through a list that did not know it.

- Allowed: the categories of tuning and behaviour (memory, planner, autovacuum, logging of
  what and when, replication tuning, checkpoints...), minus what pgha or Patroni own
  (`stack.resources.OWNED_EXACT`, `stack.rolling.PATRONI_OWNED`).
- Refused by category, with the reason: file locations, authentication and TLS, where the log
  goes, archiving and recovery (commands run by a shell), developer options (they switch off
  safety checks), preset (compiled-in) values, and any category pgha does not know.
- Values checked for what they load: `shared_preload_libraries`, `session_preload_libraries`,
  `local_preload_libraries` and `jit_provider` name libraries by bare name only, each one a
  file the image carries (`$libdir`, or `$libdir/plugins` for `local_preload_libraries`).
  `dynamic_library_path` is refused: it points library loading at any directory.
- A dotted custom parameter (`ext.setting`) is allowed only when a library the server preloads
  defines its prefix: PostgreSQL accepts any other dotted name unchecked.
- Resetting a parameter (back to pgha's value, or PostgreSQL's default) is always allowed.
"""

from __future__ import annotations

import re

# pg_settings.category, "Group" or "Group / Subgroup": a parameter in one of these may be set.
ALLOWED_CATEGORIES: tuple[str, ...] = (
    "Autovacuum",
    "Client Connection Defaults / Statement Behavior",
    "Client Connection Defaults / Locale and Formatting",
    "Client Connection Defaults / Shared Library Preloading",  # values checked: LIBRARY_PARAMS
    "Client Connection Defaults / Other Defaults",  # dynamic_library_path refused by name
    "Connections and Authentication / Connection Settings",
    "Connections and Authentication / TCP Settings",
    "Error Handling",
    "Lock Management",
    "Query Tuning",
    "Replication",
    "Reporting and Logging / What to Log",
    "Reporting and Logging / When to Log",
    "Reporting and Logging / Process Title",
    "Resource Usage",
    "Statistics",
    "Version and Platform Compatibility",
    "Write-Ahead Log / Settings",
    "Write-Ahead Log / Checkpoints",
    "Write-Ahead Log / Recovery",
    "Write-Ahead Log / Summarization",
    "Customized Options",  # dotted names: only a preloaded library's (custom_refusal)
)

# Categories refused, with the reason a user reads (the first match of a prefix wins).
REFUSED_CATEGORIES: dict[str, str] = {
    "File Locations": "file locations are Patroni's and the image's",
    "Connections and Authentication / Authentication": "authentication is pgha's (SCRAM only, pg_hba rules "
                                                       "rendered from the spec)",
    "Connections and Authentication / SSL": "pgha owns PostgreSQL's TLS settings (certificates from the cluster CA)",
    "Reporting and Logging / Where to Log": "where the server log goes is pgha's (`pgha logs` reads it from the "
                                            "container's output); a log file can be written wherever the "
                                            "postgres user can write",
    "Write-Ahead Log / Archiving": "WAL archiving is set from the spec's backup section (it runs a shell command)",
    "Write-Ahead Log / Archive Recovery": "recovery commands run a shell command; pgha's restore sets them",
    "Write-Ahead Log / Recovery Target": "recovery targets are set by `pgha restore`, not the running configuration",
    "Developer Options": "developer options switch off safety checks (damaged pages zeroed, system tables "
                         "writable, delays before authentication); not for a serving cluster",
    "Preset Options": "it is fixed when PostgreSQL is compiled or initialised",
}

# Refused whatever their category says.
REFUSED_NAMES: dict[str, str] = {
    "dynamic_library_path": "it points library loading (LOAD, CREATE EXTENSION, preload lists) at any "
                            "directory: code the image does not carry",
    "extension_destdir": "it points extension loading at any directory: code the image does not carry",
    "log_directory": "a log file can be written wherever the postgres user can write; the server log is "
                     "the container's output",
}

# Parameters whose value names libraries loaded into the server; {name: subdirectory of $libdir}.
LIBRARY_PARAMS: dict[str, str] = {
    "shared_preload_libraries": "",
    "session_preload_libraries": "",
    "local_preload_libraries": "plugins",
    "jit_provider": "",
}
_LIBRARY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def category_refusal(name: str, context: str, category: str) -> str | None:
    """None when `name` (a pg_settings row's context and category) may be set, else why not."""
    if name in REFUSED_NAMES:
        return REFUSED_NAMES[name]
    if context == "internal":
        return "it is fixed when PostgreSQL is compiled or initialised"
    for prefix, why in REFUSED_CATEGORIES.items():
        if _in_category(category, prefix):
            return why
    if any(_in_category(category, prefix) for prefix in ALLOWED_CATEGORIES):
        return None
    return f"pgha does not let users change parameters of category {category or 'unknown'!r}"


def _in_category(category: str, prefix: str) -> bool:
    return category == prefix or category.startswith(prefix + " / ")


def library_list(value: str) -> list[str]:
    """A preload list as PostgreSQL splits it: comma-separated, optionally double-quoted names."""
    return [item.strip().strip('"').strip() for item in value.split(",") if item.strip().strip('"').strip()]


def library_refusal(name: str, value: str, available: set[str]) -> str | None:
    """None when every library `value` names is a bare name the image carries, else why not.

    `available`: the library files the server has, as "name" for `$libdir/name.so` and
    "plugins/name" for `$libdir/plugins/name.so` (`tasks.postgres.libraries`).
    """
    sub = LIBRARY_PARAMS[name]
    for lib in library_list(value):
        if not _LIBRARY_NAME.fullmatch(lib):
            return (f"'{lib}' is not a bare library name (a path, or $libdir, loads code from anywhere); "
                    "name a library the image carries")
        bare = lib.removesuffix(".so")
        key = f"{sub}/{bare}" if sub else bare
        if key not in available:
            where = f"$libdir/{sub}" if sub else "$libdir"
            return f"the image carries no library '{bare}' in {where}; every new session would fail to load it"
    return None


def custom_refusal(name: str, preloaded: list[str]) -> str | None:
    """A dotted parameter: None when a library the server preloads defines its prefix."""
    prefix = name.split(".", 1)[0]
    if prefix in {lib.removesuffix(".so") for lib in preloaded}:
        return None
    return (f"no library the server preloads defines '{prefix}.' parameters (PostgreSQL would accept the name "
            "unchecked); preload the library first (shared_preload_libraries)")
