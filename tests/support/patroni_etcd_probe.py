# Runs inside the node image: Patroni's own etcd3 client against a stub etcd that answers as an
# etcd without quorum does; prints one JSON line: what update_leader made of it.
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = json.loads(sys.argv[1])  # {"status": 503, "body": {...}} for /v3/lease/keepalive once "broken"
state = {"broken": False}
HEADER = {"cluster_id": "1", "member_id": "1", "revision": "5", "raft_term": "2"}

class Stub(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"etcdserver": "3.5.16", "etcdcluster": "3.5.0"})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        port = self.server.server_address[1]
        if self.path.endswith("/cluster/member/list"):
            self._send(200, {"header": HEADER, "members": [{"name": "e1", "clientURLs": [f"http://127.0.0.1:{port}"]}]})
        elif self.path.endswith("/lease/grant"):
            self._send(200, {"header": HEADER, "ID": "7", "TTL": "30"})
        elif self.path.endswith("/lease/keepalive"):
            if state["broken"]:
                self._send(ANSWER["status"], ANSWER["body"])
            else:
                self._send(200, {"result": {"header": HEADER, "ID": "7", "TTL": "30"}})
        elif self.path.endswith("/kv/txn"):
            self._send(200, {"header": HEADER, "succeeded": True})
        else:
            self._send(200, {"header": HEADER, "kvs": [], "count": "0"})

srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
threading.Thread(target=srv.serve_forever, daemon=True).start()
port = srv.server_address[1]

from patroni.version import __version__
from patroni.dcs import get_dcs
from patroni.exceptions import DCSError

config = {"scope": "probe", "name": "n1", "ttl": 30, "loop_wait": 2, "retry_timeout": 3,
          "patronictl": True, "etcd3": {"hosts": [f"127.0.0.1:{port}"], "protocol": "http"}}
dcs = get_dcs(config)
dcs.refresh_lease()
state["broken"] = True
args = []
if not __version__.startswith("3."):  # Patroni 4 passes the leader it read
    from patroni.dcs import Leader
    args = [Leader(0, "7", None)]
try:
    outcome = "lock kept" if dcs._update_leader(*args) else "lock lost"
except DCSError as e:
    outcome = "dcs unreachable"
print(json.dumps({"patroni": __version__, "outcome": outcome}))
