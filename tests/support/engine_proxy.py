"""A fault-injecting relay in front of the real Docker engine's socket (tests only).

`pgha` reached through `DOCKER_HOST=unix://<relay>` talks to the real engine; the relay passes
every byte through, except that, when armed, it cuts the output of chosen `docker exec`s short:
the exec is created and started for real (the command runs to its end in the container), the
start's response headers reach the client, then the connection is closed before any output.
That is what a busy engine does now and then (`tasks.node_exec` calls it "the engine cut this
command's output short"), made to happen on cue. Bounded: a daemon thread per connection, all
gone when the relay is closed.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from types import TracebackType

ENGINE_SOCKET = "/var/run/docker.sock"
_EXEC_CREATE = re.compile(rb"^POST /(?:v[\d.]+/)?containers/[^/ ]+/exec ")
_EXEC_START = re.compile(rb"^POST /(?:v[\d.]+/)?exec/[^/ ]+/start ")


class EngineRelay:
    """`with EngineRelay(path) as relay:` then `relay.cut_exec_output(marker, times)`."""

    def __init__(self, path: Path, engine_socket: str = ENGINE_SOCKET) -> None:
        self.path = path
        self.engine_socket = engine_socket
        self._lock = threading.Lock()
        self._marker = b""
        self._to_cut = 0  # exec starts still to cut, counted once their create carried the marker
        self._armed_starts = 0
        self.cut = 0  # execs whose output was cut
        self.relayed = 0  # connections relayed
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._open: list[socket.socket] = []
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def cut_exec_output(self, marker: bytes, times: int) -> None:
        """Cut the output of the next `times` execs whose command contains `marker`."""
        with self._lock:
            self._marker, self._to_cut = marker, times

    def __enter__(self) -> EngineRelay:
        if self.path.exists():
            self.path.unlink()
        self._server.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._closed.set()
        self._server.close()
        for s in list(self._open):
            _close(s)
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.engine_socket)
            self._open += [client, upstream]
            self.relayed += 1
            conn = _Conn(client, upstream)
            threading.Thread(target=self._requests, args=(conn,), daemon=True).start()
            threading.Thread(target=self._responses, args=(conn,), daemon=True).start()

    def _responses(self, conn: _Conn) -> None:
        """Engine -> client; on a cut connection only the start's response headers pass, then the
        client's side is closed and the rest (the command's output, its exit mark) is read and dropped."""
        head = b""
        try:
            while data := conn.upstream.recv(65536):
                if not conn.cutting.is_set():
                    conn.client.sendall(data)
                    continue
                if conn.client_open:
                    head += data
                    if b"\r\n\r\n" in head:
                        conn.client.sendall(head.partition(b"\r\n\r\n")[0] + b"\r\n\r\n")
                        _close(conn.client)
                        conn.client_open = False
        except OSError:
            pass
        _close(conn.upstream)
        _close(conn.client)

    def _requests(self, conn: _Conn) -> None:
        """Client -> engine, one HTTP request at a time, so an exec's create and start can be seen."""
        client, upstream = conn.client, conn.upstream
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = client.recv(65536)
                    if not data:
                        raise OSError("client closed")
                    buf += data
                head, _, rest = buf.partition(b"\r\n\r\n")
                headers = head.lower()
                if b"transfer-encoding: chunked" in headers:  # not parsed: relay the rest as it comes
                    upstream.sendall(buf)
                    while data := client.recv(65536):
                        upstream.sendall(data)
                    raise OSError("client closed")
                m = re.search(rb"\r\ncontent-length: *(\d+)", headers)
                length = int(m.group(1)) if m else 0
                while len(rest) < length:
                    data = client.recv(65536)
                    if not data:
                        raise OSError("client closed")
                    rest += data
                body, buf = rest[:length], rest[length:]
                if _EXEC_CREATE.match(head):
                    with self._lock:
                        if self._to_cut and self._marker in body:
                            self._to_cut -= 1
                            self._armed_starts += 1
                elif _EXEC_START.match(head):
                    with self._lock:
                        cut, self._armed_starts = self._armed_starts > 0, max(0, self._armed_starts - 1)
                    if cut:
                        # The engine runs the command to its end; the client gets the headers only.
                        conn.cutting.set()
                        self.cut += 1
                upstream.sendall(head + b"\r\n\r\n" + body)
                if conn.cutting.is_set():
                    return  # the response side ends this connection
        except OSError:
            _close(upstream)
            _close(client)


class _Conn:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.cutting = threading.Event()
        self.client_open = True


def _close(s: socket.socket) -> None:
    # shutdown first: a bare close() from one thread neither wakes another thread's recv() on the
    # socket nor ends the connection for the peer while that recv() holds the file open.
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
