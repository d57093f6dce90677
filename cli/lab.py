"""`pgha lab`: several simulated hosts on this machine (Docker in Docker), like `kind` for Kubernetes."""

from __future__ import annotations

import sys
from typing import Any

import typer

from cli.core import LAB, Done, JsonOpt, app, command
from stack.lab import LabStatus

lab_app = typer.Typer(no_args_is_help=True, help="Simulated hosts on this machine for a many-hosts cluster.")
app.add_typer(lab_app, name="lab", rich_help_panel=LAB)

NameOpt = typer.Option("lab", "--name", help="the lab's name (label pgha.lab=<name>)")


def _json(st: LabStatus) -> dict[str, Any]:
    """`docker` is the engine URL the cluster's spec uses (tcp:// with `tls` files under --engine tcp,
    ssh:// with `ssh` files under --engine ssh)."""
    return {"name": st.name, "network": st.network, "spec": st.spec, "engine": st.engine, "images": st.images,
            "hosts": [{"name": h.name, "container": h.container, "docker": h.docker, "address": h.address,
                       "rw_port": h.rw_port, "ro_port": h.ro_port, "engine_port": h.engine_port,
                       "pool_port": h.pool_port,
                       "tls": h.tls.model_dump() if h.tls else None,
                       "ssh": h.ssh.model_dump() if h.ssh else None, "state": h.state} for h in st.hosts]}


class _Json(LabStatus):
    def to_json(self) -> dict[str, Any]:
        return _json(self)


def _render(done: Done[Any]) -> None:
    st: LabStatus = done.result
    for h in st.hosts:
        sys.stdout.write(f"{h.name}  {h.container}  {h.state or '?'}  address {h.address}  "
                         f"R/W 127.0.0.1:{h.rw_port}  R/O 127.0.0.1:{h.ro_port}  "
                         + (f"pool 127.0.0.1:{h.pool_port}  " if h.pool_port else "") + f"engine {h.docker}\n")
    if st.images:
        sys.stdout.write(f"{st.images}\n")
    sys.stdout.write(f"spec: {st.spec}\n(start the cluster with `pgha up --spec {st.spec}`)\n")


@lab_app.command("up")
@command(_render)
def lab_up(hosts: int = typer.Option(3, "--hosts", help="how many simulated hosts"), name: str = NameOpt,
           port_base: int = typer.Option(25400, "--port-base", min=1024, max=65000,
                                         help="first 127.0.0.1 port: host i gets R/W base+2(i-1), R/O the next"),
           scope: str | None = typer.Option(None, "--scope", help="the cluster's scope in the written spec "
                                                                  "(default: the lab's name)"),
           engine: str = typer.Option("unix", "--engine",
                                      help="how the cluster reaches each lab host's engine: unix (a socket), tcp "
                                           "(tcp:// + mutual TLS on 127.0.0.1, port base+2N+(i-1)) or ssh "
                                           "(ssh:// to the host's sshd, same port, a key made for the lab)"),
           as_json: bool = JsonOpt) -> Done[_Json]:
    """Create N lab hosts (each its own dockerd) holding the node image, write a ready spec.

    Each new host's /var/lib/docker is copied from the lab seed (an engine's directory that holds the
    node image, made once per image pair, volume `pgha-lab-seed-<key>`); the image is loaded when that fails.

    Example: pgha lab up --hosts 3 --engine tcp
    """
    from tasks import docker_lab

    st = docker_lab.up(name, hosts, port_base, scope or name, engine)
    return Done(_Json.model_validate(st.model_dump()))


@lab_app.command("image")
@command()
def lab_image() -> None:
    """Build the lab host image (and the node image it loads) and the lab seed if missing; prints their tags.

    Example: pgha lab image
    """
    from tasks import docker_lab

    node, lab, *log = docker_lab.build_images()
    for line in log:
        sys.stdout.write(f"{line}\n")
    sys.stdout.write(f"lab image {lab}, node image {node}\n")


@lab_app.command("status")
@command(_render)
def lab_status(name: str = NameOpt, as_json: bool = JsonOpt) -> Done[_Json]:
    """Each lab host: container, engine URL, R/W and R/O ports on 127.0.0.1; the spec's path.

    Example: pgha lab status --name lab --json
    """
    from tasks import docker_lab

    return Done(_Json.model_validate(docker_lab.status(name).model_dump()))


@lab_app.command("down")
@command()
def lab_down(name: str = NameOpt) -> None:
    """Remove every resource labelled pgha.lab=<name> (the lab hosts and everything inside them).

    Example: pgha lab down --name lab
    """
    from tasks import docker_lab

    removed = docker_lab.down(name)
    sys.stdout.write(f"lab {name}: removed {len(removed['containers'])} hosts, {len(removed['volumes'])} volumes, "
                     f"{len(removed['networks'])} network(s)\n")
