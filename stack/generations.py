"""Generations behind one name: which of a cluster's two colours serves, as pure functions.

A cluster keeps the scope of its spec (the *base*, `<base>`) for life. Its resources belong to
a generation: `<base>` or `<base>-green`. A major upgrade builds the other generation (colours
alternate, names never grow) and `--finish` records the new one as serving in
`<state>/<base>/serving.json` (`tasks.host.generations`). Every verb and every flow a
deployment runs turns the user's spec into the serving generation's spec here
(`serving_spec`), so `pgha audit --scope <base>`, the schedules and the alerts of `<base>` keep
working after an upgrade.
"""

from __future__ import annotations

from pydantic import BaseModel

from stack.spec import ClusterSpec, parse_spec

GREEN_SUFFIX = "-green"
POINTER = "serving.json"  # in the base's state directory


class Serving(BaseModel):
    """The pointer: the generation that serves the clients of `<base>` and its major."""

    generation: str
    postgres_version: int


def base_of(scope: str) -> str:
    """The cluster's own name: a scope ending in `-green` is the green generation of the name without it."""
    return scope.removesuffix(GREEN_SUFFIX)


def other_generation(scope: str) -> str:
    """The generation a major upgrade of `scope` builds: `<base>` <-> `<base>-green`."""
    base = base_of(scope)
    return base if scope != base else f"{base}{GREEN_SUFFIX}"


def generations(scope: str) -> list[str]:
    """Every generation the cluster of `scope` owns, base first."""
    base = base_of(scope)
    return [base, f"{base}{GREEN_SUFFIX}"]


def generation_spec(spec: ClusterSpec, scope: str, postgres_version: int, ports: dict[str, int] | None = None) -> ClusterSpec:
    """`spec`'s shape as generation `scope` on `postgres_version`: its own image (the major's), logical WAL
    (a later major upgrade's reverse way needs it), `spec`'s ports unless `ports` (green's, offset)."""
    data = spec.model_dump(mode="json")
    data.update(scope=scope, postgres_version=postgres_version, image=None, ports={**data["ports"], **(ports or {})},
                postgres_parameters={**spec.postgres_parameters, "wal_level": "logical"},
                upgrade={**data["upgrade"], "node_image": None})
    return parse_spec(data, f"(generation {scope} of {base_of(scope)}, derived from the cluster's spec)")


def serving_spec(spec: ClusterSpec, pointer: Serving | None, building: tuple[str, int] | None = None) -> ClusterSpec:
    """The spec of the generation that serves `spec`'s clients; idempotent.

    `pointer`: what `<state>/<spec.scope>/serving.json` says (None: the spec's own scope serves).
    `building`: (scope, major) of the green a major upgrade of the serving generation is
    building right now: when it is `<base>` again, a spec of that scope on that major is that
    green's, not the user's, and is left alone.
    """
    if pointer is None:
        return spec
    if building is not None and (spec.scope, spec.postgres_version) == building:
        return spec
    if spec.scope == pointer.generation and spec.postgres_version == pointer.postgres_version:
        return spec
    return generation_spec(spec, pointer.generation, pointer.postgres_version)


def describe(base: str, serving: ClusterSpec) -> str:
    """How a user reads it: `cluster life (generation life-green, PostgreSQL 17)`."""
    if serving.scope == base:
        return f"cluster {base} (PostgreSQL {serving.postgres_version})"
    return f"cluster {base} (generation {serving.scope}, PostgreSQL {serving.postgres_version})"


def teardown_steps(scope: str) -> list[tuple[str, str | None]]:
    """The order `down` removes a cluster's generations in: (scope, role), role None = what is left.

    The client-facing HAProxy and PgBouncer of every generation first (an upgrade attaches one
    generation's HAProxy to the other's network), then every other container, then (the
    caller's last pass) networks and volumes.
    """
    gens = generations(scope)
    return [(g, role) for role in ("haproxy", "pooler") for g in gens] + [(g, None) for g in gens]
