"""The fencing agent: runs inside the cluster's `fencer` container (standard library only).

Not imported by pgha: `tasks.fencer` ships this file and `stack/fencing.py` (as fencing.py)
into the fencer's config directory. It follows the engine's events for the cluster's Patroni
containers through the fencer's GET-only socket proxy; on a `die`, `kill`, `oom` or `pause`
it asks the engine whether the container is really dead and, only then, deletes the scope's
leader key in one etcd transaction that compares the key's value and revision. A confirmed
death also drains the member in HAProxy through its runtime-API socket (marked down a moment
later, once nothing can be left connecting to it), and a thread then
watches the leader key and routes R/W to the member that takes it the moment it does. Every
decision is one JSON line on stdout (the container's log) and a count in the stats file the
audit reads.

    python3 fencer.py fencer.json
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from typing import Any

try:  # in the container: fencing.py next to this file
    import fencing as F  # type: ignore[import-not-found]
except ImportError:  # in the repository (tests, linters)
    from stack import fencing as F

STREAM_IDLE_S = 10.0  # the event stream times out after this much silence: heartbeat, then reconnect
GIVE_UP_S = 60.0  # no engine answer for this long: exit, the restart policy starts a fresh fencer


def log(**fields: Any) -> None:
    print(json.dumps({"t": round(time.time(), 3), **fields}, sort_keys=True), flush=True)


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: the socket proxy of a host-network fencer (`hosts`)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


def _conn(url: str, timeout: float, tls: ssl.SSLContext | None = None) -> tuple[http.client.HTTPConnection, str]:
    """A connection and the path prefix for `url`: http(s)://host:port/prefix or unix:///path/to.sock."""
    u = urllib.parse.urlsplit(url)
    if u.scheme == "unix":
        return UnixHTTPConnection(u.path, timeout), ""
    if u.scheme == "https":
        return http.client.HTTPSConnection(u.hostname or "", u.port or 443, timeout=timeout, context=tls), u.path
    return http.client.HTTPConnection(u.hostname or "", u.port or 80, timeout=timeout), u.path


def etcd_tls(cfg: F.FencerConfig) -> ssl.SSLContext | None:
    """Client certificates for etcd, when the configuration names them (the hardening issue's)."""
    if not cfg.etcd_tls:
        return None
    ctx = ssl.create_default_context(cafile=cfg.etcd_tls.get("ca"))
    if cfg.etcd_tls.get("cert"):
        ctx.load_cert_chain(cfg.etcd_tls["cert"], cfg.etcd_tls.get("key"))
    return ctx


def get_json(base: str, path: str, timeout: float) -> dict[str, Any] | None:
    """GET a JSON document from the engine (through the proxy); None when it does not answer 200."""
    try:
        conn, prefix = _conn(base, timeout)
        conn.request("GET", prefix + path)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return json.loads(body) if resp.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None


_TOKEN: dict[str, str] = {}  # etcd's auth token, kept until etcd refuses it


def _post_once(cfg: F.FencerConfig, tls: ssl.SSLContext | None, path: str, body: dict[str, Any],
               token: str | None) -> tuple[int, dict[str, Any] | None]:
    """(HTTP status of the first member that answered, its JSON on 200); (0, None) when none did."""
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": token} if token else {})}
    for url in cfg.etcd_urls:
        try:
            conn, prefix = _conn(url, cfg.timeout_s, tls)
            conn.request("POST", prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            conn.close()
            if resp.status == 200:
                return 200, json.loads(raw)
            if resp.status in (400, 401, 403):  # refused (auth): another member would say the same
                return resp.status, None
        except (OSError, ValueError, http.client.HTTPException):
            continue
    return 0, None


def authenticate(cfg: F.FencerConfig, tls: ssl.SSLContext | None) -> str | None:
    """A fresh etcd token for the agent's user (None: no user configured, or etcd's auth is off)."""
    _TOKEN.pop("token", None)
    if not cfg.etcd_user or not cfg.etcd_password_file:
        return None
    try:
        with open(cfg.etcd_password_file) as fh:
            password = fh.read().strip()
    except OSError:
        return None
    status, reply = _post_once(cfg, tls, "/v3/auth/authenticate", F.auth_request(cfg.etcd_user, password), None)
    if status == 200 and reply and reply.get("token"):
        _TOKEN["token"] = str(reply["token"])
    return _TOKEN.get("token")


def etcd_post(cfg: F.FencerConfig, tls: ssl.SSLContext | None, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """POST to etcd's v3 JSON gateway, each member in turn; None when none answers 200.

    Reads are linearizable and the transaction needs a quorum, so a member cut off from the
    majority cannot answer either: no quorum means no fencing. With etcd auth on, the agent's
    token goes along; a refused call authenticates again once (tokens expire) and is repeated.
    """
    token = _TOKEN.get("token")
    status, reply = _post_once(cfg, tls, path, body, token)
    if status in (400, 401, 403) and cfg.etcd_user:
        status, reply = _post_once(cfg, tls, path, body, authenticate(cfg, tls))
    return reply if status == 200 else None


def haproxy_api(path: str, commands: list[str], timeout: float) -> str | None:
    """Send one line of runtime-API commands to an HAProxy socket; its answer (None: no answer)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(F.api_line(commands))
            chunks = []
            while True:  # HAProxy closes the connection after the line's answers (non-interactive)
                chunk = s.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    except OSError:
        return None


def take_out(cfg: F.FencerConfig, container: str) -> str:
    """Drain every HAProxy server that resolves to `container`; "ok", or what went wrong.

    Nothing is cut now (`F.takeout_commands` says why); once `handback_after_s` has passed,
    a timer hands the drained servers back to the health checks (`hand_back`).
    """
    problems = []
    for path in cfg.haproxy_sockets:
        state = haproxy_api(path, [F.SERVERS_STATE], cfg.timeout_s)
        if state is None:
            problems.append(f"{path}: no answer")
            continue
        servers = F.servers_of(F.parse_servers_state(state), container)
        if not servers:
            problems.append(f"{path}: no server resolves to {container}")
            continue
        answer = haproxy_api(path, F.takeout_commands(servers), cfg.timeout_s)
        if answer is None:
            problems.append(f"{path}: no answer")
        elif refused := F.api_refusals(answer):
            problems.append(f"{path}: {refused[0][:120]}")
        timer = threading.Timer(cfg.handback_after_s, hand_back, args=(cfg, path, servers, container))
        timer.daemon = True
        timer.start()
    return "; ".join(problems) or "ok"


def hand_back(cfg: F.FencerConfig, path: str, servers: list[tuple[str, str]], container: str) -> None:
    """Mark the drained servers down and end their drain: from here the health checks decide."""
    answer = haproxy_api(path, F.handback_commands(servers), cfg.timeout_s)
    result = "no answer" if answer is None else "; ".join(F.api_refusals(answer))[:200] or "ok"
    log(msg="handed back to the health checks", container=container, haproxy=result,
        servers=[f"{b}/{s}" for b, s in servers])


def hand_back_leftovers(cfg: F.FencerConfig) -> None:
    """At start: hand back the servers a previous run drained and did not hand back (it stopped)."""
    for path in cfg.haproxy_sockets:
        state = haproxy_api(path, [F.SERVERS_STATE], cfg.timeout_s)
        servers = F.drained_by_takeout(F.parse_servers_state(state)) if state is not None else []
        if servers:
            hand_back(cfg, path, servers, "(left drained by a previous run)")


def route_leader(cfg: F.FencerConfig, tls: ssl.SSLContext | None, dead: str) -> None:
    """Watch the leader key after `dead` died; route R/W to the member that takes it, at once.

    Polls every 50 ms for `route_wait_s` (a linearizable read, like the fencing's). The new
    leader may still be finishing its promotion: clients that reach it then are refused and
    reconnect; HAProxy's health checks stay the judge of everything after.
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < cfg.route_wait_s:
        reply = etcd_post(cfg, tls, "/v3/kv/range", F.range_request(cfg.leader_key))
        leader = F.new_leader(dead, F.parse_range(reply) if reply is not None else None)
        if leader is not None:
            result = route(cfg, leader)
            log(msg="routed the leader", dead=dead, leader=leader, haproxy=result,
                wait_ms=round((time.monotonic() - t0) * 1000, 1))
            if result == "ok":
                hold(cfg, tls, leader)
            return
        time.sleep(0.05)
    log(msg="no other leader to route", dead=dead, waited_s=cfg.route_wait_s)


def hold(cfg: F.FencerConfig, tls: ssl.SSLContext | None, leader: str) -> None:
    """Keep `leader` routed for `route_hold_s` while the leader key still names it.

    Patroni's /primary answers 200 only from its first loop after the promotion; until then
    HAProxy's checks fail and, after `fall` of them, take the new leader out again. The lock
    holder is the primary by Patroni's own rule, so it is marked up again when that happens.
    The checks keep running: once the hold ends (or the key names someone else, or etcd does
    not answer) they alone decide, as before.
    """
    t0 = time.monotonic()
    again = 0
    while time.monotonic() - t0 < cfg.route_hold_s:
        time.sleep(0.1)
        reply = etcd_post(cfg, tls, "/v3/kv/range", F.range_request(cfg.leader_key))
        if reply is None or F.parse_range(reply).holder != leader:
            break
        for path in cfg.haproxy_sockets:
            state = haproxy_api(path, [F.SERVERS_STATE + " primary"], cfg.timeout_s)
            if state is not None and F.server_up(F.parse_servers_state(state), "primary", leader) is False:
                haproxy_api(path, F.route_commands(leader), cfg.timeout_s)
                again += 1
    log(msg="held the route", leader=leader, marked_up_again=again,
        held_ms=round((time.monotonic() - t0) * 1000, 1))


def route(cfg: F.FencerConfig, leader: str) -> str:
    """Route R/W to `leader` in every HAProxy whose `primary/<leader>` resolves to its container."""
    container = f"{cfg.scope}-{leader}"  # the spec's container name (ClusterSpec.container)
    problems = []
    for path in cfg.haproxy_sockets:
        state = haproxy_api(path, [F.SERVERS_STATE], cfg.timeout_s)
        if state is None:
            problems.append(f"{path}: no answer")
        elif ("primary", leader) not in F.servers_of(F.parse_servers_state(state), container):
            problems.append(f"{path}: primary/{leader} does not resolve to {container}")
        elif (answer := haproxy_api(path, F.route_commands(leader), cfg.timeout_s)) is None:
            problems.append(f"{path}: no answer")
        elif refused := F.api_refusals(answer):
            problems.append(f"{path}: {refused[0][:120]}")
    return "; ".join(problems) or "ok"


def decide(cfg: F.FencerConfig, tls: ssl.SSLContext | None, event: dict[str, Any]) -> dict[str, Any]:
    """One event in, one decision out (already acted upon)."""
    t0 = time.monotonic()
    attrs = (event.get("Actor") or {}).get("Attributes") or {}
    member = str(attrs.get("pgha.member", ""))
    name = str(attrs.get("name", ""))
    action = str(event.get("Action") or event.get("status") or "")
    seen_ms = round((time.time_ns() - int(event.get("timeNano") or time.time_ns())) / 1e6, 1)
    decision: dict[str, Any] = {"event": action, "member": member, "container": name, "event_age_ms": seen_ms}
    # By name, not id: the container that holds this member's name now must be the dead one.
    verdict = F.engine_verdict(get_json(cfg.docker_url, f"/containers/{name}/json", 2.0))
    decision["inspect_ms"] = round((time.monotonic() - t0) * 1000, 1)
    decision["engine"] = verdict.reason
    if not verdict.dead:
        unreachable = verdict.reason.startswith("engine did not answer")
        decision["outcome"] = (F.Outcome.ENGINE_UNREACHABLE if unreachable else F.Outcome.STILL_RUNNING).value
    else:
        if cfg.haproxy_sockets and name:  # first: a local socket, independent of etcd's answers
            decision["haproxy"] = take_out(cfg, name)
            decision["haproxy_ms"] = round((time.monotonic() - t0) * 1000, 1)
        reply = etcd_post(cfg, tls, "/v3/kv/range", F.range_request(cfg.leader_key))
        p = F.plan(member, cfg.leader_key, F.parse_range(reply) if reply is not None else None)
        decision["key"] = p.detail
        if p.txn is None:
            decision["outcome"] = p.outcome.value if p.outcome else ""
        else:
            outcome, detail = F.txn_outcome(etcd_post(cfg, tls, "/v3/kv/txn", p.txn))
            decision["outcome"], decision["txn"] = outcome.value, detail
    decision["total_ms"] = round((time.monotonic() - t0) * 1000, 1)
    return decision


def _events_path(cfg: F.FencerConfig, since: float) -> str:
    """The events of the cluster's Patroni nodes since `since` (the socket proxy lets no other query through)."""
    return f"/events?{F.events_query(cfg.scope)}&since={since:.9f}"


def write_stats(cfg: F.FencerConfig, counters: F.Counters) -> None:
    counters.heartbeat_at = round(time.time(), 3)
    tmp = cfg.stats_file + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(counters.to_json())
    os.replace(tmp, cfg.stats_file)


def run(cfg: F.FencerConfig) -> None:
    tls = etcd_tls(cfg)
    authenticate(cfg, tls)
    hand_back_leftovers(cfg)
    counters = F.Counters(started_at=round(time.time(), 3))
    since = time.time()
    seen: set[str] = set()
    routing: dict[str, threading.Thread] = {}  # member -> the thread routing the leader after its death
    last_ok = time.monotonic()
    log(msg="fencer started", scope=cfg.scope, leader_key=cfg.leader_key, events=list(F.EVENTS))
    while True:
        write_stats(cfg, counters)
        try:
            conn, prefix = _conn(cfg.docker_url, STREAM_IDLE_S)
            conn.request("GET", prefix + _events_path(cfg, since))
            resp = conn.getresponse()
            if resp.status != 200:
                raise OSError(f"engine events answered HTTP {resp.status}")
            last_ok = time.monotonic()
            while True:
                line = resp.readline()
                if not line:
                    break
                event = json.loads(line)
                key = f"{event.get('id')}/{event.get('Action')}/{event.get('timeNano')}"
                since = max(since, int(event.get("timeNano") or 0) / 1e9)
                if key in seen:  # replayed after a reconnect
                    continue
                seen.add(key)
                counters.events += 1
                decision = decide(cfg, tls, event)
                log(**decision)
                dead = decision["member"]
                if "haproxy" in decision and not (dead in routing and routing[dead].is_alive()):
                    # a confirmed death (its `kill` and its `die` alike): route whoever takes the lock, once
                    routing[dead] = threading.Thread(target=route_leader, args=(cfg, tls, dead), daemon=True)
                    routing[dead].start()
                counters.count(decision)
                write_stats(cfg, counters)
                last_ok = time.monotonic()
        except TimeoutError:
            last_ok = time.monotonic()  # the engine answered; nothing happened for a while
            since = max(since, time.time() - 2)  # replays of the last 2 s are dropped as seen
        except (OSError, ValueError, http.client.HTTPException) as exc:
            log(msg="event stream lost", error=str(exc)[:200])
            if time.monotonic() - last_ok > GIVE_UP_S:
                log(msg="no engine answer for a minute: exiting (the restart policy starts a fresh fencer)")
                sys.exit(1)
            time.sleep(1)
        if len(seen) > 10000:
            seen.clear()


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        run(F.FencerConfig.from_json(fh.read()))
