"""A stopped node's data directory read in a scratch box on its engine: pg_controldata, pg_waldump.

The site rebuild reads the old primary site's data before Patroni rewinds it: whether it can be
rewound, and what the rewind discards (the WAL after the new primary site's switchpoint). The
node's volume is mounted in a sleeping box of the node image; no PostgreSQL starts.
"""

from __future__ import annotations

from stack import layout
from stack.site_rebuild import (
    DataDir,
    Discarded,
    Divergence,
    divergence,
    parse_controldata,
    parse_history,
    parse_waldump,
)
from stack.spec import ClusterSpec
from tasks import docker_hosts
from tasks.docker_scratch import scratch

ROLE_INSPECT = "rebuild-inspect"


def inspect(spec: ClusterSpec, member: str, image: str, new_tli: int,
            new_history: list[tuple[int, str]]) -> tuple[DataDir | None, Divergence | None, Discarded | None]:
    """`member`'s data directory (None: no volume, or not a data directory), where its history
    leaves the new primary site's (on `new_tli`, with `new_history`), and the WAL it holds after
    that point (None: not readable)."""
    eng = docker_hosts.engines(spec).of(member)
    if not eng.volume_exists(spec.volume(member)):
        return None, None, None
    bin_dir = f"/usr/lib/postgresql/{spec.postgres_version}/bin"
    with scratch(eng, spec.scope, ROLE_INSPECT, f"{spec.scope}-{member}-inspect", image, layout.DATA_MOUNT,
                 data_volume=spec.volume(member), log_options=spec.logs.driver_options()) as box:
        r = box.run([f"{bin_dir}/pg_controldata", "-D", layout.PGDATA], timeout=30)
        data = parse_controldata(member, r.out) if r.ok else None
        if data is None:
            return None, None, None
        own: list[tuple[int, str]] = []
        if data.timeline > 1:
            h = box.run(["cat", f"{layout.PGDATA}/pg_wal/{data.timeline:08X}.history"], timeout=10)
            own = parse_history(h.out) if h.ok else []
        div = divergence(data.timeline, own, new_tli, new_history)
        if div.start_lsn is None:
            return data, div, None
        def dump(start: str) -> tuple[str, str] | None:
            w = box.run([f"{bin_dir}/pg_waldump", f"--path={layout.PGDATA}/pg_wal",
                         f"--timeline={data.timeline}", f"--start={start}"], timeout=120)
            return None if "could not find file" in w.err or "could not open file" in w.err else (w.out, w.err)

        if (got := dump(div.start_lsn)) is not None:
            return data, div, parse_waldump(div.start_lsn, *got)
        # A site that promoted itself renamed its old timeline's last segment .partial: its own
        # timeline, from its promotion on, is still there to count.
        if div.own_start is not None and (got := dump(div.own_start)) is not None:
            part = parse_waldump(div.own_start, *got)
            return data, div, part.model_copy(update={"start_lsn": div.start_lsn, "unread_from": div.own_start})
        return data, div, None
