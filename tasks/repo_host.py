"""The pgBackRest repository host (`backup.repo_host`): its container made to match the spec, its
`pgbackrest server` answering; a step of `flows.steps.backups.ensure_archiving` and of the backup flow."""

from __future__ import annotations

from prefect import get_run_logger, task

from stack import topology
from stack.spec import ClusterSpec
from tasks import pgbackrest as pbr
from tasks._prefect import SIDE_EFFECT
from tasks.docker_hosts import engines
from tasks.host.state import config_dir, write_private
from tasks.pgbackrest_restore import node_image


@task(name="ensure-repo-host", **SIDE_EFFECT)
def ensure_repo_host(spec: ClusterSpec) -> str:
    """The repository host's container (backup.repo_host) runs and its `pgbackrest server` answers.

    From the nodes' image (the same pgBackRest); its files (config with the passphrase, the
    TLS material) 0600 in its config directory, copied to postgres by its start script. A
    changed definition recreates it (the repository volume is kept).
    """
    member = spec.repo_member
    conf, certs, pw = pbr.repo_host_files(spec)
    conf_dir = config_dir(spec.scope, member)
    planned = topology.repo_host(spec, node_image(spec), str(conf_dir), conf, certs, pw)
    for fname, text in planned.files.items():
        write_private(conf_dir / fname, text)
    outcome = engines(spec).of(member).ensure_container(planned.container)
    pbr.wait_repo_server(spec)
    get_run_logger().info("repository host %s on %s: %s", planned.container.name, spec.backup.repo_host,
                          outcome.value)
    return outcome.value
