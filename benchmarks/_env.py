"""What every benchmark script sets up before it imports pgha: a private state dir and Prefect
home of its own (a benchmark never touches the operator's clusters), no analytics, no server
(flows run on a temporary local API), warnings only.

A script run as `.venv/bin/python benchmarks/X.py` has `benchmarks/` on its path, so
`from _env import ROOT, private_env` works; ROOT is put on the path for `flows`, `stack`, `tasks`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def private_env(name: str) -> Path:
    """A fresh work dir `pgha-<name>-bench-*`; the process's env points pgha and Prefect into it."""
    work = Path(tempfile.mkdtemp(prefix=f"pgha-{name}-bench-"))
    os.environ["PGHA_STATE_DIR"] = str(work / "state")
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.pop("PREFECT_API_URL", None)
    return work
