"""Major upgrade by blue/green through logical replication: the decisions, as pure functions.

Blue is the running cluster; green a new Patroni cluster on the target major (`<scope>-green`,
its own network, volumes, etcd and ports). Green copies blue through a subscription; at
cutover blue's writes stop, green catches up, sequences are copied, a reverse subscription
(green → blue) keeps blue current, and the HAProxy that owns the clients' ports is pointed at
green. Rollback is the same move the other way; finish removes blue.

Everything here is data in, decision out: the flow (`flows/major_upgrade.py`) gathers facts,
asks, acts, and records the phase in `<state>/<scope>/major-upgrade.json` so a killed run is
resumed or rolled back by the next one (`next_action`).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from stack.generations import generation_spec, other_generation
from stack.render import CfgSection, haproxy_sections, serialize_haproxy
from stack.spec import SUITE_FOR_MAJOR, ClusterSpec

STATE_FILE = "major-upgrade.json"  # in the blue scope's state directory (`tasks.host.generations.major_state_file`)
PUBLICATION = "pgha_major"  # blue -> green (forward) and green -> blue (reverse), one per database
FORWARD_SUB = "pgha_major_fwd"
REVERSE_SUB = "pgha_major_rev"
MARKER_TABLE = "pgha_major_marker"  # a row written on the fenced side proves the other applied everything before it


class Phase(StrEnum):
    """Where a major upgrade stands (recorded before each step that changes it)."""

    GREEN = "green"  # green being built and copying; clients on blue
    CUTOVER = "cutover"  # blue fenced (no client writes); clients about to move to green
    ON_GREEN = "on-green"  # clients on green; green -> blue replication keeps blue current
    ROLLING_BACK = "rolling-back"  # green fenced; clients about to move back to blue
    ON_BLUE = "on-blue"  # rolled back: clients on blue; green kept until the next upgrade or --finish
    FINISHED = "finished"  # blue removed, green serves on the clients' ports (a finish's record is then deleted)


class Request(StrEnum):
    UPGRADE = "upgrade"
    ROLLBACK = "rollback"
    FINISH = "finish"


class Action(StrEnum):
    """What a run does, given the recorded phase and what was asked."""

    START = "start"  # build green from nothing and cut over
    RESTART = "restart"  # remove the green a previous run left, then START
    DISCARD_GREEN = "discard-green"  # remove green; blue (serving) is untouched
    ROLL_BACK = "roll-back"  # clients back to blue (blue is current through the reverse replication)
    REOPEN_BLUE = "reopen-blue"  # a cutover was killed before green took clients: route back to blue
    FINISH = "finish"  # drop the reverse replication, remove blue
    NOTHING = "nothing"  # already where asked


class Decision(BaseModel):
    action: Action
    reason: str


class MajorState(BaseModel):
    """The upgrade's record in the state dir: enough for the next run to resume or roll back."""

    phase: Phase
    target: int
    source: int
    green_scope: str
    databases: list[str] = Field(default_factory=list)
    reverse: bool = False  # the green -> blue subscriptions exist
    routed: str = "blue"  # where the clients' HAProxy points: blue | green | fenced
    gap_s: float | None = None
    rollback_gap_s: float | None = None


def next_action(state: MajorState | None, request: Request) -> Decision:
    """Resume or roll back from the recorded phase; never two writable primaries for the clients.

    A run killed while building green leaves blue serving: green is removed (and rebuilt by an
    upgrade). A run killed in a cutover whose reverse replication was not set up yet never let
    clients reach green: they go back to blue. Once the reverse replication exists, green may
    have taken writes, so the way back is a real rollback (blue applies them first).
    """
    if state is None:
        if request == Request.UPGRADE:
            return Decision(action=Action.START, reason="no major upgrade in progress")
        return Decision(action=Action.NOTHING, reason=f"no major upgrade in progress: nothing to {request.value}")
    p = state.phase
    if p == Phase.GREEN:
        if request == Request.UPGRADE:
            return Decision(action=Action.RESTART, reason="an earlier run stopped while green was being built; "
                                                          "removing that green and starting again")
        return Decision(action=Action.DISCARD_GREEN, reason="the upgrade had not cut over: green removed, blue untouched")
    if p == Phase.CUTOVER:
        if state.reverse or state.routed == "green":
            return Decision(action=Action.ROLL_BACK, reason="an earlier run stopped during the cutover after green "
                                                            "could take writes: rolling back to blue")
        return Decision(action=Action.REOPEN_BLUE, reason="an earlier run stopped during the cutover before green "
                                                          "took clients: routing back to blue, green removed")
    if p == Phase.FINISHED:
        return Decision(action=Action.NOTHING, reason=f"the upgrade to PostgreSQL {state.target} was finished: "
                                                      f"{state.green_scope} serves the same client ports")
    if p == Phase.ON_GREEN:
        if request == Request.ROLLBACK:
            return Decision(action=Action.ROLL_BACK, reason="clients go back to blue")
        if request == Request.FINISH:
            return Decision(action=Action.FINISH, reason="reverse replication dropped, blue removed")
        return Decision(action=Action.NOTHING, reason=f"already on PostgreSQL {state.target} (green); "
                                                      "--finish removes blue, --rollback goes back")
    if p == Phase.ROLLING_BACK:
        if request == Request.FINISH:
            return Decision(action=Action.ROLL_BACK, reason="an earlier rollback was interrupted: finishing it first")
        return Decision(action=Action.ROLL_BACK, reason="an earlier rollback was interrupted: resuming it")
    # ON_BLUE
    if request == Request.UPGRADE:
        return Decision(action=Action.RESTART, reason="rolled back earlier: the old green is removed and rebuilt")
    if request == Request.FINISH:
        return Decision(action=Action.DISCARD_GREEN, reason="rolled back earlier: finishing keeps blue, removes green")
    return Decision(action=Action.NOTHING, reason="already rolled back: clients are on blue")


# ---- pre-checks ----


class MajorFacts(BaseModel):
    """What the pre-check judges, gathered from blue (and the host)."""

    healthy: bool
    problem: str = ""
    current_major: int
    target_major: int
    image_problem: str = ""  # why the target image cannot be had ('' when it can)
    tables_without_key: list[str] = Field(default_factory=list)  # db.schema.table
    large_objects: int = 0
    data_bytes: int = 0
    free_bytes: int | None = None
    wal_level: str = "logical"
    green_scope_free: bool = True
    ports_problem: str = ""


class Precheck(BaseModel):
    refusal: str = ""  # one line naming what to fix ('' when the upgrade may go)
    notes: list[str] = Field(default_factory=list)  # what the run will do or not do about it
    set_replica_identity: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refusal


def hosts_refusal(blue: ClusterSpec) -> str | None:
    """Why a blue/green upgrade cannot run on `blue` (None: it may). Over several hosts it is not built:
    members use host networking, so green's members would need ports of their own on every host
    (blue's hold PostgreSQL's, Patroni's and etcd's), and the flow drives one engine only."""
    if blue.hosts is None:
        return None
    return ("the major upgrade is not built for a cluster over several hosts (hosts:): green's members would need "
            "ports of their own on every host, where blue's members hold 5432, 8008, 2379 and 2380 (host "
            "networking); see docs/known-limits.md")


def precheck(f: MajorFacts, replica_identity_full: bool) -> Precheck:
    """Refuse (one line naming the fix) or let go with notes, in the order a user fixes things."""
    if f.target_major not in SUITE_FOR_MAJOR:
        known = ", ".join(str(k) for k in sorted(SUITE_FOR_MAJOR))
        return Precheck(refusal=f"PostgreSQL {f.target_major} is not packaged for pgha's images; choose one of {known}")
    if f.target_major <= f.current_major:
        return Precheck(refusal=f"the cluster runs PostgreSQL {f.current_major}; a major upgrade goes to a newer "
                                f"major, not {f.target_major} (minor updates: pgha upgrade --image)")
    if not f.healthy:
        return Precheck(refusal=f"the cluster is not healthy: {f.problem} (see `pgha status`)")
    if f.image_problem:
        return Precheck(refusal=f"the PostgreSQL {f.target_major} image cannot be had: {f.image_problem}")
    if not f.green_scope_free:
        return Precheck(refusal="a green cluster from another run exists and no upgrade state names it; "
                                "remove it with `pgha down --volumes --scope <scope>-green`")
    if f.ports_problem:
        return Precheck(refusal=f"green's ports: {f.ports_problem}")
    notes: list[str] = []
    if f.tables_without_key and not replica_identity_full:
        shown = ", ".join(f.tables_without_key[:5]) + (f" (and {len(f.tables_without_key) - 5} more)"
                                                       if len(f.tables_without_key) > 5 else "")
        return Precheck(refusal=f"{len(f.tables_without_key)} table(s) have neither a primary key nor a replica "
                                f"identity, so their updates and deletes cannot be replicated: {shown}; add keys, "
                                "or pass --replica-identity-full to set REPLICA IDENTITY FULL on them")
    if f.free_bytes is not None and f.free_bytes < f.data_bytes * 2:
        return Precheck(refusal=f"not enough disk for a second copy: {f.data_bytes} bytes of data need about "
                                f"{f.data_bytes * 2} free (green and its WAL), {f.free_bytes} are")
    if f.tables_without_key:
        notes.append("REPLICA IDENTITY FULL set on " + ", ".join(f.tables_without_key))
    if f.large_objects:
        notes.append(f"{f.large_objects} large object(s) will NOT be copied (logical replication does not carry them)")
    if f.wal_level != "logical":
        notes.append(f"wal_level is {f.wal_level}: set to logical through Patroni with a rolling restart first")
    return Precheck(notes=notes, set_replica_identity=list(f.tables_without_key) if replica_identity_full else [])


# ---- green and the clients' HAProxy ----


def green_spec(blue: ClusterSpec, target: int) -> ClusterSpec:
    """Green: blue's shape on the target major, the other generation's scope (`<base>` <-> `<base>-green`),
    ports offset by `major.green_port_offset` while both run, logical WAL (for the reverse way)."""
    off = blue.major.green_port_offset
    ports = {k: getattr(blue.ports, k) + off for k in ("rw", "ro", "stats", "pool", "metrics")}
    return generation_spec(blue, green_scope(blue), target, ports)  # validated: the scope may grow too long


def green_scope(blue: ClusterSpec) -> str:
    return other_generation(blue.scope)


def routed_haproxy_cfg(clients: ClusterSpec, target: ClusterSpec | None) -> str:
    """The clients' haproxy.cfg (their ports, checks and timing) with `target`'s nodes as servers.

    `target` None fences the R/W port (no server: connections are refused) while the R/O
    port keeps `clients`' own replicas, so reads go on during a cutover.
    """
    sections = haproxy_sections(clients)
    if target is None:
        return serialize_haproxy([_without_servers(s) if s.header == "listen primary" else s for s in sections])
    theirs = {s.header: s for s in haproxy_sections(target)}
    out: list[CfgSection] = []
    for s in sections:
        if s.header in ("listen primary", "listen replicas"):
            servers = [d for d in theirs[s.header].directives if d.startswith("server ")]
            s = CfgSection(s.header, [d for d in s.directives if not d.startswith("server ")] + servers)
        out.append(s)
    return serialize_haproxy(out)


def _without_servers(s: CfgSection) -> CfgSection:
    return CfgSection(s.header, [d for d in s.directives if not d.startswith("server ")])


def caught_up(marker_seen: dict[str, bool]) -> bool:
    """Every database's marker row (written on the fenced side) has arrived on the other."""
    return bool(marker_seen) and all(marker_seen.values())


def setval_statements(values: dict[str, int]) -> list[str]:
    """`setval` for each sequence (quoted `schema.name` -> last value) so the new side never hands one out twice."""
    return [f"select setval('{name.replace(chr(39), chr(39) * 2)}', {int(v)}, true)" for name, v in sorted(values.items())]
