"""Run inside a node image (`python3 -c`): Patroni's own etcd3 client against a stub etcd.

The stub answers like a healthy etcd until the lease has been granted, then answers the lease
keepalive with the status and body given as argv[1] (what an etcd without quorum says). The
one JSON line printed is what Patroni's `_update_leader` made of it: "lock kept", "lock lost"
(Patroni would demote) or "dcs unreachable" (DCSError: failsafe_mode applies).
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HEADER = {"cluster_id": "1", "member_id": "1", "revision": "5", "raft_term": "2"}


class Stub(BaseHTTPRequestHandler):
    answer: dict[str, Any] = {}
    broken = False

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"etcdserver": "3.5.16", "etcdcluster": "3.5.0"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        port = self.server.server_address[1]
        if self.path.endswith("/cluster/member/list"):
            self._send(200, {"header": HEADER, "members": [{"name": "e1", "clientURLs": [f"http://127.0.0.1:{port}"]}]})
        elif self.path.endswith("/lease/grant"):
            self._send(200, {"header": HEADER, "ID": "7", "TTL": "30"})
        elif self.path.endswith("/lease/keepalive") and Stub.broken:
            self._send(Stub.answer["status"], Stub.answer["body"])
        elif self.path.endswith("/lease/keepalive"):
            self._send(200, {"result": {"header": HEADER, "ID": "7", "TTL": "30"}})
        elif self.path.endswith("/kv/txn"):
            self._send(200, {"header": HEADER, "succeeded": True})
        else:
            self._send(200, {"header": HEADER, "kvs": [], "count": "0"})


def main() -> None:
    from patroni.dcs import get_dcs  # type: ignore[import-not-found]  # (the node image's Patroni)
    from patroni.exceptions import DCSError  # type: ignore[import-not-found]
    from patroni.version import __version__  # type: ignore[import-not-found]

    Stub.answer = json.loads(sys.argv[1])
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    config = {"scope": "probe", "name": "n1", "ttl": 30, "loop_wait": 2, "retry_timeout": 3, "patronictl": True,
              "etcd3": {"hosts": [f"127.0.0.1:{srv.server_address[1]}"], "protocol": "http"}}
    dcs = get_dcs(config)
    dcs.refresh_lease()
    Stub.broken = True
    args = []
    if not __version__.startswith("3."):  # Patroni 4 passes the leader it read
        from patroni.dcs import Leader  # type: ignore[import-not-found]
        args = [Leader(0, "7", None)]
    try:
        outcome = "lock kept" if dcs._update_leader(*args) else "lock lost"
    except DCSError:
        outcome = "dcs unreachable"
    print(json.dumps({"patroni": __version__, "outcome": outcome}))


if __name__ == "__main__":
    main()
