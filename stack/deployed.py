"""What a deployment run may take: the cluster named by its scope, with the spec stored on this host.

Pure. Anyone who can start a deployment (a schedule, an automation, a click in the Prefect UI,
a script holding the server's auth string) must not be able to hand a flow a spec of their own:
its `image`, its engine socket, its host paths and ports would make a Prefect credential host
root. So a deployment takes a scope and its operation's options, never a spec
(`flows.deployments`), and its run takes the spec `pgha up` stored for that scope
(`<state>/<scope>/spec.yaml`). A flow deployed some other way, with a `spec` parameter, is held
to the same: the rest of that parameter must say nothing else (left at its defaults, or equal to
the stored spec); anything else is refused, naming the fields, before anything changes. Changing the spec stays a CLI
operation on the host (`pgha up --spec`, `pgha config set`, `pgha scale`...).
"""

from __future__ import annotations

from typing import Any

from stack.spec import ClusterSpec

ENTRY_MODULE = "flows/deployments.py"  # every entrypoint prefect.yaml deploys (scope + options, no spec)


def sealed_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A deployment's parameter schema that admits no other parameter: Prefect renders a flow's
    signature as an open JSON schema, so a run passing `spec` would pass the server's check and
    fail only when the flow binds it; closed, the server refuses the run itself (409)."""
    return {**schema, "additionalProperties": False}


def differing_fields(a: ClusterSpec, b: ClusterSpec, ignore: tuple[str, ...] = ()) -> list[str]:
    """The top-level fields where `a` and `b` differ (sorted)."""
    da: dict[str, Any] = a.model_dump(mode="json")
    db: dict[str, Any] = b.model_dump(mode="json")
    return sorted(k for k in set(da) | set(db) if k not in ignore and da.get(k) != db.get(k))


def not_brought_up(scope: str) -> str:
    """Why a deployment run for a scope with no stored spec on this host is refused (one line)."""
    return (f"no cluster {scope!r} was brought up on this host: a deployment run takes the spec `pgha up` "
            "stored for its scope; bring it up with `pgha up --spec` on the host; nothing changed")


def deployment_spec(given: ClusterSpec, stored: ClusterSpec | None, creates: bool = False) -> ClusterSpec:
    """The spec a deployment run uses; ValueError (one line) when `given` says more than the scope,
    or when no cluster of that scope was brought up on this host.

    `stored`: the spec stored for `given.scope` on this host (None: no cluster of that scope was
    brought up here). `creates`: the operation creates a cluster (`bootstrap`): without a stored
    spec it takes the code's defaults for that scope, nothing else.
    """
    plain = ClusterSpec(scope=given.scope)
    if stored is None:
        fields = differing_fields(given, plain)
        if not fields and creates:
            return plain
        if not fields:
            raise ValueError(not_brought_up(given.scope))
        raise ValueError(f"a deployment run takes the spec stored for its scope, and no cluster {given.scope!r} was "
                         f"brought up on this host; its spec parameter sets {', '.join(fields)}: bring it up "
                         "with `pgha up --spec` on the host; nothing changed")
    if not differing_fields(given, plain) or not differing_fields(given, stored):
        return stored
    fields = differing_fields(given, stored)
    raise ValueError(f"a deployment run takes the spec stored for {given.scope}; its spec parameter sets "
                     f"{', '.join(fields)} differently: change the spec with the CLI on the host "
                     "(`pgha up --spec`), or name only the scope; nothing changed")


def restore_target_refusal(into: ClusterSpec, source: ClusterSpec) -> str | None:
    """A deployment's restore into a new cluster: `into` may differ from the source's stored spec
    in its scope and ports only (the new cluster's name and where it listens), else why not."""
    if fields := differing_fields(into, source, ignore=("scope", "ports")):
        return (f"a deployment run restores into a copy of {source.scope}'s stored spec with another scope and "
                f"ports only; `into` sets {', '.join(fields)} differently: use `pgha restore --into-spec` on the "
                "host; nothing changed")
    return None
