"""Patroni administration for rolling changes: member tags, dynamic config, restarts, versions.

Reads and writes go through the node itself (`docker exec`: curl / patronictl / psql on the
Unix socket), like `tasks.patroni`; patronictl takes the REST credentials from the node's own
patroni.yml, so no password crosses the host boundary or a command line.
"""

from __future__ import annotations

import json

import yaml

from stack import render, topology
from stack.errors import PatroniError, PostgresError
from stack.rolling import Setting
from stack.secrets import Secrets
from stack.spec import ClusterSpec
from stack.state import config_dir, write_private
from tasks import docker_engine as de
from tasks import patroni

PATRONI_YML = "/run/pgha/patroni.yml"
OUT_TAGS = {"nofailover": True, "noloadbalance": True, "nosync": True}


def raw_cluster(spec: ClusterSpec) -> dict[str, object]:
    return patroni._get(spec, "/cluster")[1]  # noqa: SLF001 - the one GET helper of tasks.patroni


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
    return dict(patroni.member_status(spec, member).get("tags") or {})  # type: ignore[call-overload]


def out_of_service(tags: dict[str, object]) -> bool:
    return all(bool(tags.get(k)) for k in OUT_TAGS)


def server_version(spec: ClusterSpec, member: str) -> int | None:
    v = patroni.member_status(spec, member).get("server_version")
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
    cfg = patroni._get(spec, "/config")[1]  # noqa: SLF001
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
    return bool(patroni.member_status(spec, member).get("pending_restart", False))


def planned_node(spec: ClusterSpec, member: str, image: str, subnet: str, secrets: Secrets) -> topology.Planned:
    return topology.patroni_node(spec, member, image, subnet, secrets)
