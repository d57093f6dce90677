"""Failsafe mode when etcd loses its quorum and the member Patroni talks to still answers.

An etcd member without quorum does not fall silent: it answers the leader's lease keepalive,
after its request timeout, with `etcdserver: no leader`. Patroni as Debian ships it reads that
answer as a refused leader lock and demotes the primary at once, failsafe_mode or not (Patroni
issue 3572); only a member that does not answer at all lets failsafe keep the primary. The node
image carries a patch for it (stack/image/patroni-*-etcd3-failsafe.patch).

Patroni's own etcd3 client, inside each node image (pg15 bookworm, pg17 trixie), against a stub
etcd that gives exactly the answers of an etcd without quorum: the outcome must be "dcs
unreachable" (failsafe applies), never "lock lost" (demote). Deterministic, seconds; on the images
before the patch these fail. A real etcd gives that answer only after its own request timeout
(7 s, longer than Patroni's), so a live cluster meets it only now and then: the live quorum loss
with failsafe is test_fencing.py's drill, on its module cluster, which must pass every time (no
rerun).

No reruns: these must pass every time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker
import pytest

from stack.spec import parse_spec
from tasks import images

SCOPE = "pgha-it-fs"
PROBE = Path(__file__).resolve().parent.parent / "support" / "patroni_etcd_probe.py"
# What an etcd 3.5 member without quorum answers the lease keepalive (gateway, HTTP/JSON): after
# its request timeout "no leader"; while it shuts down, a stream closed under the request.
NO_QUORUM_ANSWERS = {
    "no-leader": {"status": 503, "body": {"error": {"code": 14, "message": "etcdserver: no leader"}}},
    "stream-closed": {"status": 500,
                      "body": {"error": {"code": 13, "message": "server closed the stream without sending trailers"}}},
}


def probe(engine: docker.DockerClient, image: str, answer: dict[str, Any]) -> dict[str, str]:
    """Patroni's update_leader in `image` against a stub etcd giving `answer`: its outcome."""
    out = engine.containers.run(image, ["-c", PROBE.read_text(), json.dumps(answer)], entrypoint=["python3"],
                                network_mode="none", remove=True, stderr=False,
                                labels={"pgha.cluster": SCOPE, "pgha.role": "probe"})
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


@pytest.mark.parametrize("answer", sorted(NO_QUORUM_ANSWERS))
@pytest.mark.parametrize("postgres_version", [15, 17])
def test_patroni_takes_an_etcd_without_quorum_for_an_unreachable_dcs(
        engine: docker.DockerClient, base_env: dict[str, str], postgres_version: int, answer: str) -> None:
    image, _ = images.ensure_image(parse_spec({"scope": SCOPE, "postgres_version": postgres_version}))
    r = probe(engine, image, NO_QUORUM_ANSWERS[answer])
    assert r["outcome"] == "dcs unreachable", f"Patroni {r['patroni']} in {image}: {r['outcome']}"


def test_an_answer_that_decides_still_loses_the_lock(engine: docker.DockerClient, base_env: dict[str, str]) -> None:
    """The patch is narrow: an etcd that says the lease is gone still costs the lock (Patroni's own rule)."""
    image, _ = images.ensure_image(parse_spec({"scope": SCOPE}))
    r = probe(engine, image, {"status": 404, "body": {"error": "etcdserver: requested lease not found", "code": 5}})
    assert r["outcome"] == "lock lost", r
