"""Fencing decisions, pure: may the watcher delete the leader key of a member the engine says died?
And what does it tell HAProxy then?

The fencer (tasks/fencer_agent.py, running in the cluster's `fencer` container) feeds these
functions what the Docker engine and etcd answered and does what they decide. The rule is
correctness first: the key is deleted only when the engine confirms the container is not
running (state and pid) AND, in one etcd transaction, the key still holds that member's name
at the revision just read. Anything else - still running, paused, no answer, key gone or
changed, etcd unreachable - leaves the key to Patroni's ttl.

A confirmed death also takes the member out of HAProxy's backends through the runtime API (a
drain, which cuts nothing; a moment later the servers are marked down and handed back to the
health checks), and once the leader key names another member that member is routed for R/W at
once; anything not confirmed by the engine is left to HAProxy's health checks.

Standard library only: this file is shipped into the fencer container next to the agent
(which has no pgha installed), so it must not import pydantic or other pgha modules.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

EVENTS = ("die", "kill", "oom", "pause")  # engine events that may mean a member died (pause: logged why not)


class Outcome(str, Enum):  # noqa: UP042 - plain str Enum: the agent may run on an older Python
    FENCED = "fenced"
    NOT_LEADER = "skipped: not leader"
    STILL_RUNNING = "skipped: still running"
    KEY_CHANGED = "skipped: key changed"
    ETCD_UNREACHABLE = "skipped: etcd unreachable"
    ENGINE_UNREACHABLE = "skipped: engine did not confirm"


@dataclass(frozen=True)
class EngineVerdict:
    """What the engine's inspection of a container says about its death."""

    dead: bool
    reason: str


def engine_verdict(inspect: dict[str, Any] | None) -> EngineVerdict:
    """Dead only when the engine reports the container not running, not paused, not restarting, pid 0.

    `inspect` is the engine's `GET /containers/<id>/json` answer (None: no answer). A paused
    (frozen) container is alive: it resumes with its leader key and must not be fenced.
    """
    if inspect is None:
        return EngineVerdict(False, "engine did not answer the inspection")
    state = inspect.get("State")
    if not isinstance(state, dict):
        return EngineVerdict(False, "inspection has no State")
    pid = state.get("Pid")
    if state.get("Paused"):
        return EngineVerdict(False, f"paused (frozen, pid {pid})")
    if state.get("Running") or state.get("Restarting"):
        return EngineVerdict(False, f"{state.get('Status', 'running')} (pid {pid})")
    if pid not in (0, None):
        return EngineVerdict(False, f"not running but pid {pid}")
    return EngineVerdict(True, f"{state.get('Status', 'exited')}, exit code {state.get('ExitCode')}, "
                               f"oom {bool(state.get('OOMKilled'))}")


def leader_key(namespace: str, scope: str) -> str:
    """Patroni's leader key: <namespace>/<scope>/leader."""
    return f"{namespace.rstrip('/')}/{scope}/leader"


def events_query(scope: str) -> str:
    """The one `GET /events` filter the agent sends (urlencoded), and the only one its socket proxy
    lets through: container events of this cluster's Patroni nodes."""
    filters = {"type": ["container"], "event": list(EVENTS),
               "label": [f"pgha.cluster={scope}", "pgha.role=patroni"]}
    return "filters=" + _quote_plus(json.dumps(filters))


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _quote_plus(text: str) -> str:
    """Form encoding, as urllib.parse.quote_plus (stack modules do not import urllib)."""
    return "".join(c if c in _UNRESERVED else "+" if c == " " else "".join(f"%{b:02X}" for b in c.encode())
                   for c in text)


def auth_request(user: str, password: str) -> dict[str, Any]:
    """Body of the gateway's `POST /v3/auth/authenticate`."""
    return {"name": user, "password": password}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text.encode()).decode(errors="replace")


def range_request(key: str) -> dict[str, Any]:
    """Body of etcd's v3 JSON gateway `POST /v3/kv/range` for one key (linearizable read)."""
    return {"key": _b64(key)}


@dataclass(frozen=True)
class KeyState:
    """The leader key as read: its holder (None when absent) and its mod_revision."""

    holder: str | None
    mod_revision: int = 0


def parse_range(response: dict[str, Any]) -> KeyState:
    """The leader key from a `/v3/kv/range` answer (no `kvs`: the key does not exist)."""
    kvs = response.get("kvs") or []
    if not kvs:
        return KeyState(None)
    kv = kvs[0]
    return KeyState(_unb64(str(kv.get("value", ""))), int(kv.get("mod_revision", 0)))


@dataclass(frozen=True)
class Plan:
    """What to do after reading the key: a transaction to send, or an outcome already."""

    txn: dict[str, Any] | None
    outcome: Outcome | None
    detail: str


def plan(member: str, key: str, read: KeyState | None) -> Plan:
    """The compare-and-delete to send when `member` holds the key; otherwise why not.

    `read` None: etcd did not answer the read. The transaction compares BOTH the value (the
    member's name) and the mod_revision just read, so a key that another member took, or that
    Patroni rewrote in between, is never deleted.
    """
    if read is None:
        return Plan(None, Outcome.ETCD_UNREACHABLE, "no etcd member answered the read")
    if read.holder is None:
        return Plan(None, Outcome.NOT_LEADER, "no leader key")
    if read.holder != member:
        return Plan(None, Outcome.NOT_LEADER, f"leader key names {read.holder}")
    k = _b64(key)
    txn = {
        "compare": [
            {"target": "VALUE", "key": k, "result": "EQUAL", "value": _b64(member)},
            {"target": "MOD", "key": k, "result": "EQUAL", "mod_revision": str(read.mod_revision)},
        ],
        "success": [{"request_delete_range": {"key": k}}],
        "failure": [],
    }
    return Plan(txn, None, f"leader key names {member} at revision {read.mod_revision}")


def txn_outcome(response: dict[str, Any] | None) -> tuple[Outcome, str]:
    """Outcome of the compare-and-delete from etcd's `/v3/kv/txn` answer (None: no answer).

    The JSON gateway leaves `succeeded` out when it is false.
    """
    if response is None:
        return Outcome.ETCD_UNREACHABLE, "no etcd member answered the transaction"
    if response.get("succeeded"):
        deleted = 0
        for r in response.get("responses") or []:
            deleted += int((r.get("response_delete_range") or {}).get("deleted", 0))
        return Outcome.FENCED, f"leader key deleted ({deleted} key) at revision {response.get('header', {}).get('revision')}"
    return Outcome.KEY_CHANGED, "the key changed between read and delete (value or revision)"


# ---- HAProxy's runtime API: what the watcher tells HAProxy (tasks/fencer_agent.py sends it) ----
BACKENDS = ("primary", "replicas")  # the `listen` sections of haproxy.cfg (stack/render.py)


SERVERS_STATE = "show servers state"  # the runtime-API command whose answer `parse_servers_state` reads


def parse_servers_state(text: str) -> list[dict[str, str]]:
    """`show servers state`'s answer: a version line, a `# be_id be_name ...` header, one line per server."""
    header: list[str] = []
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        if line.startswith("# "):
            header = line[2:].split()
        elif header and line.strip():
            rows.append(dict(zip(header, line.split(), strict=False)))
    return rows


def servers_of(rows: list[dict[str, str]], container: str) -> list[tuple[str, str]]:
    """(backend, server) of pgha's backends whose server HAProxy resolves by `container`'s name.

    By the name HAProxy resolves (`srv_fqdn`), not the member's name alone: a server that now
    points elsewhere (blue's HAProxy routed to green's nodes during a major upgrade) is never
    taken out for a container of the same member name that died.
    """
    return [(r["be_name"], r["srv_name"]) for r in rows
            if r.get("be_name") in BACKENDS and r.get("srv_fqdn") == container and r.get("srv_name")]


def takeout_commands(servers: list[tuple[str, str]]) -> list[str]:
    """Runtime-API commands that take the servers of a container the engine confirmed dead out
    of rotation at once, without cutting anything.

    `state drain` sends no new connection to them; `disable health` pauses their checks. Both
    leave the streams open to them alone: a stream still connecting to the dead address then
    ends with `timeout connect`, an error its client sees at once and reconnects on. Marking
    the server down (`health down`, `state maint`, or its own checks failing) would run
    `on-marked-down shutdown-sessions`, and HAProxy 3.0 leaves a stream it cuts while still
    connecting half-closed: its client waits out its own connect timeout (docs/benchmarks.md).
    `handback_commands` undoes both once no such stream can be left.
    """
    return [cmd for backend, server in servers
            for cmd in (f"set server {backend}/{server} state drain", f"disable health {backend}/{server}")]


def handback_commands(servers: list[tuple[str, str]]) -> list[str]:
    """Runtime-API commands that hand the servers of a dead container back to the health checks.

    Sent once HAProxy's `timeout connect` has passed since `takeout_commands`: the checks run
    again, the server is marked down (it takes traffic again only after `rise` good checks, so
    there is nothing to undo when the member comes back), whatever is still open to it is cut,
    and `state ready` ends the drain.
    """
    return [cmd for backend, server in servers
            for cmd in (f"enable health {backend}/{server}", f"set server {backend}/{server} health down",
                        f"shutdown sessions server {backend}/{server}", f"set server {backend}/{server} state ready")]


def drained_by_takeout(rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    """(backend, server) of pgha's backends left in forced drain (`srv_admin_state` bit 0x08).

    Only the watcher drains a server, so one found drained when it starts is a take-out whose
    hand-back its previous run did not send (it stopped in between).
    """
    out = []
    for r in rows:
        try:
            drained = int(r.get("srv_admin_state", "0")) & SRV_ADMF_FDRAIN
        except ValueError:
            continue
        if r.get("be_name") in BACKENDS and r.get("srv_name") and drained:
            out.append((r["be_name"], r["srv_name"]))
    return out


SRV_ADMF_FDRAIN = 0x08  # HAProxy's forced-drain admin flag (`set server ... state drain`), in `show servers state`


def route_commands(leader: str) -> list[str]:
    """Runtime-API commands that route R/W to the member that now holds the leader lock.

    The health checks stay the judge: a server that does not answer /primary is taken out
    again after `fall` failed checks.
    """
    return [f"set server primary/{leader} health up"]


def server_up(rows: list[dict[str, str]], backend: str, server: str) -> bool | None:
    """Whether HAProxy has the server running (`srv_op_state` 2); None when it has no such server."""
    row = next((r for r in rows if r.get("be_name") == backend and r.get("srv_name") == server), None)
    return None if row is None else row.get("srv_op_state") == "2"


def api_line(commands: list[str]) -> bytes:
    """One line for the runtime API: commands separated by `;`, newline-terminated."""
    return (";".join(commands) + "\n").encode()


def api_refusals(answer: str) -> list[str]:
    """What HAProxy refused in its answer (a successful `set server` prints nothing)."""
    return [ln.strip() for ln in answer.splitlines() if ln.strip()]


def new_leader(dead: str, read: KeyState | None) -> str | None:
    """The member to route once the leader key names someone other than the dead member."""
    if read is None or read.holder is None or read.holder == dead:
        return None
    return read.holder


@dataclass
class Counters:
    """What the watcher did, by outcome; written to its stats file for the audit."""

    started_at: float = 0.0
    heartbeat_at: float = 0.0
    events: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)

    def count(self, decision: dict[str, Any]) -> None:
        key = str(decision["outcome"])
        self.by_outcome[key] = self.by_outcome.get(key, 0) + 1
        self.last = decision

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class FencerConfig:
    """The agent's configuration, rendered from the spec (a JSON file mounted into the container).

    `etcd_urls` and `etcd_tls` are built in one place (`stack.topology.fencer_config`): when the
    hardening issue gives etcd client certificates, `etcd_tls` carries their paths and the URLs
    become https, without the agent changing.
    """

    scope: str
    leader_key: str
    etcd_urls: list[str]
    docker_url: str
    stats_file: str
    etcd_tls: dict[str, str] | None = None
    timeout_s: float = 1.0
    # HAProxy's runtime-API sockets the agent reaches ([]: none, health checks alone route).
    haproxy_sockets: list[str] = field(default_factory=list)
    route_wait_s: float = 30.0  # how long to watch for a new leader to route after a death
    # How long the route is held: Patroni answers /primary only from its next loop after the
    # promotion (up to loop_wait later), and until then HAProxy's checks would take the new
    # leader out again. While the key still names it, it is marked up again when they do.
    route_hold_s: float = 4.0
    # How long after a take-out (drain) its servers are handed back to the health checks:
    # HAProxy's `timeout connect` and a margin, so no stream is still connecting to them then.
    handback_after_s: float = 1.5
    etcd_user: str | None = None  # etcd auth (stack/etcd_auth.py): the agent's user, its password in a file
    etcd_password_file: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FencerConfig:
        return cls(**json.loads(text))
