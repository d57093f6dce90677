"""Shared sequences every flow uses through public names: the operation wrapper (lock,
timing, result artifact), status and waits, switchover, the rolling node steps, the
bootstrap sequence and WAL archiving.

Flows sequence these and decide; none of them touches an external system itself (that is
`tasks/`). This package is the only place in `flows/` that flow modules import from.
"""

from flows.steps.preflight import forget_preflight, preflight_once

__all__ = ["forget_preflight", "preflight_once"]
