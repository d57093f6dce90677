"""The mechanics of a blue/green major upgrade, shared by its moves (`flows.major_upgrade`).

What the pre-check reads, how the clients' HAProxy is pointed at one side or fenced, which
containers join which network while both sides run, and how one side is fenced until the other
has applied everything it committed. The decisions are `stack.major` (pure).
"""

from __future__ import annotations

import time
import uuid

from flows.steps.ops import note
from stack import major
from stack.errors import PghaError, StateError
from stack.major import MajorFacts
from stack.spec import SUITE_FOR_MAJOR, ClusterSpec
from stack.wait import wait_for
from tasks import docker_hosts, haproxy, patroni, pg_logical, postgres
from tasks.cluster_health import cluster_status
from tasks.host.generations import major_state_file
from tasks.host.secrets import cluster_secrets
from tasks.host.state import config_dir, write_private


def leader(spec: ClusterSpec) -> str:
    lead = patroni.cluster_view(spec).leader()
    if lead is None:
        raise StateError(f"cluster {spec.scope} has no leader (see `pgha status --scope {spec.scope}`)")
    return lead.name


def gather_facts(blue: ClusterSpec, target: int) -> MajorFacts:
    """What the pre-check judges; read-only."""
    st = cluster_status(blue)
    facts = MajorFacts(healthy=st.healthy, problem=st.problems[0] if st.problems else "",
                       current_major=blue.postgres_version, target_major=target)
    if not st.healthy or target not in SUITE_FOR_MAJOR or target <= blue.postgres_version:
        return facts
    lead = leader(blue)
    dbs = pg_logical.databases(blue, lead)
    facts.current_major = pg_logical.server_major(blue, lead)
    facts.tables_without_key = pg_logical.tables_without_key(blue, lead, dbs)
    facts.large_objects = pg_logical.large_objects(blue, lead, dbs)
    facts.data_bytes = pg_logical.data_bytes(blue, lead)
    facts.free_bytes = pg_logical.free_bytes(blue, lead)
    facts.wal_level = pg_logical.wal_level(blue, lead)
    try:
        green = major.green_spec(blue, target)
    except PghaError as exc:
        facts.ports_problem = str(exc)
        return facts
    eng = docker_hosts.engines(green).default
    facts.green_scope_free = not eng.scope_has_resources(green.scope) or major_state_file(blue.scope).exists()
    if not eng.host_ports_of(green.scope):
        ports = (green.ports.rw, green.ports.ro, green.ports.stats, *((green.ports.pool,) if green.runs_pooler else ()))
        busy = [p for p in ports if not docker_hosts.port_is_free(p)]
        if busy:
            facts.ports_problem = (f"port(s) {', '.join(map(str, busy))} (blue's + major.green_port_offset "
                                   f"{blue.major.green_port_offset}) are in use; change the offset in the spec")
    # The image: pgha builds its own when missing (converge's ensure_image); a build failure
    # happens before the cutover and removes green, leaving blue untouched.
    return facts


def major_preflight(blue: ClusterSpec, target: int, replica_identity_full: bool) -> major.Precheck:
    """Refuse (StateError, one line) before anything changes; the pre-check's notes otherwise."""
    verdict = major.precheck(gather_facts(blue, target), replica_identity_full)
    if not verdict.ok:
        raise StateError(f"major upgrade refused: {verdict.refusal}")
    return verdict


# ---- routing the clients' HAProxy ----


def route(blue: ClusterSpec, to: ClusterSpec | None) -> None:
    """Point the clients' HAProxy (blue's container, the clients' ports) at `to`'s nodes; None fences writes.

    A plain function, not a Prefect task: it runs inside the write gap, where a task run's
    bookkeeping (a few hundred ms on a busy machine) is time clients cannot write.
    """
    text = major.routed_haproxy_cfg(blue, to)
    write_private(config_dir(blue.scope, blue.haproxy_member) / "haproxy.cfg", text)
    haproxy.reload(blue)


def wait_writable_on(blue: ClusterSpec, want_major: int, timeout: float) -> float:
    """Wait until the clients' R/W port reaches a writable primary of `want_major`; when it did (monotonic)."""
    secrets = cluster_secrets(blue.scope)

    def probe() -> tuple[int, bool]:
        return postgres.major_and_read_only(blue, secrets)

    wait_for(f"the R/W port {blue.ports.rw} to reach a writable PostgreSQL {want_major}", probe,
             lambda v: v == (want_major, False), timeout=timeout, interval=0.05)
    return time.monotonic()


def connect_networks(blue: ClusterSpec, green: ClusterSpec) -> None:
    """While green copies: green's nodes join blue's network, the clients' HAProxy joins green's.

    Each cluster's pg_hba admits only its own subnet, and Docker's DNS answers with an address
    on a network both containers share: so exactly one side's nodes may be on both networks at
    a time (green's now, for green -> blue; blue's after the cutover, `swap_networks`).
    """
    eng = docker_hosts.engines(blue).default
    eng.connect(blue.container(blue.haproxy_member), green.network)
    for m in green.node_names():
        eng.connect(green.container(m), blue.network)


def swap_networks(blue: ClusterSpec, green: ClusterSpec) -> None:
    """At the cutover, once green no longer subscribes to blue: blue's nodes reach green (reverse way)."""
    eng = docker_hosts.engines(blue).default
    for m in green.node_names():
        if eng.attached(green.container(m), blue.network):
            eng.disconnect(green.container(m), blue.network)
    for m in blue.node_names():
        eng.connect(blue.container(m), green.network)


def unswap_networks(blue: ClusterSpec, green: ClusterSpec) -> None:
    """Back to blue: blue's nodes leave green's network, so the clients' HAProxy reaches them on blue's."""
    eng = docker_hosts.engines(blue).default
    for m in blue.node_names():
        if eng.attached(blue.container(m), green.network):
            eng.disconnect(blue.container(m), green.network)


def fence_and_catch_up(src: ClusterSpec, dst: ClusterSpec, dbs: list[str], s_lead: str, d_lead: str) -> None:
    """`src` read-only with no client session; wait until `dst` applied everything `src` committed."""
    token = uuid.uuid4().hex
    ended = pg_logical.fence(src, s_lead, dbs, token)
    wait_for(f"{dst.scope} to apply everything {src.scope} committed",
             lambda: pg_logical.markers_seen(dst, d_lead, dbs, token), major.caught_up,
             timeout=src.major.cutover_timeout_s, interval=0.05)
    pg_logical.set_sequences(dst, d_lead, pg_logical.sequence_values(src, s_lead, dbs))
    note(f"{src.scope} fenced ({ended} session(s) ended); {dst.scope} caught up; sequences copied")
