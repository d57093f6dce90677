"""The cluster certificates inside running containers: install a renewed set, read what is served.

The only code that touches TLS files in live containers (the host side is `tasks.host.tls`; a
new container copies them itself through `stack.tls.START_SCRIPT`). Runs through `NodeExec`
as root; no key material passes through a command line (files are copied inside the container).
"""

from __future__ import annotations

from stack import layout, tls
from stack.errors import PghaError
from stack.pooler import listen_port
from stack.spec import ClusterSpec
from tasks.docker_hosts import engines
from tasks.node_exec import NodeExec, last_lines, node


class CertError(PghaError):
    """A certificate could not be installed or is not the one served."""


def reinstall(spec: ClusterSpec, member: str, user: str) -> None:
    """Copy the member's mounted TLS files (already renewed on the host) into its service user's copy
    (on every host that runs it: the pooler runs beside each host's HAProxy)."""
    script = tls.POOLER_REINSTALL if member == spec.pooler_member else tls.REINSTALL
    for e in engines(spec).placed(member):
        r = NodeExec(e, spec.container(member)).run(["sh", "-c", script, user], user="root", timeout=15)
        if not r.ok:
            raise CertError(f"cannot install the renewed certificates in {member}: {last_lines(r.out + r.err)}")


def served_serial(spec: ClusterSpec, member: str, port: int, starttls: str | None = None) -> int | None:
    """Serial number of the certificate `member` serves on `port` (None when it serves none)."""
    st = f"-starttls {starttls} " if starttls else ""
    script = (f"openssl s_client {st}-connect localhost:{port} -CAfile {tls.ROOT_CA} </dev/null 2>/dev/null "
              "| openssl x509 -noout -serial")
    r = node(spec, member).run(["sh", "-c", script], user="root", timeout=15)
    out = r.out.strip()
    if not r.ok or not out.startswith("serial="):
        return None
    return int(out.removeprefix("serial="), 16)


def endpoints(spec: ClusterSpec) -> list[tuple[str, int, str | None, str]]:
    """(member, port, starttls, the certificate file it serves) of every TLS server of the cluster."""
    out: list[tuple[str, int, str | None, str]] = [(m, layout.ETCD_CLIENT_PORT, None, "member.crt")
                                                    for m in spec.etcd_names()]
    for m in spec.node_names():
        out += [(m, layout.PATRONI_API_PORT, None, "member.crt"), (m, layout.PG_PORT, "postgres", "member.crt")]
    if spec.runs_pooler:
        out.append((spec.pooler_member, listen_port(spec), "postgres", "pooler.crt"))
    return out


def running_tls(spec: ClusterSpec) -> bool | None:
    """Whether the cluster's existing etcd runs with TLS (started through the TLS wrapper); None: no etcd yet."""
    member = spec.etcd_names()[0]
    ct = engines(spec).of(member).find_container(spec.container(member))
    if ct is None:
        return None
    entry = ct.attrs.get("Config", {}).get("Entrypoint") or []
    return any(tls.START_FILE in str(a) for a in entry)
