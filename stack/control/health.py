#!/opt/pgha/bin/python
"""pgha-control-health server|worker: the containers' health checks (exit 0 healthy, 1 not).

server: GET $PREFECT_API_URL/health answers 200.
worker: the server lists this worker ($PGHA_WORKER_NAME) in the pgha pool with a heartbeat
younger than 90 s: the worker is polling. The secret is read from the mounted file when the
check runs; it is never part of the check's command line.
"""

import base64
import datetime as dt
import json
import os
import sys
import urllib.request

API = os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api")
AUTH_FILE = "/run/pgha/api-auth"
MAX_AGE_S = 90


def request(path: str, body: dict | None = None) -> object:
    req = urllib.request.Request(API + path, method="POST" if body is not None else "GET",  # noqa: S310
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with open(AUTH_FILE) as f:
            req.add_header("Authorization", "Basic " + base64.b64encode(f.read().strip().encode()).decode())
    except OSError:
        pass
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - the local API
        return json.loads(resp.read() or b"null")


def main(role: str) -> int:
    if role == "server":
        request("/health")
        return 0
    name = os.environ["PGHA_WORKER_NAME"]
    workers = request(f"/work_pools/{os.environ.get('PGHA_POOL', 'pgha')}/workers/filter", {})
    for w in workers if isinstance(workers, list) else []:
        if w.get("name") == name and w.get("last_heartbeat_time"):
            seen = dt.datetime.fromisoformat(w["last_heartbeat_time"].replace("Z", "+00:00"))
            age = (dt.datetime.now(dt.UTC) - seen).total_seconds()
            print(f"worker {name}: last heartbeat {age:.0f}s ago")
            return 0 if age < MAX_AGE_S else 1
    print(f"worker {name}: not registered in the pool")
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "server"))
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", with its reason
        print(f"unhealthy: {type(exc).__name__}: {exc}"[:200])
        sys.exit(1)
