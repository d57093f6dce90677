"""Generated reference: the cluster spec, from `stack.spec.ClusterSpec.model_json_schema()`.

Every field at every depth as a dotted path (`backup.s3.bucket`; items of a list as
`hosts[].name`), with its type (enums as their choices), default, constraints and description.
Defaults are read from `ClusterSpec()` itself where the field exists in the default spec (so a
default built by a factory, such as `resources.patroni`, shows its real values), else from the
schema. One section per top-level group, and the whole default spec as YAML at the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from mdtext import md

_MISSING = object()
# JSON schema keyword -> how the constraint reads
CONSTRAINTS = {"minimum": ">= {}", "exclusiveMinimum": "> {}", "maximum": "<= {}", "exclusiveMaximum": "< {}",
               "minLength": "at least {} characters", "maxLength": "at most {} characters",
               "minItems": "at least {} items", "maxItems": "at most {} items", "pattern": "matches `{}`"}
SCALARS = {"integer": "integer", "number": "number", "boolean": "boolean", "string": "text", "null": "null"}


@dataclass(frozen=True)
class Row:
    path: str
    kind: str
    default: str
    constraints: str
    description: str
    nested: bool  # an object (or a list of objects) whose own fields follow
    model: str = ""  # its model's docstring


class Schema:
    """The spec's JSON schema with its `$defs` resolved."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.root = schema
        self.defs: dict[str, Any] = schema.get("$defs", {})

    def deref(self, s: dict[str, Any]) -> dict[str, Any]:
        """A `$ref` replaced by its definition; the field's own keys (description, default) kept over it."""
        if "$ref" not in s:
            return s
        target = self.deref(self.defs[s["$ref"].rsplit("/", 1)[-1]])
        return {**target, **{k: v for k, v in s.items() if k != "$ref"}}

    def branches(self, s: dict[str, Any]) -> list[dict[str, Any]]:
        """The alternatives of a field (anyOf), each resolved; a plain field is one."""
        s = self.deref(s)
        return [self.deref(b) for b in s["anyOf"]] if "anyOf" in s else [s]

    def is_object(self, s: dict[str, Any]) -> bool:
        return "properties" in s

    def model_of(self, s: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        """(the object schema, path suffix) of a field holding a model ("" ) or a list of models ("[]")."""
        for b in self.branches(s):
            if self.is_object(b):
                return b, ""
            if b.get("type") == "array" and self.is_object(self.deref(b.get("items", {}))):
                return self.deref(b["items"]), "[]"
        return None

    def doc(self, s: dict[str, Any]) -> str:
        """The docstring of the model a field holds (itself, optional, or in a list); "" without one."""
        for b in s.get("anyOf", [s]):
            ref = b.get("$ref") or b.get("items", {}).get("$ref")
            if ref:
                return str(self.defs[ref.rsplit("/", 1)[-1]].get("description", ""))
        return ""

    def kind(self, s: dict[str, Any]) -> str:
        parts = []
        for b in self.branches(s):
            if "enum" in b and len(b["enum"]) == 1:
                parts.append(f"`{b['enum'][0]}`")
            elif "enum" in b:
                parts.append("one of " + ", ".join(f"`{v}`" for v in b["enum"]))
            elif "const" in b:
                parts.append(f"`{b['const']}`")
            elif self.is_object(b):
                parts.append("object")
            elif b.get("type") == "array":
                item = self.deref(b.get("items", {}))
                parts.append("list of objects" if self.is_object(item) else f"list of {self.kind(item)}")
            elif b.get("type") == "object":
                values = self.deref(b.get("additionalProperties", {}) or {})
                parts.append(f"map of text to {self.kind(values) if values else 'any'}")
            else:
                parts.append(SCALARS.get(str(b.get("type")), str(b.get("type", "any"))))
        optional = "null" in parts and len(parts) > 1
        parts = [p for p in parts if p != "null"]
        return " or ".join(parts) + (" (optional)" if optional else "")

    def constraints(self, s: dict[str, Any]) -> str:
        found: list[str] = []
        for b in self.branches(s):
            found += ["not empty" if k == "minLength" and b[k] == 1 else fmt.format(b[k])
                      for k, fmt in CONSTRAINTS.items() if k in b]
        return ", ".join(found)


def lookup(data: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return _MISSING
        data = data[key]
    return data


def show(value: Any) -> str:
    if value is _MISSING:
        return ""
    if isinstance(value, dict | list):
        return "`{}`" if value == {} else "`[]`" if value == [] else ""
    return f"`{json.dumps(value) if value is None or isinstance(value, bool) else value}`"


def rows(schema: Schema, obj: dict[str, Any], prefix: str, keys: list[str] | None,
         defaults: Any) -> Iterator[Row]:
    """A row per field of `obj`, then its nested fields; `keys` is the path in the default spec (None
    below a list or an absent object: defaults then come from the schema)."""
    required = set(obj.get("required", []))
    for name, field in obj.get("properties", {}).items():
        path = f"{prefix}{name}"
        resolved = schema.deref(field)
        nested = schema.model_of(field)
        here = None if keys is None else [*keys, name]
        value = lookup(defaults, here) if here is not None else _MISSING
        if value is _MISSING and "default" in resolved:
            value = resolved["default"]
        default = "required" if name in required and value is _MISSING else show(value)
        if nested is not None and value not in (_MISSING, None) and not isinstance(value, list):
            default = ""  # an object with defaults: its fields below say them
        doc = schema.doc(field) if nested else ""
        description = resolved.get("description") or doc
        yield Row(path, schema.kind(field), default, schema.constraints(field), description, nested is not None, doc)
        if nested is not None:
            model, suffix = nested
            below = here if suffix == "" and isinstance(value, dict) else None
            yield from rows(schema, model, f"{path}{suffix}.", below, defaults)


def table(items: list[Row]) -> list[str]:
    out = ["| Field | Type | Default | Constraints | Description |", "| --- | --- | --- | --- | --- |"]
    out += [f"| `{r.path}` | {r.kind} | {r.default} | {r.constraints} | {md(r.description)} |" for r in items]
    return [*out, ""]


def all_rows() -> list[Row]:
    from stack.spec import ClusterSpec

    schema = Schema(ClusterSpec.model_json_schema())
    return list(rows(schema, schema.root, "", [], ClusterSpec().model_dump(mode="json")))


def sentence(text: str) -> str:
    text = " ".join(text.split())
    if text[:1].islower() and text.split(" ", 1)[0].isalpha() and text.split(" ", 1)[0].islower():
        text = text[:1].upper() + text[1:]  # not pgBackRest, etcd-N or pg_dump
    return text + ("" if text.endswith(".") else ".")


def profiles(keys: list[str]) -> list[str]:
    """What each profile sets for `keys` (the fields `patroni.*` and `haproxy.*` override)."""
    from stack.spec import PROFILES

    names = [p.value for p in PROFILES]
    out = ["What each profile sets (a field left unset keeps its profile's value):", "",
           f"| Setting | {' | '.join(f'`{n}`' for n in names)} |", "| --- |" + " --- |" * len(names)]
    for key in keys:
        values = [json.dumps(t.model_dump()[key]) for t in PROFILES.values()]
        out.append(f"| `{key}` | {' | '.join(values)} |")
    return [*out, ""]


def section(group: Row, below: list[Row]) -> list[str]:
    out = [f"## {group.path}", ""]
    intro = group.model or group.description
    if group.kind.startswith("list") and group.model:  # what the list is, then what one entry is
        intro = f"{sentence(group.description)} Each entry: {group.model[:1].lower()}{group.model[1:]}"
    out += [md(sentence(p)) + "\n" for p in intro.split("\n\n")]
    out += table(below)
    # Each nested model's docstring once, naming every field that holds one.
    notes: dict[str, list[str]] = {}
    for r in below:
        if r.nested and r.model:
            notes.setdefault(r.model, []).append(f"`{r.path}`")
    for model, paths in notes.items():
        out += [f"{', '.join(paths)}: " + " ".join(md(sentence(p)) for p in model.split("\n\n")), ""]
    if group.path in ("patroni", "haproxy"):
        out += profiles([r.path.split(".", 1)[1] for r in below])
    return out


def render() -> str:
    from stack.spec import ClusterSpec

    every = all_rows()
    top = [r for r in every if "." not in r.path]
    out = ["## Top-level fields", ""]
    out += table([r if not r.nested else Row(r.path, r.kind, r.default, r.constraints,
                                             f"{r.description} (see [{r.path}](#{r.path}))", True) for r in top])
    for group in (r for r in top if r.nested):
        out += section(group, [r for r in every if r.path.startswith((f"{group.path}.", f"{group.path}[]."))])
    defaults = yaml.safe_dump(ClusterSpec().model_dump(mode="json"), sort_keys=False, width=100)
    out += ["## The default spec", "",
            "Every field with its default value, as `pgha up` uses it when no spec is given.", "",
            '??? example "The default spec as YAML"', "", "    ```yaml",
            *(f"    {line}" if line else "" for line in defaults.splitlines()), "    ```", ""]
    return "\n".join(out)
