"""etcd-replace: replace one etcd member, keeping quorum all the time.

The member is removed from the raft group (after handing over the leadership when it leads),
given fresh data and added back with `--initial-cluster-state existing`; the other members
keep a quorum throughout, so Patroni never loses its DCS.
"""

from __future__ import annotations

from prefect import flow

from flows.steps.ops import current, mutating_flow, note
from stack.errors import StateError
from stack.results import EtcdReplaceResult
from stack.rolling import etcd_replace_refusal
from stack.spec import ClusterSpec
from stack.wait import wait_for
from tasks import docker_hosts, etcd
from tasks.members import recreate_etcd_member


@flow(name="etcd-replace", description="Replace one etcd member, keeping quorum throughout.")
@mutating_flow("etcd-replace")
def etcd_replace(spec: ClusterSpec = ClusterSpec(), member: str = "etcd-1") -> EtcdReplaceResult:  # noqa: B008
    members = spec.etcd_names()
    if (why := etcd_replace_refusal(members, etcd.healthy_by_member(spec), member)) is not None:
        raise StateError(f"etcd replace refused: {why}")
    others = [m for m in members if m != member]
    via = others[0]
    ids = etcd.member_ids(spec, via, others)
    eng = docker_hosts.engines(spec)
    # An interrupted replacement may have removed the container already: any member's image will do.
    image = eng.of(member).image_of(spec.container(member)) or eng.of(via).image_of(spec.container(via))
    if not image:
        raise StateError(f"no etcd container of {spec.scope} exists; run `pgha up` first")
    old_id = ids.get(member)
    if old_id is not None and etcd.leader_member(spec) == member:
        # Removing the raft leader forces an election (a second or so without writes): hand
        # the leadership over first, which etcd does at once and without a gap.
        to = others[0]
        etcd.move_leader(spec, member, ids[to])
        wait_for(f"etcd leadership to move to {to}", lambda: etcd.leader_member(spec), lambda lead: lead != member,
                 timeout=30, interval=0.3)
        note(f"{member} led etcd; leadership moved to {to} first")
    if old_id is not None:
        etcd.remove_member(spec, via, others, old_id)
        note(f"{member} (id {old_id:x}) removed from the raft group; {len(others)} members keep quorum")

    def add() -> bool:
        # etcd refuses a new voting member until its leader has seen a quorum of members
        # connected for a few seconds (right after the removal, or a leader change, it has not):
        # the refusal changes nothing, so it is safe to ask again. A member already added (an
        # earlier attempt whose answer was lost) is recognised by its peer URL.
        if member not in etcd.member_ids(spec, via, others):
            etcd.add_member(spec, via, others, member)
        return True

    wait_for(f"etcd to accept {member} as a new member", add, bool, timeout=60, interval=1)
    note(f"{member} added back as a new member (fresh data)")
    recreate_etcd_member(spec, member, image)
    etcd.wait_healthy(spec, timeout=90)
    new_id = etcd.member_ids(spec, via, members).get(member)
    note(f"{member} healthy again as member {new_id:x}" if new_id is not None else f"{member} healthy again")
    op = current()
    return EtcdReplaceResult(member=member, old_id=f"{old_id:x}" if old_id is not None else "",
                             new_id=f"{new_id:x}" if new_id is not None else "", events=op.events,
                             elapsed_s=op.elapsed())
