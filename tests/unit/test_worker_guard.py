"""The worker's guard (stack/control/site/sitecustomize.py): credentials only to the server's own socket."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tasks import control_plane as cp

ROOT = Path(__file__).resolve().parents[2]
GUARD = ROOT / "stack" / "control" / "site" / "sitecustomize.py"
HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def guard() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pgha_worker_guard", GUARD)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # PGHA_SERVER_LISTENER unset here: installs nothing
    return mod


def row(local: str, state: str, inode: str, uid: int = 0) -> str:
    return f"   0: {local} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000 {uid:5d} 0 {inode} 1\n"


def test_listeners_reads_only_the_port_listening_on_loopback_or_any() -> None:
    g = guard()
    table = HEAD + row("0100007F:6590", "0A", "111") + row("0100007F:6591", "0A", "222") \
        + row("0100007F:6590", "01", "333") + row("0200007F:6590", "0A", "444")
    assert g.listeners(table, 0x6590) == {"111"}
    assert g.listeners(HEAD + row("00000000:6590", "0A", "555"), 0x6590) == {"555"}


def test_refusal_decides_by_the_published_inode() -> None:
    g, port = guard(), 0x6590
    server = HEAD + row("0100007F:6590", "0A", "111")
    assert g.refusal(("127.0.0.1", port), port, server, "111") is None
    assert g.refusal(("10.0.0.5", port), port, "", "") is None  # not the local server's port: not its business
    assert g.refusal(("127.0.0.1", 5432), port, "", "") is None
    impostor = HEAD + row("0100007F:6590", "0A", "999", uid=1000)
    assert "not held by the Prefect server" in g.refusal(("127.0.0.1", port), port, impostor, "111")
    assert "not held" in g.refusal(("127.0.0.1", port), port, HEAD, "111")  # nothing listens: refused too
    assert "not held" in g.refusal(("127.0.0.1", port), port, server + row("00000000:6590", "0A", "7"), "111")
    assert "not published" in g.refusal(("127.0.0.1", port), port, server, "")
    assert "not where the Prefect server listens" in g.refusal(("::1", port, 0, 0), port, server, "111")
    assert "not where" in g.refusal(("127.0.0.2", port), port, server, "111")


def test_the_hook_refuses_before_anything_is_sent(tmp_path: Path) -> None:
    """A real process with the guard loaded: a connection to a port whose listener is not the
    published one fails with ECONNREFUSED, and the listener accepts nothing."""
    code = f"""
import socket, sys, json
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
import os
os.environ["PGHA_SERVER_PORT"] = str(port)
os.environ["PGHA_SERVER_LISTENER"] = {str(tmp_path / "listener")!r}
open(os.environ["PGHA_SERVER_LISTENER"], "w").write("1\\n")  # not this socket's inode
import runpy
runpy.run_path({str(GUARD)!r})
out = {{}}
try:
    socket.create_connection(("127.0.0.1", port), timeout=2).sendall(b"Authorization: x")
    out["connected"] = True
except ConnectionRefusedError as exc:
    out["refused"] = str(exc)
srv.settimeout(0.5)
try:
    srv.accept(); out["accepted"] = True
except OSError:
    pass
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=False)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "not held by the Prefect server" in out.get("refused", ""), (r.stdout, r.stderr)
    assert "connected" not in out and "accepted" not in out
    assert "nothing sent" in r.stderr


def test_the_worker_loads_the_guard_and_the_server_publishes_its_socket(tmp_path: Path) -> None:
    plane = cp.ControlPlane(state_dir=tmp_path, home=ROOT, port=24999, image="img", auth_file=tmp_path / "a",
                            pool="pgha", worker_name="w", server_env={}, worker_env={})
    env = plane.worker_def().environment
    assert str(GUARD.parent) in env["PYTHONPATH"].split(":")
    assert env["PGHA_SERVER_LISTENER"] == f"{cp.DB_IN_WORKER}/{cp.LISTENER_FILE}"
    health = plane.server_def().health
    assert f"{cp.DB_IN_CONTAINER}/{cp.LISTENER_FILE}" in health and health[-2:] == ["pgha-control-health", "server"]
