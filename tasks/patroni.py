"""Patroni: the cluster view from its REST API (/cluster), read with curl inside a node.

Host-side code never reaches a node's address; it asks a node to query its own API.
`assess` is the pure decision "is the cluster whole?" and returns a readable reason.
"""

from __future__ import annotations

import json

import yaml
from prefect import task

from stack import render, topology
from stack.cluster import ClusterView, Member, MemberRole, assess
from stack.errors import PatroniError, PostgresError
from stack.layout import PATRONI_API_PORT
from stack.rolling import Setting
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_engine as de
from tasks._prefect import READ_ONLY
from tasks.host.state import config_dir, write_private


def parse_cluster(payload: dict[str, object]) -> ClusterView:
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


def _get(spec: ClusterSpec, path: str) -> tuple[str, dict[str, object]]:
    """GET a Patroni endpoint through the first running node; returns (node, JSON)."""
    for member in spec.node_names():
        name = spec.container(member)
        if not de.running(name):
            continue
        code, out, _ = de.exec_in(name, ["curl", "-sS", "--max-time", "3", f"http://localhost:{PATRONI_API_PORT}{path}"])
        if code == 0 and out.strip():
            try:
                return member, dict(json.loads(out))
            except ValueError:
                continue
    raise PatroniError(f"no Patroni node answers {path}")


def cluster_view(spec: ClusterSpec) -> ClusterView:
    return parse_cluster(_get(spec, "/cluster")[1])


@task(name="wait-patroni-whole", **READ_ONLY)
def wait_whole(spec: ClusterSpec, timeout: float = 180) -> ClusterView:
    """Wait for one leader and every replica streaming (and a sync standby in sync mode)."""
    return wait_for(
        "one Patroni leader and every replica streaming",
        lambda: cluster_view(spec),
        lambda v: assess(v, spec).ok,
        timeout=timeout,
        interval=0.5,
        describe=lambda v: assess(v, spec).reason,
        logs=lambda: "\n".join(de.logs(spec.container(m), tail=8) for m in spec.node_names()),
    )


def switchover(spec: ClusterSpec, leader: str, candidate: str) -> str:
    """Planned switchover through Patroni (patronictl in the leader; REST auth from its config)."""
    code, out, err = de.exec_in(
        spec.container(leader),
        ["patronictl", "-c", "/run/pgha/patroni.yml", "switchover", "--leader", leader,
         "--candidate", candidate, "--force", spec.scope],
        timeout=60,
    )
    text = (out + err).strip()
    if code != 0 or "Switchover failed" in text or "Error" in text:
        last = text.splitlines()[-1] if text else f"exit {code}"
        raise PatroniError(f"switchover {leader} -> {candidate} refused: {last[:200]}")
    return text.splitlines()[-1] if text else ""


def rejoin_method(spec: ClusterSpec, member: str, since_unix: float) -> str:
    """How a node came back, read from its Patroni log: pg_rewind, reinitialized or plain restart."""
    ct = de.find_container(spec.container(member))
    if ct is None:
        return "unknown"
    text = ct.logs(since=int(since_unix)).decode(errors="replace")
    if "running pg_rewind" in text:
        return "pg_rewind"
    if "reinitializ" in text or "removing data directory" in text:
        return "reinitialized"
    return "restart (no rewind needed)"


def member_status(spec: ClusterSpec, member: str) -> dict[str, object]:
    """The member's own view (/patroni), asked inside its container."""
    code, out, _ = de.exec_in(spec.container(member),
                              ["curl", "-sS", "--max-time", "2", f"http://localhost:{PATRONI_API_PORT}/patroni"])
    if code != 0 or not out.strip():
        raise PatroniError(f"{member}'s Patroni API does not answer")
    try:
        return dict(json.loads(out))
    except ValueError:
        raise PatroniError(f"{member}'s Patroni API gave no JSON") from None


def back_since(status: dict[str, object], since_unix: float) -> bool:
    """Has this member's PostgreSQL been (re)started after `since_unix` and is it replicating or leading?"""
    from datetime import datetime

    started = str(status.get("postmaster_start_time") or "")
    try:
        ts = datetime.fromisoformat(started).timestamp()
    except ValueError:
        return False
    return ts >= since_unix and str(status.get("state")) in ("streaming", "running")


def probe_code(spec: ClusterSpec, member: str, path: str, attempts: int = 2) -> int | None:
    """HTTP code of one of a member's own Patroni endpoints (/liveness, /readiness); None if silent.

    A silent answer is asked once more: on a loaded host Patroni's API can miss one 3 s deadline,
    and an audit must not call a node dead for that.
    """
    name = spec.container(member)
    for _ in range(attempts):
        if not de.running(name):
            return None
        code, out, _ = de.exec_in(name, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
                                         f"http://localhost:{PATRONI_API_PORT}{path}"], timeout=8)
        text = out.strip()
        if text.isdigit() and text != "000":
            return int(text)
    return None


# ---- administration for rolling changes: member tags, dynamic config, restarts, versions ----
# Through the node itself (docker exec: curl / patronictl / psql on the Unix socket):
# patronictl takes the REST credentials from the node's own patroni.yml, so no password
# crosses the host boundary or a command line.
PATRONI_YML = "/run/pgha/patroni.yml"
OUT_TAGS = {"nofailover": True, "noloadbalance": True, "nosync": True}


def raw_cluster(spec: ClusterSpec) -> dict[str, object]:
    return _get(spec, "/cluster")[1]


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
    name = spec.container(member)
    if not de.running(name):
        return
    code, out, err = de.exec_in(name, ["sh", "-c", f"install -o postgres -g postgres -m 0600 /etc/pgha/patroni.yml "
                                       f"{PATRONI_YML} && kill -HUP 1"], user="root")
    if code != 0:
        raise PatroniError(f"reloading {member}'s Patroni configuration failed: {(err or out).strip()[:200]}")


def member_tags(spec: ClusterSpec, member: str) -> dict[str, object]:
    """The tags the member itself runs with (/patroni)."""
    return dict(member_status(spec, member).get("tags") or {})  # type: ignore[call-overload]


def out_of_service(tags: dict[str, object]) -> bool:
    return all(bool(tags.get(k)) for k in OUT_TAGS)


def server_version(spec: ClusterSpec, member: str) -> int | None:
    v = member_status(spec, member).get("server_version")
    return int(v) if isinstance(v, int) else None


def patronictl(spec: ClusterSpec, member: str, args: list[str], timeout: int = 90) -> str:
    code, out, err = de.exec_in(spec.container(member), ["patronictl", "-c", PATRONI_YML, *args], timeout=timeout)
    text = (out + err).strip()
    if code != 0 or "Error:" in text or "failed" in text.lower():
        last = text.splitlines()[-1] if text else f"exit {code}"
        raise PatroniError(f"patronictl {args[0]} on {member}: {last[:200]}")
    return text


def edit_parameters(spec: ClusterSpec, via: str, params: dict[str, str]) -> None:
    """PATCH the dynamic configuration's postgresql.parameters (patronictl edit-config)."""
    args = ["edit-config", "--force", "--quiet"]
    for k, v in params.items():
        args += ["--pg", f"{k}={v}"]
    patronictl(spec, via, [*args, spec.scope])


def dynamic_parameters(spec: ClusterSpec) -> dict[str, object]:
    cfg = _get(spec, "/config")[1]
    pg = cfg.get("postgresql") or {}
    return dict(pg.get("parameters") or {})  # type: ignore[union-attr]


def restart_member(spec: ClusterSpec, member: str) -> str:
    """Restart one member's PostgreSQL through Patroni (it stays in the cluster)."""
    return patronictl(spec, member, ["restart", "--force", spec.scope, member], timeout=180)


def psql(spec: ClusterSpec, member: str, sql: str, timeout: int = 15) -> str:
    """Run SQL as postgres over the node's Unix socket (peer auth); returns unaligned output."""
    code, out, err = de.exec_in(spec.container(member),
                                ["psql", "-X", "-q", "-A", "-t", "-h", "/var/run/postgresql", "-d", "postgres",
                                 "-v", "ON_ERROR_STOP=1", "-c", sql], user="postgres", timeout=timeout)
    if code != 0:
        raise PostgresError(f"{member}: {(err or out).strip().splitlines()[-1][:200] if (err or out).strip() else code}")
    return out.strip()


def checkpoint(spec: ClusterSpec, member: str) -> None:
    """CHECKPOINT (a restartpoint on a replica): less WAL to replay when it starts again."""
    psql(spec, member, "CHECKPOINT", timeout=120)


def oldest_transaction_s(spec: ClusterSpec, leader: str) -> float:
    out = psql(spec, leader, "select coalesce(max(extract(epoch from now() - xact_start)), 0) from pg_stat_activity "
                             "where xact_start is not null and pid <> pg_backend_pid() "
                             "and backend_type = 'client backend'")
    return float(out or 0)


def settings(spec: ClusterSpec, member: str, names: list[str]) -> dict[str, Setting]:
    if not names:
        return {}
    # Names passed parse_assignments' [a-z_][a-z0-9_.]* check; quotes doubled all the same.
    lst = ",".join("'" + n.replace("'", "''") + "'" for n in names)
    cols = ("coalesce(json_agg(json_build_object('name', name, 'context', context, 'vartype', vartype, "
            "'min_val', min_val, 'max_val', max_val, 'enumvals', enumvals)), '[]')")
    sql = f"select {cols} from pg_settings where name in ({lst})"  # noqa: S608
    out = psql(spec, member, sql)
    rows = json.loads(out or "[]")
    return {r["name"]: Setting(name=r["name"], context=r["context"], vartype=r["vartype"], min_val=r["min_val"],
                               max_val=r["max_val"], enumvals=list(r["enumvals"] or [])) for r in rows}


def show(spec: ClusterSpec, member: str, name: str) -> str:
    return psql(spec, member, f"select current_setting('{name.replace(chr(39), '')}')")


def pending_restart(spec: ClusterSpec, member: str) -> bool:
    return bool(member_status(spec, member).get("pending_restart", False))


def planned_node(spec: ClusterSpec, member: str, image: str, subnet: str, secrets: Secrets) -> topology.Planned:
    return topology.patroni_node(spec, member, image, subnet, secrets)
