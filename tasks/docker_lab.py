"""The lab's hosts on the local engine: Docker-in-Docker containers pgha makes and removes.

The engine adapter for `pgha lab` (tasks.docker_engine stays the adapter for a cluster's own
members): the lab image, the lab network, one container per simulated host running its own
`dockerd`, the node image loaded into each, and the lab's record (`labs/<name>/lab.json`
and the ready spec) in the state directory. Every resource carries `pgha.lab=<name>` and
`lab down` removes exactly those. Host-side code reaches a lab host only through its engine's
socket (a file under the state directory) and the ports it publishes on 127.0.0.1: with
`--engine tcp`, also its engine's TLS port there, with `--engine ssh` its sshd's port (the
cluster's way in; the lab keeps the socket).

`--privileged` fails on these machines (no CAP_SYS_RESOURCE in the bounding set); the flags
below are the ones measured to work (FIELD-NOTES, 2026-11-26).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from stack import lab as plan
from stack import lab_seed
from stack.errors import DockerError, PghaError, StateError, UsageError
from stack.hosts import EngineSSH, EngineTLS
from stack.spec import ClusterSpec, parse_spec
from stack.wait import wait_for
from tasks import docker_images, docker_lab_hosts, images
from tasks.docker_engine import Engine, MountSpec
from tasks.docker_hosts import local_engine, port_is_free, tls_config
from tasks.docker_ssh import ssh_end_masters, ssh_probe
from tasks.engine_client import engine_answers
from tasks.host.state import state_root, write_private

LABEL_LAB = docker_lab_hosts.LABEL_LAB
LAB_FILES = Path(__file__).resolve().parent.parent / "stack" / "lab"
LAB_REPO = "pgha/lab"
SOCKET_IN_HOST = "/run/lab"
ENGINE_TLS = "engine-tls"  # lab_dir/engine-tls: the lab CA (its key never mounted), pgha's client files
ENGINE_SSH = "ssh"  # lab_dir/ssh: pgha's key pair and known_hosts; <host>/: its host key and authorized_keys
SEED_SOCKETS = "lab-seed"  # state_root()/lab-seed/<key>: the seed maker's engine socket while it runs
LOG = logging.getLogger("pgha.lab")


def lab_dir(name: str) -> Path:
    return state_root() / "labs" / name


def _socket_dir(name: str, host: str) -> Path:
    return lab_dir(name) / host


def _engine_tls_dir(name: str) -> Path:
    return lab_dir(name) / ENGINE_TLS


def _server_tls_dir(name: str, host: str) -> Path:
    """One lab host's engine files (CA, server certificate and key), mounted read-only in it."""
    return _engine_tls_dir(name) / host


def _read(d: Path, files: Iterable[str]) -> dict[str, str] | None:
    if all((d / f).is_file() for f in files):
        return {f: (d / f).read_text() for f in files}
    return None


def ensure_engine_tls(name: str, hosts: list[plan.LabHost]) -> EngineTLS:
    """The lab's engine TLS, made once, 0600 under the lab's state dir: a lab CA, a server
    certificate per lab host and pgha's client certificate. Returns the client's file paths."""
    d = _engine_tls_dir(name)
    ca = _read(d, ("ca.crt", "ca.key"))
    if ca is None:
        ca = plan.engine_ca(name)
        for f, text in ca.items():
            write_private(d / f, text)
    if _read(d, ("client.crt", "client.key")) is None:
        for f, text in plan.engine_client(name, ca).items():
            write_private(d / f, text)
    for h in hosts:
        if _read(_server_tls_dir(name, h.name), ("ca.crt", "server.crt", "server.key")) is None:
            for f, text in plan.engine_server(name, h.name, h.address, ca).items():
                write_private(_server_tls_dir(name, h.name) / f, text)
    return EngineTLS(ca=str(d / "ca.crt"), cert=str(d / "client.crt"), key=str(d / "client.key"))


def _ssh_dir(name: str) -> Path:
    return lab_dir(name) / ENGINE_SSH


def ensure_engine_ssh(name: str, hosts: list[plan.LabHost]) -> EngineSSH:
    """The lab's ssh files, made once, 0600 under the lab's state dir: pgha's ed25519 key pair,
    a host key per lab host (mounted in it with the authorized public key) and the known_hosts
    pinning every host key at its 127.0.0.1 port. Returns the key's and known_hosts' paths."""
    d = _ssh_dir(name)
    if _read(d, ("id_ed25519", "id_ed25519.pub")) is None:
        private, public = plan.ssh_keypair(f"pgha-lab-{name}")
        write_private(d / "id_ed25519", private)
        write_private(d / "id_ed25519.pub", public)
    public = (d / "id_ed25519.pub").read_text()
    pinned = []
    for h in hosts:
        hd = d / h.name
        if _read(hd, (plan.SSH_HOST_KEY, plan.SSH_HOST_KEY + ".pub")) is None:
            private, host_public = plan.ssh_keypair(f"pgha-lab-{name}-{h.name}")
            write_private(hd / plan.SSH_HOST_KEY, private)
            write_private(hd / (plan.SSH_HOST_KEY + ".pub"), host_public)
        write_private(hd / "authorized_keys", public)
        assert h.engine_port is not None
        pinned.append(plan.known_hosts_line(h.engine_port, (hd / (plan.SSH_HOST_KEY + ".pub")).read_text()))
    write_private(d / "known_hosts", "".join(pinned))
    return EngineSSH(key=str(d / "id_ed25519"), known_hosts=str(d / "known_hosts"))


def lab_image_tag(base: str) -> str:
    h = hashlib.sha256(base.encode())
    for p in sorted(LAB_FILES.iterdir()):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return f"{LAB_REPO}:{h.hexdigest()[:12]}"


def ensure_lab_image(engine: Engine, log: list[str]) -> str:
    """pgha's Debian base plus Debian's docker.io, built once per content hash."""
    base = images.ensure_base(ClusterSpec(), log, engine)
    tag = lab_image_tag(base)
    if docker_images.has_image(engine, tag):
        return tag
    log.append(f"building {tag} FROM {base}")
    docker_images.build(engine, LAB_FILES, tag, buildargs={"BASE": base}, labels={"pgha.image": "lab"})
    return tag


def build_images() -> list[str]:
    """The lab host image and the node image it loads, built if missing (`make test-images`, before workers start)."""
    log: list[str] = []
    node_image, more = images.ensure_image(ClusterSpec())
    log += more
    lab_image = ensure_lab_image(local_engine(), log)
    key = ensure_seed(local_engine(), lab_image, node_image, log)
    log.append(f"lab seed {lab_seed.seed_volume(key)} ready" if key else "no lab seed: lab hosts load the node image")
    return [node_image, lab_image, *log]


def exists(name: str) -> bool:
    return docker_lab_hosts.has_resources(local_engine(), name)


def host_run(name: str, host: plan.LabHost, image: str, engine: str) -> docker_lab_hosts.LabHostRun:
    """What lab host `host` runs as: its volume, the cgroup tree, its engine's socket directory,
    the ports it publishes on 127.0.0.1 (with `--engine tcp`/`ssh`, its engine's files and port too)."""
    mounts = [MountSpec(target="/var/lib/docker", source=plan.volume_name(name, host.name)),
              MountSpec(target="/sys/fs/cgroup", source="/sys/fs/cgroup", kind="bind"),
              # Nothing of pgha's state directory but the engine's socket: members get their config
              # files pushed through the engine API into volumes, as on real hosts (tasks/config_volume.py).
              MountSpec(target=SOCKET_IN_HOST, source=str(_socket_dir(name, host.name)), kind="bind")]
    bindings: dict[int, tuple[str, int]] = {plan.INNER_RW: ("127.0.0.1", host.rw_port),
                                            plan.INNER_RO: ("127.0.0.1", host.ro_port)}
    if host.pool_port is not None:
        bindings[plan.INNER_POOL] = ("127.0.0.1", host.pool_port)
    if engine == "tcp" and host.engine_port is not None:
        # The engine's own TLS files (not the lab CA's key), read-only; dockerd gets their paths.
        mounts.append(MountSpec(target=plan.ENGINE_TLS_IN_HOST, source=str(_server_tls_dir(name, host.name)),
                                kind="bind", read_only=True))
        bindings[plan.INNER_ENGINE] = ("127.0.0.1", host.engine_port)
    if engine == "ssh" and host.engine_port is not None:
        # Its host key and the authorized public key, read-only (never pgha's private key).
        mounts.append(MountSpec(target=plan.ENGINE_SSH_IN_HOST, source=str(_ssh_dir(name) / host.name),
                                kind="bind", read_only=True))
        bindings[plan.INNER_SSH] = ("127.0.0.1", host.engine_port)
    return docker_lab_hosts.LabHostRun(
        container=host.container, hostname=host.name, image=image, network=plan.network_name(name),
        address=host.address, labels={LABEL_LAB: name, "pgha.lab.host": host.name}, mounts=mounts,
        ports=bindings, command=plan.dockerd_args(engine))


def _run_host(name: str, host: plan.LabHost, image: str, engine: str, seed: str | None,
              seeded: dict[str, str]) -> None:
    """Run lab host `host`; a volume made anew is first filled from the seed `seed` (its key), and
    `seeded[host]` says how that went ("" copied, else why not)."""
    _socket_dir(name, host.name).mkdir(parents=True, exist_ok=True)
    local = local_engine()

    def fill(volume: str) -> None:
        assert seed is not None
        seeded[host.name] = docker_lab_hosts.fill_from_seed(local, name, seed, image, volume)

    docker_lab_hosts.ensure_host(local, name, host_run(name, host, image, engine), plan.volume_name(name, host.name),
                                 fill=fill if seed else None)


def ensure_seed(local: Engine, lab_image: str, node_image: str, log: list[str]) -> str | None:
    """The key of a complete seed for (lab image, node image), made if missing (stack/lab_seed.py);
    None when there is none to copy (the lab hosts load the node image; why is in `log`)."""
    try:
        key = lab_seed.seed_key(docker_images.image_id(local, lab_image), docker_images.image_id(local, node_image))
        for _ in range(4):  # USE or MAKE end it; CLEAR and WAIT look again
            exists, age = docker_lab_hosts.seed_state(local, key)
            step = lab_seed.seed_step(exists, age)
            if step is lab_seed.SeedStep.USE:
                return key
            if step is lab_seed.SeedStep.CLEAR:
                log.append(f"lab seed {key}: removing a maker left by a crashed run ({age or 0:.0f} s old)")
                docker_lab_hosts.remove_seed(local, key)
            elif step is lab_seed.SeedStep.WAIT:
                docker_lab_hosts.wait_maker_gone(local, key, lab_seed.SEED_WAIT_SECONDS)
            elif (made := _make_seed(local, key, lab_image, node_image, log)) is not None:
                return key if made else None
    except PghaError as exc:
        log.append(f"no lab seed ({str(exc).splitlines()[0][:300]})")
        LOG.warning("no lab seed (%s): the node image is loaded into each lab host", str(exc).splitlines()[0][:300])
    return None


def _make_seed(local: Engine, key: str, lab_image: str, node_image: str, log: list[str]) -> bool | None:
    """Make the seed: a throwaway lab host loads the node image, its engine stops cleanly, the marker
    is written last. True when made, False when it failed (removed again), None when another run's
    maker took the name first."""
    sock = state_root() / SEED_SOCKETS / key
    sock.mkdir(parents=True, exist_ok=True)
    try:
        if not docker_lab_hosts.start_seed_maker(local, key, lab_image, node_image, str(sock)):
            return None
        try:
            for gone in docker_lab_hosts.remove_volumes(
                    local, lab_seed.stale_seeds(docker_lab_hosts.seed_volumes(local), key)):
                log.append(f"removed the lab seed {gone} (other images)")
            inner = _socket_up(f"the lab seed {key}'s engine", f"unix://{sock / 'docker.sock'}",
                               lab_seed.seed_maker(key))
            docker_images.copy_image(local, node_image, [inner], what="the lab seed")
            if code := docker_lab_hosts.stop_seed_maker(local, key):
                raise DockerError(f"the seed's engine stopped with exit code {code}")
            docker_lab_hosts.mark_seed_complete(local, key, lab_image)
            docker_lab_hosts.remove_seed_maker(local, key)
            log.append(f"made the lab seed {lab_seed.seed_volume(key)} ({node_image})")
            return True
        except PghaError as exc:
            why = str(exc).splitlines()[0][:300]
            log.append(f"lab seed {key} not made ({why}); the node image is loaded instead")
            LOG.warning("lab seed %s not made (%s): the node image is loaded into each lab host", key, why)
            docker_lab_hosts.remove_seed(local, key)
            return False
        except BaseException:  # interrupted (Ctrl-C, a timeout): nothing half-made is left behind
            docker_lab_hosts.remove_seed(local, key)
            raise
    finally:
        shutil.rmtree(sock, ignore_errors=True)
        with contextlib.suppress(OSError):  # another maker's socket dir in it: it stays
            sock.parent.rmdir()


def _write_record(status: plan.LabStatus) -> None:
    write_private(lab_dir(status.name) / "lab.json", status.model_dump_json(indent=2))


def up(name: str, n_hosts: int, port_base: int, scope: str, engine: str = "unix", seed: bool = True) -> plan.LabStatus:
    """Create (or complete) lab `name` with `n_hosts` hosts; returns its status. Refuses bad input first.

    `seed=False` loads the node image into every host instead of copying the seed (the benchmark's baseline)."""
    if why := plan.check_engine(engine):
        raise UsageError(why)
    return _up(name, n_hosts, port_base, scope, engine, seed)


def _up(name: str, n_hosts: int, port_base: int, scope: str, engine: str, seed: bool) -> plan.LabStatus:
    """Create (or complete) lab `name` with `n_hosts` hosts; returns its status. Refuses bad input first."""
    for why in (plan.check_name(name), plan.check_hosts(n_hosts)):
        if why:
            raise StateError(why)
    local = local_engine()
    spec_path = lab_dir(name) / "spec.yaml"
    record = status(name) if (lab_dir(name) / "lab.json").exists() else None
    if record is not None and len(record.hosts) != n_hosts:
        raise StateError(f"lab {name} exists with {len(record.hosts)} hosts; `pgha lab down --name {name}` first")
    if record is not None and record.engine != engine:
        raise StateError(f"lab {name} exists with --engine {record.engine}; `pgha lab down --name {name}` first")
    ports = plan.client_ports(port_base, n_hosts)
    engine_ports = plan.engine_ports(port_base, n_hosts)
    pool_ports: list[int | None] = list(plan.pool_ports(port_base, n_hosts))
    if record is not None:  # completing a lab: the ports it was made with
        ports = [(h.rw_port, h.ro_port) for h in record.hosts]
        engine_ports = [h.engine_port or 0 for h in record.hosts]
        pool_ports = [h.pool_port for h in record.hosts]
    else:
        for p in plan.lab_ports(port_base, n_hosts, engine):
            if p > 65535 or not port_is_free(p):
                raise StateError(f"port {p} on 127.0.0.1 is in use (or invalid); choose another --port-base")
        parse_spec({"scope": scope}, "(--scope)")  # a valid scope, before anything is made
    log: list[str] = []
    node_image, more = images.ensure_image(ClusterSpec())
    log += more
    lab_image = ensure_lab_image(local, log)
    subnet = docker_lab_hosts.ensure_network(local, name, plan.network_name(name), plan.subnet_candidates(name))
    hosts = []
    for i, h in enumerate(plan.host_names(n_hosts)):
        sock = f"unix://{_socket_dir(name, h) / 'docker.sock'}"
        port = engine_ports[i] if engine in ("tcp", "ssh") else None
        hosts.append(plan.LabHost(name=h, container=plan.container_name(name, h), socket=sock,
                                  docker=plan.engine_url(engine, sock, port), address=plan.host_address(subnet, i),
                                  rw_port=ports[i][0], ro_port=ports[i][1], engine_port=port,
                                  pool_port=pool_ports[i]))
    if engine == "tcp":
        client = ensure_engine_tls(name, hosts)
        hosts = [h.model_copy(update={"tls": client}) for h in hosts]
    if engine == "ssh":
        login = ensure_engine_ssh(name, hosts)
        hosts = [h.model_copy(update={"ssh": login}) for h in hosts]
    seed_key = ensure_seed(local, lab_image, node_image, log) if seed else None
    seeded: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=n_hosts) as pool:  # the hosts boot at once
        list(pool.map(lambda h: _run_host(name, h, lab_image, engine, seed_key, seeded), hosts))
    if seed_key and lab_seed.seed_broken(seeded):
        docker_lab_hosts.remove_volumes(local, [lab_seed.seed_volume(seed_key)])
    result = plan.LabStatus(name=name, network=plan.network_name(name), subnet=subnet, spec=str(spec_path),
                            hosts=hosts, engine=engine)
    _write_record(result)
    spec_data = plan.spec_data(scope, hosts)
    parse_spec(spec_data, str(spec_path))
    write_private(spec_path, "# Written by `pgha lab up`: a cluster over the lab's hosts.\n"
                  + yaml.safe_dump(spec_data, sort_keys=False))
    loaded = _load_node_image(hosts, node_image)
    result.images = lab_seed.image_outcome([h.name for h in hosts], seeded,
                                           {h.name: loaded.get(h.name, False) for h in hosts})
    if any(why for why in seeded.values()):
        LOG.warning("lab %s: %s", name, result.images)
    _write_record(result)
    for h in hosts:  # the cluster's way in: the spec is handed out once it answers
        _tcp_engine_up(h)
        _ssh_engine_up(h)
    return status(name)


def _ssh_engine_up(host: plan.LabHost, timeout: float = 60) -> None:
    """--engine ssh: wait for the engine to answer over ssh with pgha's key and the pinned host key."""
    if host.ssh is None:
        return
    login = host.ssh

    def probe() -> str:
        """"ok", or why not (the wait's last state seen)."""
        try:
            ssh_probe(host.docker, login, host.name, multiplex=False)
            return "ok"
        except DockerError as exc:
            return str(exc)[-200:]

    wait_for(f"lab host {host.name}'s engine at {host.docker} (ssh)", probe, lambda v: v == "ok", timeout=timeout,
             interval=0.5, logs=lambda: local_engine().logs(host.container, tail=10))


def _tcp_engine_up(host: plan.LabHost, timeout: float = 60) -> None:
    """--engine tcp: wait for the engine to answer over tcp+TLS with pgha's client certificate."""
    if host.tls is None:
        return
    tls = tls_config(host.tls, host.name)

    def ping() -> str:
        """"ok", or why not (the wait's last state seen)."""
        return engine_answers(host.docker, tls)

    wait_for(f"lab host {host.name}'s engine at {host.docker} (TLS)", ping, lambda v: v == "ok", timeout=timeout,
             interval=0.5, logs=lambda: local_engine().logs(host.container, tail=10))


def _socket_up(what: str, url: str, container: str, timeout: float = 60, name: str = "") -> Engine:
    """Wait for a Docker-in-Docker engine to answer on its socket; a handle on it (long timeout: image loads)."""
    wait_for(what, lambda: engine_answers(url), lambda v: v == "ok", timeout=timeout,
             interval=0.5, logs=lambda: local_engine().logs(container, tail=10))
    return Engine(name or container, url=url, timeout=600)


def _engine_up(host: plan.LabHost, timeout: float = 60) -> Engine:
    """Wait for the lab host's engine to answer on its socket; a handle on it (long timeout: image loads)."""
    url = f"unix://{host.socket_url.removeprefix('unix://')}"
    return _socket_up(f"lab host {host.name}'s engine", url, host.container, timeout, name=host.name)


def _load_node_image(hosts: list[plan.LabHost], node_image: str) -> dict[str, bool]:
    """Load the node image into every lab host that lacks it (none, when the seed was copied), from ONE
    `docker save` stream fanned out to a `docker load` per host running at once (the real engine tars
    the 800 MB image once). {host: loaded now}."""
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        engines = list(pool.map(_engine_up, hosts))
    return docker_images.copy_image(local_engine(), node_image, engines, what="lab host")


def status(name: str) -> plan.LabStatus:
    path = lab_dir(name) / "lab.json"
    if not path.exists():
        raise StateError(f"no lab named {name} (run `pgha lab up --name {name}`)")
    st = plan.LabStatus.model_validate(json.loads(path.read_text()))
    states = {ct.name: ct.status for ct in docker_lab_hosts.containers(local_engine(), name)}
    for h in st.hosts:
        h.state = states.get(h.container, "absent")
    return st


def down(name: str) -> dict[str, list[str]]:
    """Remove every resource labelled pgha.lab=<name> and the lab's record."""
    if why := plan.check_name(name):
        raise StateError(why)
    _end_ssh_masters(name)
    removed = docker_lab_hosts.remove_all(local_engine(), name)
    shutil.rmtree(lab_dir(name), ignore_errors=True)
    return {"containers": removed.containers, "networks": removed.networks, "volumes": removed.volumes}


def _end_ssh_masters(name: str) -> None:
    """--engine ssh: end the ControlPersist masters pgha left for the lab's engines (they would
    exit by themselves SSH_CONTROL_PERSIST seconds after their last use, or with the lab host)."""
    path = lab_dir(name) / "lab.json"
    if not path.exists():
        return
    for h in plan.LabStatus.model_validate(json.loads(path.read_text())).hosts:
        if h.docker.startswith("ssh://"):
            ssh_end_masters(h.docker)


def lab_host_of(docker_url: str) -> tuple[str, plan.LabHost] | None:
    """(lab name, lab host) whose engine is `docker_url`, if it is a lab host (drills kill the container)."""
    root = state_root() / "labs"
    if not root.is_dir():
        return None
    for rec in sorted(root.glob("*/lab.json")):
        st = plan.LabStatus.model_validate(json.loads(rec.read_text()))
        for h in st.hosts:
            if h.docker == docker_url:
                return st.name, h
    return None


def _kill_container(container: str) -> None:
    """`docker kill` of a lab host: the machine dies with its engine and everything in it."""
    local_engine().kill(container)


def start_host(host: plan.LabHost, timeout: float = 60) -> bool:
    """Boot a lab host again and wait for its engine; True when it had to be started."""
    started = local_engine().start(host.container)
    _engine_up(host, timeout)
    _tcp_engine_up(host, timeout)
    _ssh_engine_up(host, timeout)
    return started


def partition(name: str, host: plan.LabHost, cut: bool) -> None:
    """Cut the lab host off the lab network (or reconnect it with its address)."""
    if cut:
        local_engine().disconnect(host.container, plan.network_name(name))
    else:
        local_engine().connect(host.container, plan.network_name(name), address=host.address)


def kill_host(spec: ClusterSpec, host: str) -> str:
    """host-loss: a lab host's container is killed (the machine dies with its engine); on a real
    host, every container of the cluster there is killed at once. Returns what was done."""
    found = lab_host_of(spec.host_named(host).docker)
    if found is not None:
        _kill_container(found[1].container)
        return f"lab host {found[1].container} killed"
    from tasks.docker_hosts import engines

    engine = engines(spec).on_host(host)
    names = [str(ct.name) for ct in engine.cluster_containers(spec.scope) if ct.status == "running"]
    for n in names:
        engine.kill(n)
    return f"killed {', '.join(names) or 'nothing'} on {host}"


def boot_host(spec: ClusterSpec, host: str) -> str:
    """Undo host-loss: boot the lab host again (its engine restarts the members), or start the
    cluster's containers on a real host. Returns what was done."""
    found = lab_host_of(spec.host_named(host).docker)
    if found is not None:
        return "lab host booted" if start_host(found[1]) else "lab host was running"
    from tasks.docker_hosts import engines

    engine = engines(spec).on_host(host)
    started = [str(ct.name) for ct in engine.cluster_containers(spec.scope) if engine.start(str(ct.name))]
    return f"started {', '.join(started) or 'nothing'} on {host}"


def partition_host(spec: ClusterSpec, host: str, cut: bool) -> str:
    """host-partition (lab only): the lab host cut off the lab network, or reconnected with its address."""
    found = lab_host_of(spec.host_named(host).docker)
    if found is None:
        raise StateError(f"host-partition needs a lab host; {host} is a real host (use host-loss)")
    lab, h = found
    if cut:
        partition(lab, h, True)
        return f"lab host {h.container} cut off {plan.network_name(lab)}"
    if local_engine().attached(h.container, plan.network_name(lab)):
        return "lab host was connected"
    partition(lab, h, False)
    return f"lab host {h.container} reconnected as {h.address}"


def is_lab_host(spec: ClusterSpec, host: str) -> bool:
    return lab_host_of(spec.host_named(host).docker) is not None
