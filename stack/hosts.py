"""Many hosts: the spec's `hosts:` and `placement:`, and which host runs which member (pure).

A cluster over several Docker engines runs every member with **host networking** on its host:
one etcd member and one Patroni node per host at most, each listening on the host's own
`address` (2379/2380 etcd, 5432 PostgreSQL, 8008 Patroni REST), so Patroni's
`connect_address`, etcd's peer/client URLs and HAProxy's backends are plain host addresses,
with no port mapping to keep consistent between hosts. HAProxy runs on every host and binds
`ports.rw`/`ports.ro`/`ports.stats` on that host's address. Why host networking: a member's
address is then the one address the other hosts can reach, with nothing to publish per member
and no overlay network to run; the price is that two members of one role cannot share a host
(they would want the same ports), which quorum-safe placement forbids anyway.

Placement is checked here, before anything is created: losing any one host must leave etcd
a majority and Patroni a node to promote, or the spec says `allow_unsafe_placement: true`.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from stack import typed

HOST_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
ENGINE_SCHEMES = ("unix://", "tcp://", "ssh://")
ENGINE_SOCKET = "/var/run/docker.sock"  # where a machine's Docker engine listens, unless `engine_socket` says

# Ports a member listens on in its host's network namespace (host networking): the cluster's
# client ports (ports.rw/ro/stats, HAProxy's) must not collide with them.
MEMBER_PORTS = {5432: "PostgreSQL", 8008: "Patroni's REST API", 2379: "etcd clients", 2380: "etcd peers",
                8432: "pgBackRest's TLS server", 8433: "the pgBackRest repository host's server"}


class _Strict(typed.Strict):
    """Unknown keys refused, frozen, no control character in any string (`stack.typed`)."""


class EngineTLS(_Strict):
    """Client certificate for a tcp:// engine (file paths, never inline keys)."""

    ca: str = Field(..., min_length=1, description="CA certificate file that signed the engine's certificate")
    cert: str = Field(..., min_length=1, description="client certificate file")
    key: str = Field(..., min_length=1, description="client key file (0600)")

    @field_validator("ca", "cert", "key")
    @classmethod
    def _path(cls, v: str) -> str:
        typed.host_path(v)
        if "-----BEGIN" in v:
            raise ValueError("give the path of a file, never the key or certificate itself")
        return v


SSH_TARGET_RE = re.compile(r"^ssh://(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])"
                           r"(?::(?P<port>[0-9]{1,5}))?$")
# A ControlPersist master (one per engine URL, key and known_hosts) lives this long after its
# last use, then exits by itself: bounded even when pgha is killed (`lab down` ends it at once).
SSH_CONTROL_PERSIST = 30
# sun_path holds 108 bytes and ssh adds a ".XXXXXXXXXXXXXXXX" suffix while it binds: longer
# control paths are not used (no multiplexing rather than an ssh error).
SSH_CONTROL_PATH_MAX = 88


class EngineSSH(_Strict):
    """How pgha logs in to an ssh:// engine: a private key file and a known_hosts file pinning the
    host's key (file paths; the user's ~/.ssh, ssh config and agent are not consulted)."""

    key: str = Field(..., min_length=1, description="private key file (0600) the host's authorized_keys accepts")
    known_hosts: str = Field(..., min_length=1, description="known_hosts file with the host's key "
                                                            "([host]:port form for a port other than 22)")
    multiplex: bool = Field(False, description="share one ssh login per engine (ControlMaster, ended "
                                               f"{SSH_CONTROL_PERSIST} s after its last use): saves the key exchange "
                                               "per new connection, worth it over a long round trip; no gain measured "
                                               "over loopback")

    @field_validator("key", "known_hosts")
    @classmethod
    def _path(cls, v: str) -> str:
        if "-----BEGIN" in v or v.startswith(("ssh-", "ecdsa-")) or "\n" in v:
            raise ValueError("give the path of a file, never the key itself")
        return v


def ssh_target(url: str) -> tuple[str | None, str, int | None]:
    """(user, host, port) of `ssh://[user@]host[:port]`; ValueError (one line) otherwise."""
    m = SSH_TARGET_RE.match(url)
    if m is None:
        raise ValueError(f"docker '{url}' must be ssh://[user@]host[:port] (no path)")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"docker '{url}': port {port} is not 1-65535")
    return m["user"], m["host"].strip("[]"), port


def ssh_quote(value: str) -> str:
    """A path as one `-o Key=value` value: quoted (spaces), `%` escaped (ssh expands %-tokens)."""
    return '"' + value.replace("%", "%%") + '"'


def ssh_control_path(directory: str, url: str, ssh: EngineSSH | None) -> str | None:
    """The ControlMaster socket for one engine URL *and* credentials: a spec naming another key or
    known_hosts never rides a master authenticated with different ones. None when too long."""
    creds = (ssh.key, ssh.known_hosts) if ssh is not None else ("(ssh setup)", "")
    digest = hashlib.sha256("\0".join((url, *creds)).encode()).hexdigest()[:12]
    path = f"{directory.rstrip('/')}/{ssh_control_prefix(url)}{digest}"
    return path if len(path.encode()) <= SSH_CONTROL_PATH_MAX else None


def ssh_control_prefix(url: str) -> str:
    """The readable start of an engine's control socket names (`<host>-<port>-`): whoever ends
    the engine (`lab down`) finds every master for it, whatever credentials opened them."""
    _, host, port = ssh_target(url)
    return f"{re.sub(r'[^A-Za-z0-9.-]', '_', host)}-{port or 22}-"


def ssh_argv(url: str, ssh: EngineSSH | None, command: list[str], control_path: str | None = None) -> list[str]:
    """The system ssh's argv for an ssh:// engine: only the spec's key, only its known_hosts,
    host key checked strictly, never a prompt (BatchMode), no ~/.ssh/config (`-F none`).

    Without an `ssh:` block (`ssh` None) the user's own ssh setup decides the key and the
    known_hosts (config, agent), still never prompting and never accepting an unknown host key.
    With `control_path`, connections share one master (ControlMaster=auto, ControlPersist
    bounded; the spec's `ssh.multiplex`); without, every connection is a full ssh login.
    """
    user, host, port = ssh_target(url)
    argv = ["ssh"]
    if ssh is not None:
        argv += ["-F", "none", "-i", ssh.key.replace("%", "%%"), "-o", "IdentitiesOnly=yes",
                 "-o", "IdentityAgent=none", "-o", f"UserKnownHostsFile={ssh_quote(ssh.known_hosts)}",
                 "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no"]
    argv += ["-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no", "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=10",
             "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
    if control_path:
        argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={ssh_quote(control_path)}",
                 "-o", f"ControlPersist={SSH_CONTROL_PERSIST}"]
    else:
        argv += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
    if user:
        argv += ["-l", user]
    if port:
        argv += ["-p", str(port)]
    return [*argv, "--", host, *command]


class HostSpec(_Strict):
    """One machine with a Docker engine."""

    name: str = Field(..., description="short name (h1, db-a...)")
    docker: str = Field(..., description="how pgha reaches its engine: unix:///path, tcp://host:2376 (with tls), "
                                         "ssh://user@host")
    address: str = Field(..., min_length=1, description="how the other hosts reach services on this one")
    tls: EngineTLS | None = Field(None, description="tcp:// engines: the client certificate files for mutual TLS")
    ssh: EngineSSH | None = Field(None, description="ssh:// engines: the key and known_hosts files pgha uses "
                                                    "(default: the user's own ssh setup)")
    client_address: str | None = Field(None, description="where pgha and clients reach this host's HAProxy "
                                                         "(default: address)")
    rw_port: int | None = Field(None, ge=1024, le=65535, description="this host's R/W port as clients reach it "
                                                                     "(default ports.rw)")
    ro_port: int | None = Field(None, ge=1024, le=65535, description="this host's R/O port as clients reach it "
                                                                     "(default ports.ro)")
    pool_port: int | None = Field(None, ge=1024, le=65535, description="this host's pooler port as clients reach it "
                                                                       "(default ports.pool)")
    engine_socket: str = Field(ENGINE_SOCKET, description="the engine's unix socket on this machine (the fencing "
                                                          "watcher mounts it read-only behind its GET-only proxy)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not HOST_NAME_RE.match(v):
            raise ValueError(f"host name '{v}' must be lowercase letters, digits and dashes, starting with a letter")
        return v

    @field_validator("engine_socket")
    @classmethod
    def _socket(cls, v: str) -> str:
        if not typed.SAFE_PATH_RE.match(v) or ".." in v.split("/"):
            raise ValueError(f"engine_socket '{v}' must be an absolute path on the host of letters, digits and "
                             f". _ @ + - / (e.g. {ENGINE_SOCKET})")
        return v

    @field_validator("address", "client_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return None if v is None else typed.host_address(v)

    @field_validator("docker")
    @classmethod
    def _docker(cls, v: str) -> str:
        if not v.startswith(ENGINE_SCHEMES):
            raise ValueError(f"docker '{v}' must start with one of {', '.join(ENGINE_SCHEMES)}")
        if v.startswith("ssh://"):
            ssh_target(v)
        elif v.startswith("tcp://"):
            typed.endpoint(v.removeprefix("tcp://"))
        elif not typed.SAFE_PATH_RE.match(v.removeprefix("unix://")):
            raise ValueError(f"docker '{v}' must be unix:// and an absolute path of letters, digits and . _ @ + - /")
        return v

    @model_validator(mode="after")
    def _ssh_only_for_ssh(self) -> HostSpec:
        if self.ssh is not None and not self.docker.startswith("ssh://"):
            raise ValueError(f"host {self.name}: ssh (key, known_hosts) goes with an ssh:// engine, not {self.docker}")
        return self


class Spread(StrEnum):
    SPREAD = "spread"  # member i on host i (round robin)


class HaproxyPlacement(StrEnum):
    EVERY_HOST = "every-host"


class Placement(_Strict):
    """Which host runs what: `spread` (one per host, in order) or an explicit map member -> host."""

    etcd: Spread | dict[str, str] = Field(Spread.SPREAD, description="spread: etcd-i on the i-th host (round "
                                                                      "robin); or a map etcd-N: host naming every member")
    patroni: Spread | dict[str, str] = Field(Spread.SPREAD, description="spread: pg-i on the i-th host (round "
                                                                         "robin); or a map pg-N: host naming every node")
    haproxy: HaproxyPlacement = Field(HaproxyPlacement.EVERY_HOST, description="every-host: an HAProxy on each host "
                                                                                 "(the only placement)")


def place(members: list[str], hosts: list[str], rule: Spread | dict[str, str], role: str) -> dict[str, str]:
    """member -> host name for one role; ValueError (one line) on a map that does not fit."""
    if isinstance(rule, dict):
        missing = [m for m in members if m not in rule]
        extra = [m for m in rule if m not in members]
        bad = [h for h in rule.values() if h not in hosts]
        if missing or extra:
            raise ValueError(f"placement.{role} must name exactly {', '.join(members)} "
                             f"({'missing ' + ', '.join(missing) if missing else 'unknown ' + ', '.join(extra)})")
        if bad:
            raise ValueError(f"placement.{role} names unknown host {bad[0]} (hosts: {', '.join(hosts)})")
        return {m: rule[m] for m in members}
    return {m: hosts[i % len(hosts)] for i, m in enumerate(members)}


def watched_hosts(nodes_on: dict[str, str], hosts: list[str]) -> list[str]:
    """The hosts that get a fencing watcher: every host running a Patroni node, in host order.

    A watcher follows its own engine's events only (the engine that saw the container die is
    the one that can confirm it dead), so a host without a node has nothing to watch.
    """
    held = set(nodes_on.values())
    return [h for h in hosts if h in held]


def unsafe_reason(etcd_on: dict[str, str], nodes_on: dict[str, str], hosts: list[str]) -> str | None:
    """Why losing one host would stop the cluster (None: any one host may be lost)."""
    n_etcd = len(etcd_on)
    need = n_etcd // 2 + 1
    for h in hosts:
        held = sum(1 for v in etcd_on.values() if v == h)
        if n_etcd - held < need:
            return (f"losing host {h} (it holds {held} of {n_etcd} etcd members) leaves {n_etcd - held}, "
                    f"below etcd's quorum of {need}")
    for h in hosts:
        held = sum(1 for v in nodes_on.values() if v == h)
        if held == len(nodes_on):
            return f"losing host {h} loses every Patroni node ({held} of {len(nodes_on)})"
    return None


def crowded(on: dict[str, str], role: str) -> str | None:
    """Two members of one role on one host: with host networking they would want the same ports."""
    seen: dict[str, str] = {}
    for m, h in on.items():
        if h in seen:
            return (f"{seen[h]} and {m} are both on host {h}: with hosts, each host runs at most one {role} "
                    f"(members use host networking and the same ports)")
        seen[h] = m
    return None


def duplicate(hosts: list[HostSpec]) -> str | None:
    """Two hosts with the same name, engine URL or address."""
    for key in ("name", "docker", "address"):
        seen: set[str] = set()
        for h in hosts:
            v = getattr(h, key)
            if v in seen:
                return f"two hosts have the same {key} '{v}'; each host needs its own"
            seen.add(v)
    return None


def multi_host_uri(user: str, endpoints: list[tuple[str, int]], dbname: str, read_only: bool,
                   auth: str = "") -> str:
    """libpq multi-host URI: clients try each host's HAProxy in turn and keep the one that fits.

    R/W: `target_session_attrs=read-write` (any host's R/W port reaches the primary; the
    attribute also refuses a demoted node). R/O: the R/O ports, `prefer-standby`.
    """
    where = ",".join(f"{h}:{p}" for h, p in endpoints)
    attrs = "prefer-standby" if read_only else "read-write"
    return f"postgresql://{user}{auth}@{where}/{dbname}?target_session_attrs={attrs}"
