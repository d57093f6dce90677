"""What a deployment run may take: the cluster named by its scope, with the spec stored on this host.

Pure. Anyone who can start a deployment (a schedule, an automation, a click in the Prefect UI,
a script holding the server's auth string) must not be able to hand a flow a spec of their own:
its `image`, its engine socket, its host paths and ports would make a Prefect credential host
root. So a deployment run takes the spec `pgha up` stored for the scope its `spec` parameter
names (`<state>/<scope>/spec.yaml`), and the rest of that parameter must say nothing else: left
at its defaults (a form that only names the scope), or equal to the stored spec. Anything else
is refused, naming the fields, before anything changes. Changing the spec stays a CLI
operation on the host (`pgha up --spec`, `pgha config set`, `pgha scale`...).
"""

from __future__ import annotations

from typing import Any

from stack.spec import ClusterSpec


def differing_fields(a: ClusterSpec, b: ClusterSpec, ignore: tuple[str, ...] = ()) -> list[str]:
    """The top-level fields where `a` and `b` differ (sorted)."""
    da: dict[str, Any] = a.model_dump(mode="json")
    db: dict[str, Any] = b.model_dump(mode="json")
    return sorted(k for k in set(da) | set(db) if k not in ignore and da.get(k) != db.get(k))


def deployment_spec(given: ClusterSpec, stored: ClusterSpec | None) -> ClusterSpec:
    """The spec a deployment run uses; ValueError (one line) when `given` says more than the scope.

    `stored`: the spec stored for `given.scope` on this host (None: no cluster of that scope was
    brought up here; only the code's defaults for that scope are accepted, what `bootstrap`'s
    deployment creates).
    """
    plain = ClusterSpec(scope=given.scope)
    if stored is None:
        if not differing_fields(given, plain):
            return plain
        fields = differing_fields(given, plain)
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
