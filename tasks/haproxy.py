"""HAProxy: backend states from its stats CSV, read through the stats port on 127.0.0.1."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from stack import tls
from stack.audit_obs import Backend
from stack.errors import HaproxyError
from stack.layout import CONFIG_MOUNT, HAPROXY_ADMIN_SOCKET, PATRONI_API_PORT
from stack.render import scheme
from stack.spec import ClusterSpec
from tasks.docker_hosts import engines, sync_config
from tasks.node_exec import NodeExec, node

HAPROXY_USER = "haproxy"  # HAProxy's own user: it owns the admin socket and process 1
RUN_CFG = "/run/pgha/haproxy.cfg"  # the copy HAProxy runs with (stack/image/entrypoint.sh)
BACKENDS = ("primary", "replicas")  # the `listen` sections of haproxy.cfg (stack/render.py)


def parse_stats(text: str) -> list[dict[str, str]]:
    """HAProxy's stats CSV (`/;csv`) as one dict per proxy/server row, keyed by column name.

    The header line starts with `# ` and every line ends with a comma, so each row also
    has an empty-named column; values are kept as the strings HAProxy wrote (`status` may
    read `UP`, `DOWN`, `MAINT (resolution)`, `no check`).
    """
    return list(csv.DictReader(io.StringIO(text.removeprefix("# "))))


def stats_rows(spec: ClusterSpec) -> list[dict[str, str]]:
    """HAProxy's stats CSV (127.0.0.1:<stats>), one dict per proxy/server row.

    Many hosts: the stats port is on the hosts, not this machine's loopback; the first HAProxy
    whose host answers is asked from inside its container.
    """
    if spec.multi_host:
        from tasks.docker_hosts import engines
        from tasks.node_exec import NodeExec

        for engine in engines(spec).placed(spec.haproxy_member):
            n = NodeExec(engine, spec.container(spec.haproxy_member))
            if not n.running():
                continue
            r = n.run(["curl", "-fsS", "--max-time", "3", f"http://localhost:{spec.ports.stats}/;csv"], timeout=5)
            if r.ok:
                return parse_stats(r.out)
        raise HaproxyError("no HAProxy of the cluster's hosts answers its stats port")
    url = f"http://127.0.0.1:{spec.ports.stats}/;csv"
    try:
        # trust_env=False: a proxy set in the environment must never carry a loopback call.
        resp = httpx.get(url, timeout=3.0, trust_env=False)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        raise HaproxyError(f"HAProxy stats on 127.0.0.1:{spec.ports.stats} unreachable: {exc}") from None
    return parse_stats(resp.text)


def _servers(rows: list[dict[str, str]]) -> list[tuple[str, str, dict[str, str]]]:
    """(backend, server, row) for the server rows of pgha's two backends."""
    return [(r.get("pxname", ""), r.get("svname", ""), r) for r in rows
            if r.get("pxname", "") in BACKENDS and r.get("svname", "") not in ("FRONTEND", "BACKEND")]


def backend_states(spec: ClusterSpec) -> dict[str, dict[str, str]]:
    """{'primary': {'pg-1': 'UP', ...}, 'replicas': {...}} as HAProxy sees them."""
    states: dict[str, dict[str, str]] = {px: {} for px in BACKENDS}
    for px, sv, row in _servers(stats_rows(spec)):
        states[px][sv] = row.get("status", "")
    return states


def audit_backends(spec: ClusterSpec) -> tuple[dict[str, Backend], dict[str, Backend]]:
    """(primary, replicas) servers with their status and UP->DOWN transition counts."""
    found: dict[str, dict[str, Backend]] = {px: {} for px in BACKENDS}
    for px, sv, row in _servers(stats_rows(spec)):
        chk = row.get("chkdown") or "0"
        found[px][sv] = Backend(status=row.get("status", ""), chkdown=int(chk) if chk.isdigit() else 0)
    return found["primary"], found["replicas"]


def _haproxies(spec: ClusterSpec) -> list[NodeExec]:
    """Every HAProxy of the cluster: the one container, or (many hosts) the one on each host."""
    return [NodeExec(e, spec.container(spec.haproxy_member)) for e in engines(spec).placed(spec.haproxy_member)]


def reload(spec: ClusterSpec) -> None:
    """Check the mounted haproxy.cfg, then reload HAProxy in place (no session dropped).

    HAProxy runs in master-worker mode (`-W`): SIGUSR2 makes the master start new workers on
    the new file while old workers serve their existing connections until they close.
    """
    sync_config(spec, spec.haproxy_member)  # many hosts: the new file into every HAProxy's config volume
    # One HAProxy, or (many hosts) the one on every host: each sees the file just pushed.
    # Each step may run again when a busy engine cuts its output short (seen in the lab while a
    # new node was cloning on the same host): checking and copying the file are idempotent, and
    # a second SIGUSR2 is one more reload of the same file, which keeps the old workers' sessions.
    for n in _haproxies(spec):
        r = n.run(["haproxy", "-c", "-q", "-f", f"{CONFIG_MOUNT}/haproxy.cfg"], retries_if_lost=2)
        if not r.ok:
            raise HaproxyError(f"the new haproxy.cfg does not validate: {r.tail(2)}")
        # HAProxy (the haproxy user) reads its private copy (stack/image/entrypoint.sh): refresh it.
        r = n.run(["install", "-o", "haproxy", "-g", "haproxy", "-m", "0600", f"{CONFIG_MOUNT}/haproxy.cfg",
                   RUN_CFG], user="root", retries_if_lost=2)
        if not r.ok:
            raise HaproxyError(f"copying the new haproxy.cfg failed: {r.tail(1)}")
        r = n.run(["kill", "-USR2", "1"], user=HAPROXY_USER, retries_if_lost=2)
        if not r.ok:
            raise HaproxyError(f"reloading HAProxy failed: {r.tail(1)}")


# Inside HAProxy's container: poll the candidate's Patroni /leader every 50 ms and, the moment
# it answers 200 (it holds the leader lock: the old leader has demoted and released it), send
# one line of runtime-API commands. Not /primary: Patroni turns that to 200 only after its
# once-a-second check of pg_controldata, up to a second after the promotion.
# $1 candidate host, $2 attempts, $3 the commands.
def _route_script(spec: ClusterSpec) -> str:
    # spec.tls: Patroni's API over https, verified with the cluster CA (HAProxy's user's copy, entrypoint.sh).
    ca = f"--cacert {tls.CA} " if spec.tls.enabled else ""
    return (
        f'i=0; until curl -fsS {ca}-o /dev/null --max-time 0.3 "{scheme(spec)}://$1:{PATRONI_API_PORT}/leader" '
        '2>/dev/null; do i=$((i+1)); [ "$i" -ge "$2" ] && exit 3; sleep 0.05; done; '
        f'printf "%s\\n" "$3" | socat -t 2 stdio "unix-connect:{HAPROXY_ADMIN_SOCKET}"'
    )


def runtime(spec: ClusterSpec, commands: list[str]) -> str:
    """Send runtime-API commands (one line, `;`-separated) to HAProxy's admin socket; its answer."""
    line = ";".join(commands)
    r = node(spec, spec.haproxy_member).run(
        ["sh", "-c", f'printf "%s\\n" "$1" | socat -t 2 stdio "unix-connect:{HAPROXY_ADMIN_SOCKET}"', "sh", line],
        user=HAPROXY_USER, timeout=5)
    if not r.ok:
        raise HaproxyError(f"HAProxy runtime API: {r.tail(1)}")
    _check_answer(r.out)
    return r.out


def _check_answer(out: str) -> None:
    bad = [ln.strip() for ln in out.splitlines() if ln.strip()]
    if bad:  # a successful `set server` prints nothing
        raise HaproxyError(f"HAProxy runtime API refused: {bad[0][:200]}")


def route_commands(primary: str, others: list[str]) -> list[str]:
    """Runtime-API commands that make `primary` the only server up in the R/W backend."""
    return [f"set server primary/{primary} health up",
            *(f"set server primary/{m} health down" for m in others)]


def backend_states_each(spec: ClusterSpec) -> dict[str, dict[str, dict[str, str]]]:
    """backend_states as each HAProxy sees it, by engine (host) name; many hosts: every host's
    HAProxy is asked from inside its container ({} for one that does not answer)."""
    if not spec.multi_host:
        return {"local": backend_states(spec)}
    out: dict[str, dict[str, dict[str, str]]] = {}
    for n in _haproxies(spec):
        r = n.run(["curl", "-fsS", "--max-time", "3", f"http://localhost:{spec.ports.stats}/;csv"], timeout=5)
        states: dict[str, dict[str, str]] = {px: {} for px in BACKENDS}
        if r.ok:
            for px, sv, row in _servers(parse_stats(r.out)):
                states[px][sv] = row.get("status", "")
        out[n.engine.name] = states if r.ok else {}
    return out


def route_primary(spec: ClusterSpec, candidate: str, others: list[str], timeout: float,
                  give_up: Callable[[], bool] = lambda: False) -> float:
    """Route R/W to `candidate` the moment its Patroni holds the leader lock; seconds waited.

    PostgreSQL may still be finishing its promotion then: the caller waits until the R/W
    port answers writable (`tasks.postgres.wait_writable`) before it lets the pooler go.

    The wait runs in HAProxy's container in slices of about 5 s (one `docker exec` each:
    starting one can be slow on a busy host), and `give_up` (the switchover request failed)
    is looked at between slices. Health checks keep running: if
    the candidate were not the primary after all, the next check would take it out again.
    Many hosts: every host's HAProxy polls and routes at once (one thread each), reaching the
    candidate's Patroni at its host's address (a container name resolves on one engine only).
    """
    started = time.monotonic()
    # Only servers HAProxy has (a scale in progress may differ from the spec): the runtime API
    # would answer "No such server." for the others.
    known = set(backend_states(spec)["primary"])
    if candidate not in known:
        raise HaproxyError(f"HAProxy's R/W backend has no server {candidate}; routing left to the health checks")
    cmds = ";".join(route_commands(candidate, [m for m in others if m in known]))
    proxies = _haproxies(spec)
    if len(proxies) == 1:
        _route_one(spec, proxies[0], candidate, cmds, started, timeout, give_up)
    else:
        with ThreadPoolExecutor(len(proxies), thread_name_prefix="route") as pool:
            futures = [pool.submit(_route_one, spec, n, candidate, cmds, started, timeout, give_up) for n in proxies]
            errors = [exc for f in futures if (exc := f.exception()) is not None]
        if errors:
            raise errors[0]
    return time.monotonic() - started


def _route_one(spec: ClusterSpec, n: NodeExec, candidate: str, cmds: str, started: float, timeout: float,
               give_up: Callable[[], bool]) -> None:
    """One HAProxy: poll the candidate's /leader from its container, then send the runtime commands."""
    while True:
        r = n.run(["sh", "-c", _route_script(spec), "sh", spec.address(candidate), "100", cmds], user=HAPROXY_USER,
                  timeout=20)
        if r.ok:
            _check_answer(r.out)
            return
        if r.code != 3:
            raise HaproxyError(f"routing {candidate} through HAProxy's runtime API failed: {r.tail(1)}")
        if give_up():
            raise HaproxyError(f"{candidate} never became the primary; R/W routing left to the health checks")
        if time.monotonic() - started > timeout:
            raise HaproxyError(f"{candidate} did not answer as the primary within {timeout:g}s; "
                               "R/W routing left to the health checks")
