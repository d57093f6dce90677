"""etcd: the cluster's consensus store, through etcdctl inside one of its members.

The only place etcd is touched: health, status and membership (parsed here, once), raft
leadership moves, member replacement, and Patroni's keys (their namespace is
`stack.layout.PATRONI_NAMESPACE`, defined once).
"""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

from stack import etcd_auth, layout
from stack.audit import leader_key_verdict
from stack.audit_obs import EtcdMember, LeaderKeyObs
from stack.cluster import EndpointHealth
from stack.errors import EtcdError
from stack.render import dcs_config, etcd_hosts, scheme
from stack.secrets import Secrets
from stack.snapshot import EtcdObs
from stack.spec import ClusterSpec
from stack.topology import etcdctl_tls
from stack.wait import wait_for
from tasks import docker_hosts
from tasks._prefect import RETRY_TRANSIENT, task
from tasks.host.secrets import etcd_auth_marker, load_or_create
from tasks.host.state import config_dir, secrets_file, write_private
from tasks.node_exec import ExecResult, first_running, node


def endpoints(spec: ClusterSpec, members: list[str] | None = None) -> str:
    sch = scheme(spec)
    if members is None:
        return ",".join(f"{sch}://{h}" for h in etcd_hosts(spec))
    return ",".join(f"{sch}://{spec.address(m)}:{layout.ETCD_CLIENT_PORT}" for m in members)


def etcdctl(spec: ClusterSpec, args: list[str], via: str | None = None, members: list[str] | None = None,
            command_timeout: str = "2s", timeout: int = 10) -> ExecResult:
    """Run etcdctl in `via` (default: the first running member) against `members` (default: all)."""
    n = node(spec, via) if via else first_running(spec, spec.etcd_names())
    if n is None:
        raise EtcdError("no etcd member container is running")
    # spec.tls: the CA and pgha's client certificate, the files mounted in every etcd member.
    # Run again if the engine cut its output short: reads, and deletes (pgha deletes only a stopped
    # member's key and a whole scope's keys, nothing another process re-creates in between: a key
    # deleted twice is deleted).
    again = args[0] in ("endpoint", "get", "del") or args[:2] == ["member", "list"]
    return n.run(["etcdctl", f"--endpoints={endpoints(spec, members)}", f"--command-timeout={command_timeout}",
                  *etcdctl_tls(spec), *args], timeout=timeout, retries_if_lost=2 if again else 0)


def _ok(r: ExecResult, what: str) -> str:
    if not r.ok:
        raise EtcdError(f"etcdctl {what}: {r.tail(1)}")
    return r.out


# ---- parsing (what etcdctl prints, read once) ----


def _host(endpoint: str) -> str:
    return endpoint.removeprefix("http://").removeprefix("https://").split(":")[0]


def parse_health(text: str) -> list[EndpointHealth]:
    """`etcdctl endpoint health -w json`."""
    rows = json.loads(text)
    return [EndpointHealth(str(r.get("endpoint")), bool(r.get("health")), str(r.get("error") or "")) for r in rows]


@dataclass(frozen=True)
class EndpointStatus:
    """One member's answer to `endpoint status`: its own ID, the leader it sees, its DB size."""

    member_id: int  # header.member_id (a uint64: JSON's integer, kept exact)
    leader: int  # 0: no leader seen
    db_size: int | None = None

    @property
    def leads(self) -> bool:
        return bool(self.leader) and self.leader == self.member_id


@dataclass(frozen=True)
class ListedMember:
    """One row of `member list`: its ID, name (empty before its first start) and peer URLs."""

    id: int
    name: str
    peer_urls: tuple[str, ...]


def parse_status(text: str) -> dict[str, EndpointStatus]:
    """`etcdctl endpoint status -w json` as host -> status (unreachable members are absent)."""
    out: dict[str, EndpointStatus] = {}
    for r in json.loads(text) if text.strip() else []:
        st = r.get("Status") or {}
        header = st.get("header") if isinstance(st.get("header"), dict) else {}
        db = st.get("dbSize")
        out[_host(str(r.get("Endpoint", "")))] = EndpointStatus(
            member_id=int(header.get("member_id") or 0), leader=int(st.get("leader") or 0),
            db_size=db if isinstance(db, int) else None)
    return out


def parse_member_list(text: str) -> list[ListedMember]:
    """`etcdctl member list -w json`: the members with ID, name (empty before first start) and peerURLs."""
    return [ListedMember(id=int(m["ID"]), name=str(m.get("name") or ""), peer_urls=tuple(m.get("peerURLs") or []))
            for m in json.loads(text).get("members", [])]


# ---- reading ----


def health(spec: ClusterSpec) -> list[EndpointHealth]:
    r = etcdctl(spec, ["endpoint", "health", "-w", "json"])
    if not r.out.strip():
        # No report at all (the exec ran out of time: TLS handshakes to 0.5-CPU members on a busy
        # machine): ask once more, longer, before calling etcd unhealthy.
        r = etcdctl(spec, ["endpoint", "health", "-w", "json"], command_timeout="5s", timeout=20)
    try:
        return parse_health(r.out)
    except (ValueError, AttributeError):
        raise EtcdError(f"etcdctl gave no health report: {r.tail(1)}") from None


def healthy_by_member(spec: ClusterSpec) -> dict[str, bool]:
    rows = {_host(r.endpoint): r.healthy for r in health(spec)}
    return {m: rows.get(spec.address(m), False) for m in spec.etcd_names()}


def _describe(rows: list[EndpointHealth]) -> str:
    return ", ".join(f"{r.endpoint}={'ok' if r.healthy else r.error or 'down'}" for r in rows)


@task(name="wait-etcd-healthy")
def wait_healthy(spec: ClusterSpec, timeout: float = 60) -> list[EndpointHealth]:
    """Wait until every etcd member reports healthy (quorum alone is not enough at bootstrap)."""
    return wait_for(
        "every etcd member healthy",
        lambda: health(spec),
        lambda rows: len(rows) == spec.etcd_members and all(r.healthy for r in rows),
        timeout=timeout,
        interval=0.3,
        describe=_describe,
        logs=lambda: node(spec, spec.etcd_names()[0]).logs(tail=15),
    )


def leader_member(spec: ClusterSpec) -> str:
    """The etcd member currently leading the raft group."""
    r = etcdctl(spec, ["endpoint", "status", "-w", "json"])
    try:
        status = parse_status(r.out)
    except (ValueError, AttributeError):
        raise EtcdError(f"etcdctl gave no status: {r.tail(1)}") from None
    for m in spec.etcd_names():
        if (st := status.get(spec.address(m))) is not None and st.leads:
            return m
    raise EtcdError("no etcd leader found")


def _status(spec: ClusterSpec) -> dict[str, EndpointStatus]:
    """`endpoint status` by member address ({} when none answered); asked once more, longer, when no
    member said it leads (TLS handshakes to 0.5-CPU members on a busy machine outlast 2 s)."""
    status: dict[str, EndpointStatus] = {}
    for command_timeout, timeout in (("2s", 10), ("5s", 20)):
        try:
            status = parse_status(etcdctl(spec, ["endpoint", "status", "-w", "json"], command_timeout=command_timeout,
                                          timeout=timeout).out)
        except (ValueError, AttributeError):
            status = {}  # unreachable members are reported by the health rows
        if any(st.leads for st in status.values()):
            break
    return status


def audit_members(spec: ClusterSpec) -> list[EtcdMember]:
    """Every member's health, leadership and DB size (for the health audit)."""
    return observe(spec, members=True).members or []


def observe(spec: ClusterSpec, members: bool = False) -> EtcdObs:
    """The endpoints' health and, with `members`, each member's leadership and DB size (the audit)."""
    if not members:
        return EtcdObs(health=health(spec))
    # Both calls wait out the command timeout on a dead member: ask them at once.
    with ThreadPoolExecutor(max_workers=2) as pool:
        status_call = pool.submit(_status, spec)
        health_rows = health(spec)
        status = status_call.result()
    rows = {_host(r.endpoint): r for r in health_rows}
    found: list[EtcdMember] = []
    for m in spec.etcd_names():
        host = spec.address(m)
        h, st = rows.get(host), status.get(host)
        found.append(EtcdMember(
            member=m, healthy=bool(h and h.healthy), error=(h.error if h else "no answer")[:160],
            is_leader=st is not None and st.leads, db_size=st.db_size if st is not None else None,
        ))
    return EtcdObs(health=health_rows, members=found)


def member_ids(spec: ClusterSpec, via: str, members: list[str]) -> dict[str, int]:
    """etcd member IDs by member name. A member added but never started has no name yet
    (an interrupted replacement): it is recognised by its peer URL."""
    rows = parse_member_list(_ok(etcdctl(spec, ["member", "list", "-w", "json"], via=via, members=members,
                                         command_timeout="5s", timeout=20), "member list"))
    by_peer = {peer_url(spec, m): m for m in spec.etcd_names()}
    out: dict[str, int] = {}
    for m in rows:
        name = m.name or next((by_peer[u] for u in m.peer_urls if u in by_peer), "")
        if name:
            out[name] = m.id
    return out


def peer_url(spec: ClusterSpec, member: str) -> str:
    return f"{scheme(spec)}://{spec.address(member)}:{layout.ETCD_PEER_PORT}"


# ---- membership ----


def move_leader(spec: ClusterSpec, leader: str, to_id: int) -> None:
    """Hand the raft leadership from `leader` to the member with `to_id` (no election gap)."""
    _ok(etcdctl(spec, ["move-leader", f"{to_id:x}"], via=leader, members=[leader], command_timeout="5s",
                timeout=20), "move-leader")


def remove_member(spec: ClusterSpec, via: str, others: list[str], member_id: int) -> None:
    _ok(etcdctl(spec, ["member", "remove", f"{member_id:x}"], via=via, members=others, command_timeout="5s",
                timeout=20), "member remove")


def add_member(spec: ClusterSpec, via: str, others: list[str], member: str) -> None:
    _ok(etcdctl(spec, ["member", "add", member, f"--peer-urls={peer_url(spec, member)}"], via=via, members=others,
                command_timeout="5s", timeout=20), "member add")


# ---- Patroni's keys ----


def scope_prefix(spec: ClusterSpec) -> str:
    return f"{layout.PATRONI_NAMESPACE}/{spec.scope}/"


def delete_member_key(spec: ClusterSpec, member: str) -> None:
    """Remove a stopped node's member key at once instead of waiting out its TTL."""
    _ok(etcdctl(spec, ["del", f"{scope_prefix(spec)}members/{member}"]), "del member key")


def delete_scope_keys(spec: ClusterSpec) -> None:
    """Delete every Patroni key of the scope (leader, members, config, initialize, history…)."""
    _ok(etcdctl(spec, ["del", "--prefix", scope_prefix(spec)], timeout=20), f"del {scope_prefix(spec)}")


def start_members(spec: ClusterSpec) -> list[str]:
    """Start every stopped etcd member container of the scope (a site that comes back); the ones started."""
    engines = docker_hosts.engines(spec)
    started = []
    for m in spec.etcd_names():
        eng = engines.of(m)
        if not eng.running(spec.container(m)) and eng.start(spec.container(m)):
            started.append(spec.container(m))
    return started


def follow_in_config(spec: ClusterSpec, standby_cluster: dict[str, object]) -> bool:
    """Patroni's dynamic configuration in etcd given `standby_cluster`, written while no Patroni of the
    scope runs (Patroni reads it from etcd when it starts, before its own cached copy); False when
    etcd holds no configuration for the scope (a Patroni started then would act on its cache)."""
    key = f"{scope_prefix(spec)}config"
    text = _ok(etcdctl(spec, ["get", "--print-value-only", key]), f"get {key}").strip()
    if not text:
        return False
    config = json.loads(text)
    config["standby_cluster"] = standby_cluster
    _ok(etcdctl(spec, ["put", key, json.dumps(config, separators=(",", ":"))]), f"put {key}")
    return True


# ---- users, roles and auth (stack/etcd_auth.py says who may do what) ----

AUTH_SUBDIR = "etcd-auth"  # in an etcd member's config dir: the passwords etcdctl reads on stdin, while it runs


def _running_member(spec: ClusterSpec) -> str:
    for m in spec.etcd_names():
        if node(spec, m).running():
            return m
    raise EtcdError("no etcd member container is running")


def _names(r: ExecResult) -> set[str]:
    return {line.strip() for line in r.out.splitlines() if line.strip()}


def ensure_users(spec: ClusterSpec, secrets: Secrets) -> int:
    """Create or update every etcd user and role of `stack.etcd_auth` (auth on or off); the number
    of etcdctl calls. Passwords reach etcdctl on stdin from a 0600 file in the member's config
    directory (never argv or env), removed when done. No-op with TLS off (auth stays off)."""
    if not etcd_auth.enabled(spec):
        return 0
    via = _running_member(spec)
    existing_users = _names(etcdctl(spec, ["user", "list"], via=via, command_timeout="5s", timeout=20))
    existing_roles = _names(etcdctl(spec, ["role", "list"], via=via, command_timeout="5s", timeout=20))
    steps = etcd_auth.setup_steps(spec, existing_users, existing_roles)
    d = config_dir(spec.scope, via) / AUTH_SUBDIR
    try:
        for u in etcd_auth.users(spec):
            if (pw := u.password(secrets)) is not None:
                write_private(d / u.name, pw + "\n")
        docker_hosts.sync_config(spec, via)
        for step in steps:
            cmd = step.args
            if step.password_of is not None:  # etcdctl reads the password on stdin
                pw_file = f"{layout.CONFIG_MOUNT}/{AUTH_SUBDIR}/{step.password_of}"
                r = node(spec, via).run(["sh", "-c", 'f="$1"; shift; exec "$@" < "$f"', "etcdctl-stdin", pw_file,
                                         "etcdctl", f"--endpoints={endpoints(spec)}", "--command-timeout=5s",
                                         *etcdctl_tls(spec), *cmd], timeout=20)
            else:
                r = etcdctl(spec, cmd, via=via, command_timeout="5s", timeout=20)
            _ok(r, " ".join(cmd[:2]))
    finally:
        for f in d.glob("*") if d.is_dir() else []:
            f.unlink(missing_ok=True)
        docker_hosts.sync_config(spec, via)
    return len(steps)


def scope_is_empty(spec: ClusterSpec) -> bool:
    """No Patroni key of the scope exists yet: no Patroni node has ever used this etcd."""
    r = etcdctl(spec, ["get", scope_prefix(spec), "--prefix", "--keys-only", "--limit=1"], command_timeout="5s",
                timeout=20)
    return not _ok(r, "get").strip()


def parse_leader_key(out: str, prefix: str) -> LeaderKeyObs:
    """`etcdctl get --prefix <scope prefix> -w json`: the leader key, its lease, its holder's member key's lease."""
    keys: dict[str, tuple[str, int]] = {}
    for kv in json.loads(out or "{}").get("kvs") or []:
        k = base64.b64decode(kv["key"]).decode(errors="replace")
        keys[k.removeprefix(prefix)] = (base64.b64decode(kv.get("value", "")).decode(errors="replace"),
                                        int(kv.get("lease") or 0))
    if "leader" not in keys:
        return LeaderKeyObs(holder=None)
    holder, lease = keys["leader"]
    member = keys.get(f"members/{holder}")
    return LeaderKeyObs(holder=holder, lease=lease, holder_member_lease=member[1] if member else None)


def leader_key(spec: ClusterSpec) -> LeaderKeyObs:
    """Patroni's leader key as etcd holds it (for the audit's `etcd.leader_key` row). Read again for
    up to two of Patroni's loops when it looks wrong: Patroni moves its keys to a new session one
    after the other."""
    def read() -> LeaderKeyObs:
        r = etcdctl(spec, ["get", "--prefix", scope_prefix(spec), "-w", "json"], command_timeout="5s", timeout=20)
        return parse_leader_key(_ok(r, "get"), scope_prefix(spec))

    obs = read()
    deadline = time.monotonic() + 2 * int(dcs_config(spec).get("loop_wait") or 10) + 2
    while leader_key_verdict(obs) and time.monotonic() < deadline:
        time.sleep(1)
        obs = read()
    return obs


def auth_enabled(spec: ClusterSpec) -> bool:
    """Whether etcd's authentication is on (`etcdctl auth status`, pgha's client certificate)."""
    out = _ok(etcdctl(spec, ["auth", "status"], command_timeout="5s", timeout=20), "auth status")
    on = etcd_auth.auth_status_on(out)
    if on is None:
        raise EtcdError(f"etcdctl auth status: unexpected answer {out.strip()[:120]!r}")
    return on


class AuthOutcome(StrEnum):
    OFF = "off: TLS is off"
    ENABLED = "enabled: users created, auth switched on"
    KEPT = "on: users and passwords checked"
    LEGACY = ("off: a cluster made without etcd auth keeps running without it (no rolling path; the audit's "
              "etcd.auth row warns; a rebuild moves it: pgha restore --into NEW-SCOPE)")


@task(name="ensure-etcd-auth", **RETRY_TRANSIENT)  # idempotent: it lists what exists first
def ensure_auth(spec: ClusterSpec) -> AuthOutcome:
    """etcd's users, roles and authentication (`stack.etcd_auth`), before any Patroni node is placed.

    A new cluster (no Patroni key yet): users and roles, then auth on, then the marker that
    gives Patroni and the fencer their passwords (`cluster_secrets`). A cluster with auth on:
    users, passwords and auth made to match the state directory. A cluster whose Patroni nodes already
    run without etcd credentials (made by an older pgha) is left as it is: switching auth on
    under them would cut every node from etcd at once (see docs/threat-model.md).
    """
    if not etcd_auth.enabled(spec):
        return AuthOutcome.OFF
    marker = etcd_auth_marker(spec.scope)
    if not marker.exists() and not scope_is_empty(spec):
        return AuthOutcome.LEGACY
    ensure_users(spec, load_or_create(secrets_file(spec.scope)))
    # Idempotent (pgha's certificate has the root role); run every time, so an etcd recreated
    # empty (`down --volumes`, then `up`) gets it back.
    _ok(etcdctl(spec, ["auth", "enable"], command_timeout="5s", timeout=20), "auth enable")
    existed = marker.exists()
    write_private(marker, "etcd authentication switched on by pgha\n")
    return AuthOutcome.KEPT if existed else AuthOutcome.ENABLED
