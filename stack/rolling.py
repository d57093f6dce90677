"""Decisions of rolling changes, pure: upgrade order and resume, pre-check refusals,
dynamic-configuration checks, scale plans and etcd member replacement.

Flows (`flows/upgrade.py`, `flows/config.py`, `flows/scale.py`) gather the facts and act;
everything worth a unit test is decided here from plain values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from stack.parameters import LIBRARY_PARAMS, REFUSED_NAMES, category_refusal, custom_refusal, library_refusal
from stack.resources import check_memory, owned_reason

# ---- rolling upgrade ----


class StepKind(StrEnum):
    NODE = "node"  # take a replica out, recreate it on the target image, put it back
    SWITCHOVER = "switchover"  # hand the leadership to an upgraded replica


@dataclass(frozen=True)
class Step:
    kind: StepKind
    member: str
    candidate: str = ""

    def describe(self) -> str:
        if self.kind == StepKind.SWITCHOVER:
            return f"switchover {self.member} -> {self.candidate or 'an upgraded replica'}"
        return f"recreate {self.member} on the target image"


@dataclass(frozen=True)
class NodeFacts:
    """What the flow saw of one Patroni node before deciding."""

    name: str
    image: str  # the tag its container runs
    is_leader: bool = False
    is_sync: bool = False


@dataclass(frozen=True)
class UpgradePlan:
    steps: list[Step]
    already: list[str]  # nodes on the target image already: never upgraded twice

    @property
    def nothing_to_do(self) -> bool:
        return not self.steps


def _num(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else 0, name)


def plan_upgrade(nodes: list[NodeFacts], target: str, primary_policy: str = "switchover") -> UpgradePlan:
    """Replicas not on `target` first (one at a time, by name), then the leader.

    With policy "switchover" the leader is first switched over to an upgraded replica (the
    synchronous one when there is one, since Patroni in synchronous mode only hands over to
    it) and then upgraded as a replica; with "restart" it is recreated in place.
    """
    done = sorted((n.name for n in nodes if n.image == target), key=_num)
    todo = [n for n in nodes if n.image != target]
    replicas = sorted((n for n in todo if not n.is_leader), key=lambda n: _num(n.name))
    steps = [Step(StepKind.NODE, n.name) for n in replicas]
    leader = next((n for n in todo if n.is_leader), None)
    if leader is not None:
        if primary_policy == "switchover" and len(nodes) > 1:
            steps.append(Step(StepKind.SWITCHOVER, leader.name))
        steps.append(Step(StepKind.NODE, leader.name))
    return UpgradePlan(steps=steps, already=done)


def switchover_candidate(nodes: list[NodeFacts], target: str, synchronous: bool = False) -> str | None:
    """An upgraded replica to hand the leadership to: the synchronous standby if upgraded.

    `synchronous`: the cluster runs in synchronous mode, where Patroni refuses any candidate
    but the sync standby — also for the moment after a restart when it has none yet.
    """
    upgraded = [n for n in nodes if not n.is_leader and n.image == target]
    for n in upgraded:
        if n.is_sync:
            return n.name
    if synchronous or any(n.is_sync for n in nodes):
        # Synchronous mode: Patroni refuses a candidate that is not the sync standby; wait for it.
        return None
    return sorted((n.name for n in upgraded), key=_num)[0] if upgraded else None


@dataclass(frozen=True)
class UpgradeFacts:
    """Everything the pre-check looks at, gathered before anything changes."""

    current_major: int
    target_image: str
    target_exists: bool
    target_major: int | None
    healthy: bool
    problem: str = ""
    max_lag_bytes: int | None = 0  # worst replica lag; None when unknown
    oldest_transaction_s: float = 0.0
    paused: bool = False


def precheck(f: UpgradeFacts, max_lag: int, max_xact_age: int) -> str | None:
    """None when the upgrade may start, else the one-line reason it is refused."""
    if not f.target_exists:
        return (f"image {f.target_image} does not exist locally; build it first "
                "(`pgha images build`, `--updates security` for the security build)")
    if f.target_major is None:
        return f"image {f.target_image} is not a pgha node image (no PG_MAJOR in its environment)"
    if f.target_major != f.current_major:
        return (f"image {f.target_image} has PostgreSQL {f.target_major} but the cluster runs {f.current_major}: "
                "a major version change needs pg_upgrade (the major-upgrade path), not a rolling minor upgrade")
    if f.paused:
        return "Patroni is paused (maintenance mode); resume it first (`patronictl resume`)"
    if not f.healthy:
        return f"cluster is not healthy: {f.problem} (see `pgha status`)"
    if f.max_lag_bytes is None:
        return "a replica reports no replication lag; it is not replicating"
    if f.max_lag_bytes > max_lag:
        return f"replication lag {f.max_lag_bytes} bytes exceeds upgrade.max_lag_bytes {max_lag}"
    if f.oldest_transaction_s > max_xact_age:
        return (f"a transaction has been open {f.oldest_transaction_s:.0f}s (upgrade.max_transaction_age_s is "
                f"{max_xact_age}); end it or raise the threshold")
    return None


def pg_major_of(env: list[str]) -> int | None:
    """PG_MAJOR from an image's environment list (["PG_MAJOR=15", ...])."""
    for item in env:
        key, _, value = item.partition("=")
        if key == "PG_MAJOR" and value.isdigit():
            return int(value)
    return None


def version_text(num: int | None) -> str:
    """150020 -> '15.20' (PostgreSQL >= 10 numbering)."""
    if not num:
        return "?"
    return f"{num // 10000}.{num % 10000}"


# ---- dynamic configuration ----

# Parameters Patroni sets itself or that cannot be changed through its dynamic configuration.
PATRONI_OWNED: dict[str, str] = {
    "listen_addresses": "Patroni sets it from postgresql.listen in each node's patroni.yml",
    "port": "Patroni sets it from postgresql.listen in each node's patroni.yml",
    "data_directory": "Patroni sets it from postgresql.data_dir; the data volume layout depends on it",
    "config_file": "Patroni writes postgresql.conf itself",
    "hba_file": "Patroni writes pg_hba.conf from the rendered pg_hba rules",
    "ident_file": "Patroni writes pg_ident.conf itself",
    "cluster_name": "Patroni sets it to the cluster scope",
    "hot_standby": "Patroni keeps it on so replicas serve reads",
    "wal_log_hints": "pg_rewind (use_pg_rewind) needs it on",
    "synchronous_standby_names": "Patroni manages it in synchronous mode",
    "primary_conninfo": "Patroni manages replication connections",
    "primary_slot_name": "Patroni manages replication slots",
    "recovery_target": "recovery settings are not part of the running configuration",
    "restore_command": "set it through pgha's backup configuration, not as a plain parameter",
    "recovery_min_apply_delay": "a delayed replica is declared per node in the spec's `delayed:`; for the whole "
                                "cluster it would delay every replica, the failover candidates too",
    "unix_socket_directories": "Patroni and the image depend on /var/run/postgresql",
}

_INT = re.compile(r"^-?\d+\s*(B|kB|MB|GB|TB|us|ms|s|min|h|d)?$")
_REAL = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*(B|kB|MB|GB|TB|us|ms|s|min|h|d)?$")
_BOOL = {"on", "off", "true", "false", "yes", "no", "1", "0"}


@dataclass(frozen=True)
class Setting:
    """One row of pg_settings (name, context, vartype, min_val, max_val, enumvals, category, setting)."""

    name: str
    context: str
    vartype: str
    min_val: str | None = None
    max_val: str | None = None
    enumvals: list[str] = field(default_factory=list)
    category: str = ""
    setting: str = ""

    @property
    def needs_restart(self) -> bool:
        return self.context == "postmaster"


def parse_assignments(items: list[str]) -> dict[str, str]:
    """["a=1", "b = x", "c="] -> {"a": "1", "b": "x", "c": ""}; raises ValueError with one readable line.

    An empty value ("c=") resets the parameter (`pgha config reset c`).
    """
    if not items:
        raise ValueError("give at least one KEY=VALUE")
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key:
            raise ValueError(f"'{item}' is not KEY=VALUE")
        if not re.fullmatch(r"[a-z_][a-z0-9_.]*", key):
            raise ValueError(f"'{key}' is not a PostgreSQL parameter name")
        if key in out and out[key] != value:
            raise ValueError(f"{key} is given twice with different values")
        out[key] = value
    return out


def check_parameter(name: str, value: str, setting: Setting | None, limit_mib: int | None = None,
                    libraries: set[str] | None = None, preloaded: list[str] | None = None) -> str | None:
    """None when Patroni may set `name=value` dynamically, else why not (the allowlist of
    `stack.parameters`: the parameter's pg_settings context and category, what its value loads).

    `limit_mib`: the Patroni node's memory limit; memory settings above their share of it
    are refused (`stack.resources.check_memory`). `libraries`: the library files the server
    has (`tasks.postgres.libraries`); `preloaded`: the libraries it preloads (for dotted names).
    """
    refused = f"{name} cannot be changed with `pgha config set`: "
    if name in PATRONI_OWNED:
        return refused + PATRONI_OWNED[name]
    if (owned := owned_reason(name)) is not None:
        return refused + owned
    if name in REFUSED_NAMES:
        return refused + REFUSED_NAMES[name]
    if (mem := check_memory(name, value, limit_mib)) is not None:
        return mem
    if setting is None:
        if "." in name:
            return refused + (custom_refusal(name, preloaded or []) or "no library defines it on this server")
        return f"{name} is not a PostgreSQL parameter on this server"
    if "." in name and (why := custom_refusal(name, preloaded or [])) is not None:
        return refused + why
    if setting.context == "internal":
        return f"{name} is fixed when PostgreSQL is compiled or initialised; it cannot be set"
    if (why := category_refusal(name, setting.context, setting.category)) is not None:
        return refused + why
    if name in LIBRARY_PARAMS and (why := library_refusal(name, value, libraries or set())) is not None:
        return f"{name}={value} refused: {why}"
    t = setting.vartype
    if t == "bool" and value.lower() not in _BOOL:
        return f"{name} is a boolean: use on or off, not '{value}'"
    if t == "enum" and setting.enumvals and value.lower() not in [v.lower() for v in setting.enumvals]:
        return f"{name} must be one of {', '.join(setting.enumvals)}, not '{value}'"
    if t == "integer":
        if not _INT.match(value):
            return f"{name} is an integer (optionally with a unit), not '{value}'"
        if value.lstrip("-").isdigit():
            err = _bounds(name, float(value), setting)
            if err:
                return err
    if t == "real":
        if not _REAL.match(value):
            return f"{name} is a number, not '{value}'"
        if re.fullmatch(r"-?[\d.eE+-]+", value):
            err = _bounds(name, float(value), setting)
            if err:
                return err
    return None


def _bounds(name: str, v: float, s: Setting) -> str | None:
    try:
        if s.min_val is not None and v < float(s.min_val):
            return f"{name} must be at least {s.min_val}, not {v:g}"
        if s.max_val is not None and v > float(s.max_val):
            return f"{name} must be at most {s.max_val}, not {v:g}"
    except ValueError:
        return None
    return None


# ---- scaling ----


@dataclass(frozen=True)
class ScalePlan:
    add: list[str]
    remove: list[str]
    switchover_to: str | None  # the leader is among the removed: hand over first

    def describe(self) -> str:
        parts = []
        if self.add:
            parts.append("add " + ", ".join(self.add))
        if self.switchover_to:
            parts.append(f"switch over to {self.switchover_to}")
        if self.remove:
            parts.append("remove " + ", ".join(self.remove))
        return "; ".join(parts) or "nothing to do"


def plan_scale(current: list[str], target: int, leader: str, sync: list[str] | None = None) -> ScalePlan:
    """Grow by adding pg-<n+1>.., shrink by removing the highest-numbered nodes.

    Names stay dense (pg-1..pg-N) because the spec derives them from the node count. If the
    leader is to be removed, a switchover to a kept node comes first (the sync standby when
    it is kept, since Patroni in synchronous mode hands over only to it).
    """
    if target < 1:
        raise ValueError("a cluster needs at least 1 node")
    if target > 9:
        raise ValueError("at most 9 nodes (spec limit)")
    ordered = sorted(current, key=_num)
    n = len(ordered)
    if target >= n:
        return ScalePlan(add=[f"pg-{i}" for i in range(n + 1, target + 1)], remove=[], switchover_to=None)
    keep, remove = ordered[:target], ordered[target:]
    to = None
    if leader in remove:
        kept_sync = [m for m in (sync or []) if m in keep]
        to = kept_sync[0] if kept_sync else keep[0]
    # Remove the highest first, so a half-done shrink still leaves a dense prefix.
    return ScalePlan(add=[], remove=list(reversed(remove)), switchover_to=to)


def etcd_replace_refusal(members: list[str], healthy: dict[str, bool], target: str) -> str | None:
    """None when `target` may be replaced now; else why not (quorum must hold throughout)."""
    if target not in members:
        return f"'{target}' is not an etcd member of this cluster ({', '.join(members)})"
    if len(members) < 3:
        return (f"replacing a member of a {len(members)}-member etcd cluster loses quorum while it is replaced; "
                "run at least 3 members")
    others = [m for m in members if m != target]
    healthy_others = [m for m in others if healthy.get(m)]
    quorum_after_removal = len(others) // 2 + 1
    if len(healthy_others) < quorum_after_removal:
        return (f"only {len(healthy_others)} of the other {len(others)} etcd members are healthy; removing "
                f"{target} would leave no quorum")
    if len(healthy_others) < len(others):
        down = ", ".join(m for m in others if not healthy.get(m))
        return f"etcd members {down} are unhealthy; replace them one at a time, starting with those"
    return None
