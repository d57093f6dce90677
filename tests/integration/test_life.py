"""A cluster's life in order, through the real CLI: every operation leaves it in a state the next accepts.

`up` (PostgreSQL 15, 2 nodes, 1 etcd) -> full backup -> minor upgrade (`--updates security`) ->
scale 2 -> 3 -> major upgrade to 17 -> `--finish --yes` under a writer on the clients' port (no
acknowledged write lost; the handover of the clients' ports from blue's HAProxy to green's own
refuses for less than a ceiling) -> audit, status and backup + verify under the cluster's own
name -> PITR into a new scope -> `up` of the user's spec (converges the serving generation) ->
`down --volumes --yes` (both generations gone but the serving one's kept repository) -> `up` is
refused over that repository -> `down --volumes --purge-backups --yes` -> `up` again -> a second
major upgrade of the fresh cluster works.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import time
from pathlib import Path

import docker
import psycopg
import yaml

from stack.secrets import Secrets
from stack.spec import parse_spec
from tasks.host.secrets import load_or_create
from tasks.postgres import ensure_probe_table
from tests.integration.conftest import make_cluster, pgha, remove_scope, up
from tests.support.traffic import measured

SCOPE = "pgha-it-life"
GREEN = f"{SCOPE}-green"
INTO = "pgha-it-life-pitr"
SPEC = {"scope": SCOPE, "nodes": 2, "etcd_members": 1, "postgres_version": 15,
        "ports": {"rw": 27800, "ro": 27801, "stats": 27802, "pool": 27803}, "pooler": {"enabled": False}}  # green while both run: +10
INTO_SPEC = {"scope": INTO, "nodes": 1, "etcd_members": 1, "postgres_version": 17,
             "ports": {"rw": 27820, "ro": 27821, "stats": 27822, "pool": 27823}, "pooler": {"enabled": False}}
HANDOVER_CEILING_S = 15.0  # generous: the handover measures ~1-3 s here (recreate one HAProxy)


def ok(res: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert res.returncode == 0, f"exit {res.returncode}:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return dict(json.loads(res.stdout)) if res.stdout.lstrip().startswith("{") else {}


def labelled(engine: docker.DockerClient, scope: str) -> dict[str, list[str]]:
    flt = {"label": f"pgha.cluster={scope}"}
    return {"containers": sorted(str(x.name) for x in engine.containers.list(all=True, filters=flt)),
            "networks": sorted(str(x.name) for x in engine.networks.list(filters=flt)),
            "volumes": sorted(str(x.name) for x in engine.volumes.list(filters=flt))}


def sql(secrets: Secrets, query: str, port: int = 27800) -> list[tuple[object, ...]]:
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=secrets.superuser,
                         dbname="postgres", connect_timeout=5, autocommit=True) as conn:
        cur = conn.execute(query)
        return list(cur.fetchall()) if cur.description else []


def clean(engine: docker.DockerClient, state: Path) -> None:
    for s in (SCOPE, GREEN, INTO):
        remove_scope(engine, s)
        for d in [state / s, *state.glob(f"{s}.removed-*")] if state.is_dir() else []:
            shutil.rmtree(d, ignore_errors=True)


def test_a_life_in_order(engine: docker.DockerClient, base_env: dict[str, str], tmp_path: Path) -> None:
    state = Path(base_env["PGHA_STATE_DIR"])
    clean(engine, state)
    c = make_cluster(engine, base_env, tmp_path, SPEC)
    env, t = c.env, time.monotonic()
    started = t
    laps: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal t
        laps[name] = round(time.monotonic() - t, 1)
        t = time.monotonic()

    try:
        up(c)
        secrets = load_or_create(state / SCOPE / "secrets.json", env={})
        ensure_probe_table(parse_spec(SPEC), secrets)  # before the upgrade: logical replication copies no DDL
        sql(secrets, "create table items (id serial primary key, v text); "
                     "insert into items (v) select 'v' || g from generate_series(1, 200) g")
        lap("up")
        ok(pgha(env, "backup", "--scope", SCOPE, "--type", "full", "--no-verify", "--json"))
        lap("backup")
        ok(pgha(env, "upgrade", "--scope", SCOPE, "--updates", "security", "--json"))
        lap("minor_upgrade")
        ok(pgha(env, "scale", "--nodes", "3", "--scope", SCOPE, "--json"))
        lap("scale")
        r = ok(pgha(env, "upgrade", "--major", "17", "--scope", SCOPE, "--json"))
        assert (r["version_after"], r["phase"]) == (17, "on-green"), r
        lap("major_upgrade")

        # The clients' port keeps taking writes while --finish hands it to green's own HAProxy.
        with measured(parse_spec(SPEC), secrets) as traffic:
            r = ok(pgha(env, "upgrade", "--major", "--finish", "--yes", "--scope", SCOPE, "--json"))
        lap("finish")
        assert r["phase"] == "finished" and r["version_after"] == 17, r
        assert traffic.lost == [], f"acknowledged writes lost: {traffic.lost[:10]}"
        assert traffic.writes_acked > 20, traffic
        gap = float(r["handover_gap_s"])  # type: ignore[arg-type]
        laps["handover_gap_s"], laps["client_write_gap_s"] = gap, traffic.write_gap_s
        assert gap < HANDOVER_CEILING_S and traffic.write_gap_s < HANDOVER_CEILING_S, (gap, traffic)
        # Nothing of blue's generation is left, nothing attached to green's network but green's own.
        assert labelled(engine, SCOPE) == {"containers": [], "networks": [], "volumes": []}
        ports = engine.containers.get(f"{GREEN}-haproxy").attrs["HostConfig"]["PortBindings"]
        assert {int(b[0]["HostPort"]) for b in ports.values()} == {27800, 27801, 27802}, ports
        attached = engine.networks.get(f"{GREEN}-net").attrs["Containers"] or {}
        assert all(v["Name"].startswith(GREEN) for v in attached.values()), attached
        assert json.loads((state / SCOPE / "serving.json").read_text())["generation"] == GREEN

        # The cluster's own name still names it: audit, status, backup + verify.
        res = pgha(env, "audit", "--scope", SCOPE)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
        res = pgha(env, "status", "--scope", SCOPE)
        assert res.returncode == 0 and f"cluster {SCOPE} (generation {GREEN}, PostgreSQL 17)" in res.stdout, res.stdout
        r = ok(pgha(env, "backup", "--scope", SCOPE, "--type", "diff", "--json"))
        assert r["verification"]["ok"] is True, r  # type: ignore[index]
        lap("audit_status_backup")

        # PITR of the serving generation's repository into a new scope.
        sql(secrets, "insert into items (v) values ('before')")
        time.sleep(1.5)
        noted = dt.datetime.now(dt.UTC)
        time.sleep(1.5)
        sql(secrets, "insert into items (v) values ('after')")
        into_file = tmp_path / "into.yaml"
        into_file.write_text(yaml.safe_dump(INTO_SPEC))
        try:
            r = ok(pgha(env, "restore", "--scope", SCOPE, "--to", noted.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
                        "--into-spec", str(into_file), "--json"))
            assert r["into"] == INTO, r
            into_secrets = load_or_create(state / INTO / "secrets.json", env={})
            tags = [row[0] for row in sql(into_secrets, "select v from items where v in ('before', 'after')", 27820)]
            assert tags == ["before"], tags
        finally:
            pgha(env, "down", "--volumes", "--purge-backups", "--yes", "--spec", str(into_file))
        lap("pitr")

        # `up` of the user's spec converges the serving generation (their file says 15; scaled to 3).
        c.spec_file.write_text(yaml.safe_dump({**SPEC, "nodes": 3}))
        res = up(c)
        assert GREEN in res.stdout, res.stdout[-2000:]
        assert sql(secrets, "show server_version_num")[0][0].startswith("17")  # type: ignore[union-attr]
        lap("up_after_finish")

        # down --volumes: both generations go; the serving one's repository is kept with its secrets.
        ok(pgha(env, "down", "--volumes", "--yes", "--scope", SCOPE))
        assert labelled(engine, SCOPE) == {"containers": [], "networks": [], "volumes": []}
        assert labelled(engine, GREEN) == {"containers": [], "networks": [], "volumes": [f"{GREEN}-pgbackrest"]}
        assert not (state / SCOPE).exists() and not (state / GREEN).exists()
        assert list(state.glob(f"{GREEN}.removed-*")), sorted(p.name for p in state.iterdir())
        res = pgha(env, "up", "--spec", str(c.spec_file))  # a new cluster would later meet that repository
        assert res.returncode != 0 and f"{GREEN}-pgbackrest" in res.stderr and len(res.stderr.splitlines()) == 1, \
            res.stderr
        ok(pgha(env, "down", "--volumes", "--purge-backups", "--yes", "--spec", str(c.spec_file)))
        assert labelled(engine, GREEN) == {"containers": [], "networks": [], "volumes": []}
        assert not list(state.glob(f"{SCOPE}*")), sorted(p.name for p in state.iterdir())
        lap("down")

        # A new cluster of the same name: nothing the old one left changes what it does (its
        # backups off: green's first backup after the cutover is covered above, and costs a minute).
        c.spec_file.write_text(yaml.safe_dump({**SPEC, "backup": {"enabled": False}}))
        up(c)
        secrets = load_or_create(state / SCOPE / "secrets.json", env={})
        r = ok(pgha(env, "upgrade", "--major", "17", "--scope", SCOPE, "--json"))
        assert (r["version_before"], r["version_after"], r["phase"]) == (15, 17, "on-green"), r
        assert sql(secrets, "show server_version_num")[0][0].startswith("17")  # type: ignore[union-attr]
        lap("second_life")
    finally:
        pgha(env, "down", "--volumes", "--purge-backups", "--yes", "--spec", str(c.spec_file))
        clean(engine, state)
        print(f"life: {laps} (total {time.monotonic() - started:.0f}s)")  # noqa: T201
