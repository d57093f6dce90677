"""A flow that does nothing but finish: the scheduled run the control-plane tests wait for."""

from __future__ import annotations

from prefect import flow


@flow(name="pgha-test-tick")
def tick() -> str:
    return "tick"
