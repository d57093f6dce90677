"""The cluster's TLS material on the host: generated once, kept 0600 in the state directory.

`<state>/<scope>/tls/` holds the CA (its key never leaves this directory) and the current
member and client certificates; `install` copies the mounted subset into a member's config
directory (`<state>/<scope>/config/<member>/tls`, mounted read-only at /etc/pgha/tls: bind-mounted, or
pushed into the member's config volume on a host's engine by `tasks.docker_hosts.sync_config`).
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

from stack import layout, tls
from stack.spec import ClusterSpec
from tasks.host.state import cluster_dir, config_dir, write_private


def tls_dir(scope: str) -> Path:
    return cluster_dir(scope) / layout.TLS_SUBDIR


def ca_path(scope: str) -> Path:
    """The CA certificate clients verify the cluster with (`pgha dsn`'s sslrootcert)."""
    return tls_dir(scope) / "ca.crt"


def client_files(scope: str) -> tuple[Path, Path]:
    return tls_dir(scope) / "client.crt", tls_dir(scope) / "client.key"


def _read(d: Path, names: tuple[str, ...]) -> dict[str, str] | None:
    if all((d / f).exists() for f in names):
        return {f: (d / f).read_text() for f in names}
    return None


# Members of one role are placed concurrently (threads): one CA must come out, not one per thread.
_LOCK = threading.Lock()


def material(spec: ClusterSpec) -> dict[str, str]:
    """CA and leaves, created on first use (and leaves re-issued when missing)."""
    with _LOCK:
        return _material(spec)


def _material(spec: ClusterSpec) -> dict[str, str]:
    d = tls_dir(spec.scope)
    ca = _read(d, tls.CA_FILES)
    if ca is None:
        ca = tls.make_ca(spec)
        for f, text in ca.items():
            write_private(d / f, text)
    leaves = _read(d, tls.LEAF_FILES)
    if leaves is None:
        base = _read(d, tls.BASE_LEAVES)
        if base is None:
            leaves = tls.make_leaves(spec, ca)
            for f, text in leaves.items():
                write_private(d / f, text)
        else:
            # A cluster made before the gateway or the pooler certificate existed: issue the
            # missing one alone (new member and client certificates would mean a rotation).
            leaves = dict(base)
            for names, make in tls.LATER_LEAVES.items():
                have = _read(d, names)
                if have is None:
                    have = make(spec, ca)
                    for f, text in have.items():
                        write_private(d / f, text)
                leaves |= have
    return {**ca, **leaves}


def renew(spec: ClusterSpec) -> dict[str, str]:
    """New member, client, gateway and pooler certificates from the same CA (the old ones are replaced)."""
    with _LOCK:
        ca = _material(spec)
        leaves = tls.make_leaves(spec, {f: ca[f] for f in tls.CA_FILES})
        for f, text in leaves.items():
            write_private(tls_dir(spec.scope) / f, text)
        return leaves


def peer_cn_marker(scope: str) -> Path:
    """Present once every etcd member of the cluster presents etcd's peer certificate (`stack.tls`)."""
    return tls_dir(scope) / "etcd-peer-cn-on"


def peer_cn_enforced(spec: ClusterSpec, etcd_live: bool) -> bool:
    """Whether etcd may accept only the peer certificate's common name from a peer now.

    Yes for a new etcd (no member runs yet), a single member (no peer), or once the marker says every
    member presents the peer certificate. No for the members of an older multi-member etcd that still
    present the member certificate: each is recreated with the peer certificate first (etcd accepts
    any certificate of the CA from a peer meanwhile), then the check is switched on member by member.
    """
    return not etcd_live or len(spec.etcd_names()) == 1 or peer_cn_marker(spec.scope).exists()


def mark_peer_cn(spec: ClusterSpec) -> None:
    write_private(peer_cn_marker(spec.scope), "every etcd member presents the peer certificate\n")


def member_role(spec: ClusterSpec, member: str) -> str:
    """The role of a member by its name (`fencer-<host>` with hosts is a fencer)."""
    if member in spec.etcd_names():
        return "etcd"
    if member in (spec.haproxy_member, spec.pooler_member, spec.metrics_member):
        return member
    if member == spec.fencer_member or member.startswith(f"{spec.fencer_member}-"):
        return "fencer"
    return "patroni"


def install(spec: ClusterSpec, member: str) -> bool:
    """Write the TLS files the member's role uses (`tls.ROLE_FILES`) into its config dir and remove
    any other (a cluster made by an older pgha gave every role every key); True when one changed.
    No-op with TLS off."""
    if not spec.tls.enabled:
        return False
    files = material(spec)
    wanted = tls.ROLE_FILES[member_role(spec, member)]
    d = config_dir(spec.scope, member) / layout.TLS_SUBDIR
    changed = False
    for f in tls.MOUNTED_FILES:
        if f in wanted:
            changed |= write_private(d / f, files[f])
        elif (d / f).exists():
            (d / f).unlink()
            changed = True
    return changed


def certificates(spec: ClusterSpec) -> list[tls.CertInfo]:
    """What the state directory holds now (the CA and the leaves), for the audit's expiry row."""
    d = tls_dir(spec.scope)
    return [tls.cert_info(f, (d / f).read_text()) for f in ("ca.crt", *tls.LEAVES) if (d / f).exists()]


def expiry(spec: ClusterSpec, now: dt.datetime | None = None) -> tuple[str, str]:
    return tls.expiry_outcome(certificates(spec), now or dt.datetime.now(dt.UTC), spec.tls.expiry_warn_days)


def share_ca(blue: ClusterSpec, green: ClusterSpec) -> None:
    """Green (a major upgrade's new cluster) issues its certificates from blue's CA: blue's HAProxy,
    which routes the clients to green after the cutover, verifies green's Patroni with blue's CA.

    A green state directory left by an earlier upgrade of another cluster with the same scope
    (down --volumes removed that cluster, not `<scope>-green`'s files) holds another CA: it is
    replaced by blue's and its leaves re-issued, or green's members would serve certificates blue
    cannot verify (`certificate verify failed` when green subscribes to blue)."""
    if not blue.tls.enabled:
        return
    src = material(blue)
    d = tls_dir(green.scope)
    with _LOCK:
        if _read(d, tls.CA_FILES) == {f: src[f] for f in tls.CA_FILES}:
            return
        for f in tls.LEAF_FILES:  # signed by the other CA: re-issued from blue's by `material`
            (d / f).unlink(missing_ok=True)
        for f in tls.CA_FILES:
            write_private(d / f, src[f])
