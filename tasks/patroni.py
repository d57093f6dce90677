"""Patroni: its REST API (GET/PATCH/POST returning status and parsed JSON), the only place it is touched.

Host-side code never reaches a node's address: it asks a node to call its own API on
localhost with curl (`NodeExec`). Unsafe methods need the REST credentials; curl reads them
from `/etc/pgha/patroni.curl`, a 0600 file in the member's config directory (bind-mounted, or pushed into the member's
config volume on a host's engine), so
no password is ever on a command line. What Patroni answers is parsed once here into
`stack.cluster` models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from stack import layout, render, tls
from stack.cluster import ClusterView, Member, MemberRole, MemberStatus, TimelineSwitch, assess
from stack.errors import PatroniError
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks._prefect import RETRY_TRANSIENT, task
from tasks.docker_hosts import sync_config
from tasks.host.secrets import cluster_secrets
from tasks.host.state import config_dir, write_private
from tasks.node_exec import NodeExec, node

AUTH_FILE = "patroni.curl"  # in the member's config dir, seen at /etc/pgha/patroni.curl
OUT_TAGS = {"nofailover": True, "noloadbalance": True, "nosync": True}


@dataclass(frozen=True)
class Reply:
    """One REST answer: HTTP status and the body (parsed JSON when it is JSON, else text)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def message(self) -> str:
        text = self.body if isinstance(self.body, str) else json.dumps(self.body)
        return text.strip().splitlines()[-1][:200] if text.strip() else f"HTTP {self.status}"


def parse_cluster(payload: dict[str, object]) -> ClusterView:
    """Patroni's /cluster JSON as a ClusterView (members sorted by name)."""
    members: list[Member] = []
    for raw in payload.get("members", []) or []:  # type: ignore[union-attr]
        m = dict(raw)  # type: ignore[call-overload]
        try:
            role = MemberRole(str(m.get("role")))
        except ValueError:
            role = MemberRole.UNKNOWN
        lag = m.get("lag")
        members.append(Member(
            name=str(m.get("name")),
            role=role,
            state=str(m.get("state")),
            timeline=int(m["timeline"]) if isinstance(m.get("timeline"), int) else None,
            lag=int(lag) if isinstance(lag, int) else None,
            pending_restart=bool(m.get("pending_restart", False)),
        ))
    return ClusterView(members=sorted(members, key=lambda x: x.name), paused=bool(payload.get("pause", False)))


def parse_member_status(payload: dict[str, Any]) -> MemberStatus:
    """Patroni's /patroni JSON (a member's own view) as a MemberStatus."""

    def text(key: str) -> str | None:
        v = payload.get(key)
        return None if v is None else str(v)

    v = payload.get("server_version")
    return MemberStatus(
        state=text("state"),
        role=text("role"),
        postmaster_start_time=text("postmaster_start_time"),
        server_version=int(v) if isinstance(v, int) else None,
        pending_restart=bool(payload.get("pending_restart", False)),
        failsafe_mode_is_active=bool(payload.get("failsafe_mode_is_active", False)),
        tags=dict(payload.get("tags") or {}),
    )


def _parse_reply(out: str) -> Reply:
    body, _, code = out.rpartition("\n")
    status = int(code) if code.strip().isdigit() else 0
    try:
        return Reply(status, json.loads(body))
    except ValueError:
        return Reply(status, body)


def _ensure_auth(spec: ClusterSpec, member: str, secrets: Secrets | None = None) -> None:
    s = secrets or cluster_secrets(spec.scope)
    # curl's config syntax: the value quoted, backslash and quote escaped.
    value = f"{layout.RESTAPI_USER}:{s.restapi}".replace("\\", "\\\\").replace('"', '\\"')
    text = f'user = "{value}"\n'
    if spec.tls.enabled:  # unsafe endpoints also need a client certificate from the cluster CA
        text += f'cert = "{tls.ROOT_MEMBER_CERT}"\nkey = "{tls.ROOT_MEMBER_KEY}"\n'
    write_private(config_dir(spec.scope, member) / AUTH_FILE, text)
    sync_config(spec, member)  # many hosts: curl reads it through the member's config volume


def request(spec: ClusterSpec, member: str, method: str, path: str, body: dict[str, Any] | None = None,
            timeout: int = 5) -> Reply:
    """One call to `member`'s own REST API; raises PatroniError only when it cannot be asked."""
    n = node(spec, member)
    cmd = ["curl", "-sS", "--max-time", str(timeout), "-X", method, "-w", "\n%{http_code}"]
    if spec.tls.enabled:
        cmd += ["--cacert", tls.ROOT_CA]
    if method != "GET":
        _ensure_auth(spec, member)
        cmd += ["-K", f"{layout.CONFIG_MOUNT}/{AUTH_FILE}", "-H", "Content-Type: application/json",
                "--data-binary", json.dumps(body or {})]
    r = n.run([*cmd, f"{render.scheme(spec)}://localhost:{layout.PATRONI_API_PORT}{path}"], timeout=timeout + 5,
              retries_if_lost=2 if method == "GET" else 0)  # a read may be asked again
    if not r.ok:
        raise PatroniError(f"{member}'s Patroni API does not answer {method} {path}: {r.tail(1)}")
    return _parse_reply(r.out)


def get_json(spec: ClusterSpec, member: str, path: str, timeout: int = 3) -> dict[str, Any]:
    reply = request(spec, member, "GET", path, timeout=timeout)
    if not isinstance(reply.body, dict):
        raise PatroniError(f"{member}'s Patroni API gave no JSON for {path} (HTTP {reply.status})")
    return reply.body


def _any_get(spec: ClusterSpec, path: str) -> tuple[str, dict[str, Any]]:
    """GET a cluster-wide endpoint through the first running node that answers; (member, JSON)."""
    for member in spec.node_names():
        if not node(spec, member).running():
            continue
        try:
            return member, get_json(spec, member, path)
        except PatroniError:
            continue
    raise PatroniError(f"no Patroni node answers {path}")


# ---- reading ----


def cluster_view(spec: ClusterSpec) -> ClusterView:
    """The cluster as Patroni sees it: the first running node's /cluster, or, when that view
    lacks an expected member, the most complete view among the running nodes.

    Each node answers from its own cache of the DCS, and one node's cache can lag behind (a
    CI run saw the demoted leader's view lack the new leader for minutes): a view missing a
    member is checked against the others before anyone waits on it.
    """
    expected = set(spec.node_names())
    best: ClusterView | None = None
    for member in spec.node_names():
        if not node(spec, member).running():
            continue
        try:
            view = parse_cluster(get_json(spec, member, "/cluster"))
        except PatroniError:
            continue
        if expected <= {m.name for m in view.members}:
            return view
        if best is None or len(view.members) > len(best.members):
            best = view
    if best is None:
        raise PatroniError("no Patroni node answers /cluster")
    return best


def member_status(spec: ClusterSpec, member: str) -> MemberStatus:
    """The member's own view (/patroni): state, role, postmaster_start_time, tags, pending_restart."""
    return parse_member_status(get_json(spec, member, "/patroni", timeout=2))


def member_tags(spec: ClusterSpec, member: str) -> dict[str, object]:
    """The tags the member itself runs with."""
    return dict(member_status(spec, member).tags)


def out_of_service(tags: dict[str, object]) -> bool:
    return all(bool(tags.get(k)) for k in OUT_TAGS)


def server_version(spec: ClusterSpec, member: str) -> int | None:
    return member_status(spec, member).server_version


def pending_restart(spec: ClusterSpec, member: str) -> bool:
    return member_status(spec, member).pending_restart


def dynamic_config(spec: ClusterSpec) -> dict[str, Any]:
    """Patroni's dynamic configuration as stored in etcd ({} when there is none yet).

    Patroni answers 502 with no body when the DCS holds no configuration (a cluster that
    adopted a restored data directory).
    """
    for member in spec.node_names():
        if not node(spec, member).running():
            continue
        try:
            reply = request(spec, member, "GET", "/config", timeout=3)
        except PatroniError:
            continue
        if isinstance(reply.body, dict) and reply.ok:
            return reply.body
        if reply.status == 502:
            return {}
    raise PatroniError("no Patroni node answers /config")


def _answering(spec: ClusterSpec) -> str:
    """A member whose API answers (for calls any member can take)."""
    return _any_get(spec, "/patroni")[0]


def dynamic_parameters(spec: ClusterSpec) -> dict[str, object]:
    pg = dynamic_config(spec).get("postgresql") or {}
    return dict(pg.get("parameters") or {})


def probe_code(spec: ClusterSpec, member: str, path: str, attempts: int = 2) -> int | None:
    """HTTP code of one of a member's own endpoints (/liveness, /readiness); None if silent.

    A silent answer is asked once more: on a loaded host Patroni's API can miss one 3 s deadline,
    and an audit must not call a node dead for that.
    """
    for _ in range(attempts):
        if not node(spec, member).running():
            return None
        try:
            reply = request(spec, member, "GET", path, timeout=3)
        except PatroniError:
            continue
        if reply.status:
            return reply.status
    return None


def rejoin_method(spec: ClusterSpec, member: str, since_unix: float) -> str:
    """How a node came back, read from its Patroni log: pg_rewind, reinitialized or plain restart."""
    n = node(spec, member)
    if n.engine.find_container(n.container) is None:
        return "unknown"
    text = n.logs(since=since_unix)
    if "running pg_rewind" in text:
        return "pg_rewind"
    if "reinitializ" in text or "removing data directory" in text:
        return "reinitialized"
    return "restart (no rewind needed)"


@task(name="wait-patroni-whole")
def wait_whole(spec: ClusterSpec, timeout: float = 180) -> ClusterView:
    """Wait for one leader and every replica streaming (and a sync standby in sync mode)."""
    return wait_for(
        "one Patroni leader and every replica streaming",
        lambda: cluster_view(spec),
        lambda v: assess(v, spec).ok,
        timeout=timeout,
        interval=0.5,
        describe=lambda v: assess(v, spec).reason,
        logs=lambda: "\n".join(node(spec, m).logs(tail=8) for m in spec.node_names()),
    )


# ---- acting ----


def _require(reply: Reply, what: str) -> Reply:
    if not reply.ok:
        raise PatroniError(f"{what} refused by Patroni (HTTP {reply.status}): {reply.message()}")
    return reply


def reload_member(spec: ClusterSpec, member: str) -> None:
    """POST /reload: Patroni re-reads its configuration and its REST API certificate (certs rotate)."""
    _require(request(spec, member, "POST", "/reload", timeout=10), f"reloading {member}")


def switchover(spec: ClusterSpec, leader: str, candidate: str) -> str:
    """Planned switchover (POST /switchover to the leader); Patroni answers once it is done."""
    reply = request(spec, leader, "POST", "/switchover", {"leader": leader, "candidate": candidate}, timeout=60)
    return _require(reply, f"switchover {leader} -> {candidate}").message()


def patch_config(spec: ClusterSpec, patch: dict[str, Any]) -> None:
    """PATCH the dynamic configuration (a JSON merge patch); raises PatroniError when refused.

    The new configuration Patroni answers with is not handed back: no caller reads it, and
    `dynamic_config` is the one reader of that shape."""
    _require(request(spec, _answering(spec), "PATCH", "/config", patch, timeout=15), "changing the dynamic configuration")


def edit_parameters(spec: ClusterSpec, params: dict[str, str]) -> None:
    """Set PostgreSQL parameters in the dynamic configuration."""
    patch_config(spec, {"postgresql": {"parameters": params}})


def replace_config(spec: ClusterSpec, config: dict[str, Any]) -> None:
    """Write a whole dynamic configuration (PUT /config), for a cluster that has none."""
    _require(request(spec, _answering(spec), "PUT", "/config", config, timeout=15), "writing the dynamic configuration")


def restart_member(spec: ClusterSpec, member: str, only_if_pending: bool = False) -> str:
    """Restart one member's PostgreSQL through Patroni (it stays in the cluster); returns Patroni's words."""
    body = {"restart_pending": True} if only_if_pending else {}
    reply = request(spec, member, "POST", "/restart", body, timeout=180)
    return _require(reply, f"restart of {member}").message()


def restart_pending(spec: ClusterSpec) -> list[str]:
    """Restart every member that reports pending_restart (replicas first); the members restarted."""
    view = cluster_view(spec)
    todo = sorted((m for m in view.members if m.pending_restart), key=lambda m: (m.is_leader, m.name))
    for m in todo:
        restart_member(spec, m.name, only_if_pending=True)
    return [m.name for m in todo]


def reinitialize(spec: ClusterSpec, member: str) -> str:
    """Wipe a replica's data and clone it again from the leader (POST /reinitialize)."""
    reply = request(spec, member, "POST", "/reinitialize", {"force": True}, timeout=30)
    return _require(reply, f"reinitialize of {member}").message()


# ---- the node's own configuration file ----


def patroni_text(spec: ClusterSpec, member: str, subnet: str, secrets: Secrets, out_of_service: bool) -> str:
    """The node's patroni.yml, with the tags that take it out of R/O, failover and sync when asked."""
    cfg = render.patroni_config(spec, member, subnet, secrets)
    if out_of_service:
        cfg["tags"] = {**cfg["tags"], **OUT_TAGS}
    return yaml.safe_dump(cfg, sort_keys=False)


def write_and_reload(spec: ClusterSpec, member: str, text: str) -> None:
    """Install a new patroni.yml in a running node and make Patroni re-read it (SIGHUP).

    The host file (bind-mounted read-only at /etc/pgha) is what a recreated container starts
    with; the entrypoint copies it to the private /run/pgha once, so a live node needs the copy
    refreshed before the reload.
    """
    write_private(config_dir(spec.scope, member) / "patroni.yml", text)
    sync_config(spec, member)  # many hosts: into the member's config volume (a stopped container's too)
    n: NodeExec = node(spec, member)
    if not n.running():
        return
    # Run again if the engine cut its output short: the same file installed twice and a second
    # SIGHUP make Patroni re-read the same configuration.
    r = n.run(["sh", "-c", f"install -o postgres -g postgres -m 0600 {layout.CONFIG_MOUNT}/patroni.yml "
                           f"{layout.PATRONI_YML} && kill -HUP 1"], user="root", retries_if_lost=2)
    if not r.ok:
        raise PatroniError(f"reloading {member}'s Patroni configuration failed: {r.tail(1)}")


# ---- maintenance mode and history (the operator's verbs) ----


def set_paused(spec: ClusterSpec, paused: bool) -> None:
    """Patroni's maintenance mode on or off (PATCH /config {"pause": ...}, as `patronictl pause` does)."""
    patch_config(spec, {"pause": paused})


def history(spec: ClusterSpec) -> list[TimelineSwitch]:
    """The cluster's timeline switches (GET /history): timeline, lsn, reason, time, new leader, oldest first."""
    _, rows = _any_get_list(spec, "/history")
    out = []
    for r in rows:
        if not isinstance(r, list) or len(r) < 3:
            continue
        out.append(TimelineSwitch(timeline=int(r[0]), lsn=int(r[1]), reason=str(r[2]),
                                  time=str(r[3]) if len(r) > 3 and r[3] else "",
                                  new_leader=str(r[4]) if len(r) > 4 and r[4] else ""))
    return out


def _any_get_list(spec: ClusterSpec, path: str) -> tuple[str, list[Any]]:
    """GET an endpoint that answers a JSON list, through the first running node that answers."""
    for member in spec.node_names():
        if not node(spec, member).running():
            continue
        try:
            reply = request(spec, member, "GET", path, timeout=3)
        except PatroniError:
            continue
        if isinstance(reply.body, list):
            return member, reply.body
    raise PatroniError(f"no Patroni node answers {path}")


@task(name="ensure-failsafe", **RETRY_TRANSIENT)
def ensure_failsafe(spec: ClusterSpec) -> str:
    """Patroni's failsafe_mode in the dynamic configuration as the spec says (a no-op when it already is)."""
    current = bool(dynamic_config(spec).get("failsafe_mode", False))
    if current == spec.failsafe_mode:
        return "unchanged"
    patch_config(spec, {"failsafe_mode": spec.failsafe_mode})
    from prefect import get_run_logger  # inside a flow only: read-only verbs never load Prefect

    get_run_logger().info("failsafe_mode set to %s", spec.failsafe_mode)
    return "changed"
