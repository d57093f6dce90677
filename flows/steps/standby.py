"""A standby cluster's own steps of `pgha up`: checks against its primary site, the primary's
passwords and CA adopted (stack/site.py); its replication slot on the primary site is kept by
tasks/standby_slot.py."""

from __future__ import annotations

import json
import os
import secrets as _random

from stack import site
from stack.errors import PghaError, StateError
from stack.secrets import ENV_SUPERUSER
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_hosts, patroni, postgres
from tasks.host import app_passwords
from tasks.host.generations import stored_spec
from tasks.host.secrets import ETCD_KEYS, cluster_secrets
from tasks.host.state import secrets_file, write_private
from tasks.host.tls import tls_dir


def _read_json(path: os.PathLike[str]) -> dict[str, str] | None:
    try:
        return {k: str(v) for k, v in json.loads(open(path).read()).items()}  # noqa: SIM115, PTH123
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError):
        raise StateError(f"password file {path} is unreadable or damaged; restore it from a backup") from None


def primary_of(spec: ClusterSpec) -> ClusterSpec:
    """The primary site's stored spec, refused (one line, nothing changed) when it cannot be followed."""
    name = site.primary_scope(spec)
    try:
        primary = stored_spec(name)
    except StateError:
        raise StateError(f"standby_of.scope {name}: no cluster '{name}' was brought up from this machine; bring the "
                         "primary site up first (`pgha up --spec` of its spec)") from None
    if primary.standby_of is not None:
        raise StateError(f"standby_of.scope {name} is itself a standby cluster (of {primary.standby_of.scope}): "
                         "follow the primary site directly")
    return primary


def promoted(spec: ClusterSpec) -> bool:
    """This cluster runs, led by a primary rather than a standby leader (after `pgha site promote`)."""
    try:
        config = patroni.dynamic_config(spec)
    except PghaError:
        return False  # no node answers: a new cluster, or one being brought back
    return bool(config) and not config.get("standby_cluster")


def refuse_unnamed_standby(spec: ClusterSpec) -> None:
    """A running standby cluster brought up from a spec without `standby_of` (the spec file kept from
    before a site switchover) would lose its link: refused, naming the site it follows. Over hosts
    the site is named by the stored spec (the link's `host` is a list of addresses), and only a
    cluster stored as a standby is asked (no Patroni call for every other `pgha up` over hosts)."""
    other = ""
    if spec.multi_host:
        try:
            stored = stored_spec(spec.scope)
        except StateError:
            return  # never brought up from here
        if stored.standby_of is None:
            return
        other = stored.standby_of.scope
    try:
        block = patroni.dynamic_config(spec).get("standby_cluster")
    except PghaError:
        return  # no node answers: a new cluster, or one being brought back
    if block:
        other = other or str(block.get("host", "")).removesuffix("-haproxy") or "another site"
        raise StateError(f"cluster {spec.scope} runs as a standby of {other} (after a site switchover or rebuild) "
                         f"but this spec has no standby_of: add `standby_of: {{scope: {other}}}` to it, or "
                         f"`pgha up --scope {spec.scope}` (the stored spec has it)")


def preflight(spec: ClusterSpec) -> ClusterSpec:
    """Everything a standby cluster needs from its primary site, checked before anything is created."""
    if promoted(spec):
        raise StateError(f"cluster {spec.scope} was promoted to a primary site (its dynamic configuration has no "
                         "standby_cluster): remove standby_of from this spec")
    primary = primary_of(spec)
    for problem in (site.mixed_problem(spec, primary), site.version_problem(spec, primary),
                    site.tls_problem(spec, primary)):
        if problem:
            raise StateError(problem)
    eng = docker_hosts.engines(primary).of(primary.haproxy_member)
    if primary.multi_host:
        if not any(e.running(primary.container(primary.haproxy_member)) for e in docker_hosts.engines(primary).all()):
            raise StateError(f"the primary site {primary.scope} is not running (no {primary.container('haproxy')} "
                             "answers on its hosts): `pgha up` it first")
    elif not eng.network_exists(site.primary_network(spec)) or not eng.running(primary.container(primary.haproxy_member)):
        raise StateError(f"the primary site {primary.scope} is not running (no {primary.container('haproxy')} on "
                         f"network {site.primary_network(spec)}): `pgha up` it first")
    theirs = _read_json(secrets_file(primary.scope))
    if theirs is None:
        raise StateError(f"the primary site {primary.scope} has no password file ({secrets_file(primary.scope)})")
    if problem := site.secrets_problem(theirs, _read_json(secrets_file(spec.scope)), primary.scope):
        raise StateError(problem)
    wanted = os.environ.get(ENV_SUPERUSER)
    if wanted and wanted != theirs.get("superuser"):
        raise StateError(f"{ENV_SUPERUSER} differs from the primary site {primary.scope}'s superuser password: a "
                         f"standby cluster is a physical copy and has the primary's; unset {ENV_SUPERUSER}")
    if spec.tls.enabled:
        mine, ca = tls_dir(spec.scope) / "ca.crt", tls_dir(primary.scope) / "ca.crt"
        if mine.exists() and ca.exists() and mine.read_text() != ca.read_text():
            raise StateError(f"cluster {spec.scope} has a CA of its own but a standby cluster issues its certificates "
                             f"from the primary site {primary.scope}'s CA; bring it up under a new scope")
    return primary


def admit_on_primary(primary: ClusterSpec) -> list[str]:
    """Over hosts: the primary site's running nodes re-read a pg_hba that admits the standby site's
    hosts (stored before this step: `docker_hosts.site_peers`), so the standby can clone and stream;
    the nodes reloaded. On one engine the standby's nodes sit on the primary's network: nothing to do."""
    if not primary.multi_host:
        return []
    peers = docker_hosts.node_subnets(primary)
    secrets = cluster_secrets(primary.scope)
    done: list[str] = []
    want = [a for a in peers.split(",") if a]
    for m in primary.node_names():
        patroni.write_and_reload(primary, m, patroni.patroni_text(primary, m, peers, secrets, False))
        done.append(m)
    if not want:
        return done
    sql = "select distinct address from pg_hba_file_rules where address is not null"
    for m in done:
        wait_for(f"{primary.scope}'s {m} to admit {', '.join(want)} in its pg_hba",
                 lambda m=m: set(postgres.node_sql(primary, m, sql, read=True).split()),
                 lambda seen: set(want) <= seen, timeout=30, interval=0.3)
    return done


def adopt_primary(spec: ClusterSpec, primary: ClusterSpec) -> list[str]:
    """The primary site's catalog passwords (its own REST API and etcd passwords stay this cluster's),
    its declared roles' passwords and its CA, copied once (0600); what was copied."""
    copied: list[str] = []
    mine = secrets_file(spec.scope)
    if not mine.exists():
        theirs = _read_json(secrets_file(primary.scope)) or {}
        own = {k: theirs[k] for k in site.CATALOG_SECRETS}
        own.update({k: _random.token_urlsafe(24) for k in ("restapi", *ETCD_KEYS)})
        mine.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(mine, json.dumps(own))
        copied.append("passwords")
    app_passwords.copy(primary.scope, spec.scope)
    if spec.tls.enabled:
        for name in ("ca.crt", "ca.key"):
            src, dst = tls_dir(primary.scope) / name, tls_dir(spec.scope) / name
            if src.exists() and not dst.exists():
                write_private(dst, src.read_text())
                copied.append(name)
    return copied
