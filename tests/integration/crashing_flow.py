"""A health-tagged flow whose process dies mid-run: the worker reports the run Crashed (alert test)."""

from __future__ import annotations

import os

from prefect import flow


@flow(name="pgha-test-crash")
def crash(scope: str = "pgha-it-au") -> None:
    """Exit the flow-run process without reporting a final state, as an OOM kill would."""
    os._exit(3)
