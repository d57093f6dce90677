"""The worker's guard: its Prefect credentials go only to the server pgha started.

Loaded by every Python process in the worker's container (the worker, the flow runs it starts,
its health check): the container's PYTHONPATH names this directory. An audit hook on
`socket.connect` stops any connection to 127.0.0.1:$PGHA_SERVER_PORT (or another loopback address
on that port) unless the socket listening there is the one the server's container holds: its
inode, read from the host's /proc/net/tcp (the worker runs in the host's network namespace), must
be the one published in $PGHA_SERVER_LISTENER, a file on the server's database volume (read-only
here) that the server's container writes after finding the socket among its own processes' open
files. A process another user runs on that port (while the server's container is stopped) has a
socket of its own: the connection is refused before anything, credentials included, is sent.

Self-contained (standard library only): it runs before anything else is imported.
"""

from __future__ import annotations

import errno
import os
import sys

PROC_NET_TCP = "/proc/net/tcp"
LISTEN = "0A"


def listeners(table: str, port: int) -> set[str]:
    """The inodes of the sockets listening on 127.0.0.1:port or 0.0.0.0:port in a /proc/net/tcp text."""
    local = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    found = set()
    for line in table.splitlines()[1:]:
        f = line.split()
        if len(f) > 9 and f[1] in local and f[3] == LISTEN:
            found.add(f[9])
    return found


def is_loopback(host: object) -> bool:
    return isinstance(host, str) and (host.startswith("127.") or host in ("::1", "localhost")
                                      or host.startswith("::ffff:127."))


def refusal(address: object, port: int, table: str, published: str) -> str | None:
    """Why a connection to `address` must not be made (None: it may). Pure: unit-tested."""
    if not (isinstance(address, tuple) and len(address) >= 2 and address[1] == port and is_loopback(address[0])):
        return None
    if address[0] not in ("127.0.0.1", "::ffff:127.0.0.1"):
        return f"{address[0]}:{port} is not where the Prefect server listens (127.0.0.1)"
    held = listeners(table, port)
    if not published:
        return f"127.0.0.1:{port}: the server's container has not published its listening socket yet"
    if held != {published}:
        return f"127.0.0.1:{port} is not held by the Prefect server pgha started"
    return None


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def install() -> None:
    port_s, marker = os.environ.get("PGHA_SERVER_PORT", ""), os.environ.get("PGHA_SERVER_LISTENER", "")
    if not port_s.isdigit() or not marker:
        return
    port = int(port_s)

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event != "socket.connect" or len(args) < 2:
            return
        address = args[1]
        if not (isinstance(address, tuple) and len(address) >= 2 and address[1] == port
                and is_loopback(address[0])):
            return
        why = refusal(address, port, _read(PROC_NET_TCP), _read(marker))
        if why is not None:
            sys.stderr.write(f"pgha: connection refused: {why}; nothing sent\n")
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"pgha: {why}; nothing sent")

    sys.addaudithook(hook)


install()
