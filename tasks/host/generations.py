"""The serving-generation pointer on the host: `<state>/<base>/serving.json` (`stack.generations`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from stack import generations as gen
from stack import layout, tls
from stack.errors import StateError
from stack.major import STATE_FILE, MajorState
from stack.spec import ClusterSpec, as_deployed, load_spec
from tasks.host.state import cluster_dir, write_private


def pointer_file(base: str) -> Path:
    return cluster_dir(base) / gen.POINTER


def read_pointer(base: str) -> gen.Serving | None:
    f = pointer_file(base)
    return gen.Serving.model_validate_json(f.read_text()) if f.exists() else None


def write_pointer(base: str, serving: ClusterSpec) -> None:
    pointer = gen.Serving(generation=serving.scope, postgres_version=serving.postgres_version)
    write_private(pointer_file(base), pointer.model_dump_json(indent=1))


def major_state_file(scope: str) -> Path:
    """Where a major upgrade of the cluster `scope` (blue) records its phase (`stack.major.MajorState`)."""
    return cluster_dir(scope) / STATE_FILE


def load_major_state(scope: str) -> MajorState | None:
    """The recorded major upgrade of `scope`, if one is in progress or rolled back."""
    f = major_state_file(scope)
    return MajorState.model_validate_json(f.read_text()) if f.exists() else None


def save_major_state(scope: str, st: MajorState) -> None:
    write_private(major_state_file(scope), st.model_dump_json(indent=1))


def _building(pointer: gen.Serving) -> tuple[str, int] | None:
    """The green a major upgrade of the serving generation is building (scope, major), if one is recorded."""
    st = load_major_state(pointer.generation)
    return (st.green_scope, st.target) if st is not None else None


def serving(spec: ClusterSpec) -> ClusterSpec:
    """The spec of the generation serving `spec`'s clients (`spec` itself before any finished major upgrade)."""
    # By the base's pointer: a spec naming an older generation (a deployment's parameter
    # written after the first upgrade) follows the cluster to the generation serving now.
    pointer = read_pointer(gen.base_of(spec.scope))
    if pointer is None:
        return spec
    return gen.serving_spec(spec, pointer, _building(pointer))


def stored_spec_file(scope: str) -> Path:
    """The spec `up` stored for `scope`: the serving generation's when `scope` names a cluster that has one."""
    pointer = read_pointer(gen.base_of(scope))
    if pointer is not None and (cluster_dir(pointer.generation) / "spec.yaml").exists():
        return cluster_dir(pointer.generation) / "spec.yaml"
    return cluster_dir(scope) / "spec.yaml"


def stored_spec(scope: str) -> ClusterSpec:
    """The spec the last `pgha up` of `scope` stored, as its serving generation runs it (StateError
    when there is none)."""
    path = stored_spec_file(scope)  # after a major upgrade: the serving generation's
    if not path.exists():
        raise StateError(f"no cluster '{scope}' was brought up from this machine (no {path})")
    return serving(load_spec(path))


def deployed(spec: ClusterSpec) -> ClusterSpec:
    """`spec` as the cluster runs it: a pooler on only by default that the last `pgha up` did not
    run is not expected (`stack.spec.as_deployed`) until the next `pgha up` adds it."""
    if spec.pooler.enabled is not None or not spec.runs_pooler:
        return spec
    path = stored_spec_file(spec.scope)
    try:
        raw = yaml.safe_load(path.read_text()) if path.exists() else None
    except (OSError, yaml.YAMLError):
        return spec
    return as_deployed(spec, raw)


def clear_generation_dir(scope: str, keep: tuple[str, ...] = ()) -> None:
    """Delete a generation's state (secrets, TLS, configs, records), but the base's pointer (and `keep`;
    a kept `tls` keeps the cluster's CA, not the old members' certificates)."""
    d = cluster_dir(scope)
    if not d.is_dir():
        return
    for p in d.iterdir():
        if p.name in (gen.POINTER, *keep):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if "tls" in keep:  # the CA only: the next generation of this name is issued its own leaves
        for f in tls.LEAF_FILES:
            (d / layout.TLS_SUBDIR / f).unlink(missing_ok=True)
    if not any(d.iterdir()):
        d.rmdir()
