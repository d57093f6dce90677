"""The generated references match the code: every CLI option and spec field is documented, and named.

The CLI, spec and deployments pages of the docs are generated from the code at build time
(docs/hooks/); these tests fail when something they would show has no documentation, when a
page misses a verb, an option, a field or a deployment, or when a page keeps a marker the
hook cannot fill.
"""

from __future__ import annotations

import importlib.util
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from pydantic import BaseModel

from cli.app import app
from stack.spec import ClusterSpec

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def generate() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("pgha_docs_generate", DOCS / "hooks" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(generate: types.ModuleType) -> dict[str, str]:
    """Every docs page (relative path -> markdown) with its markers expanded."""
    return {str(p.relative_to(DOCS)): generate.expand(p.read_text()) for p in sorted(DOCS.rglob("*.md"))}


# ---- the CLI ----

def commands() -> Iterator[tuple[str, Any]]:
    """(command path, click command) of every visible command below `pgha`, groups included."""
    def walk(cmd: Any, path: str) -> Iterator[tuple[str, Any]]:
        for name, sub in getattr(cmd, "commands", {}).items():
            if not sub.hidden:
                yield f"{path} {name}", sub
                yield from walk(sub, f"{path} {name}")

    yield from walk(typer.main.get_command(app), "pgha")


def visible_params(cmd: Any) -> list[Any]:
    return [p for p in cmd.params if not getattr(p, "hidden", False) and p.name != "help"]


def is_verb(cmd: Any) -> bool:
    return not hasattr(cmd, "commands")


def test_every_command_argument_and_option_has_help() -> None:
    missing = [path for path, cmd in commands() if not (cmd.help or "").strip()]
    missing += [f"{path} {p.opts[0] if p.opts else p.name}" for path, cmd in commands()
                for p in visible_params(cmd) if not (getattr(p, "help", None) or "").strip()]
    assert missing == [], f"no help text: {missing}"


def test_every_verb_has_one_example() -> None:
    without = [path for path, cmd in commands()
               if is_verb(cmd) and len(re.findall(r"^Example: pgha ", cmd.help or "", re.MULTILINE)) != 1]
    assert without == [], f"no (or more than one) 'Example: pgha ...' paragraph in the help of: {without}"


def test_every_top_level_verb_is_in_a_help_panel() -> None:
    from cli.core import PANELS

    loose = [path for path, cmd in commands() if path.count(" ") == 1 and cmd.rich_help_panel not in PANELS]
    assert loose == [], f"not in any panel of `pgha --help` (cli.core.PANELS): {loose}"


def sections(markdown: str) -> dict[str, str]:
    """Heading text -> the markdown under it (up to the next heading of any level)."""
    parts = re.split(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_the_cli_page_names_every_verb_and_option(pages: dict[str, str]) -> None:
    page = sections(pages["reference/cli.md"])
    absent = []
    for path, cmd in commands():
        if path not in page:
            absent.append(path)
            continue
        for p in visible_params(cmd):
            names = p.opts + p.secondary_opts if p.param_type_name == "option" else [p.name.upper()]
            absent += [f"{path} {n}" for n in names if f"`{n}" not in page[path]]
    assert absent == [], f"missing from docs/reference/cli.md: {absent}"


# ---- the spec ----

def models_in(annotation: Any) -> Iterator[tuple[type[BaseModel], str]]:
    """The models a field holds: (model, "") for itself or optional, (model, "[]") inside a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, ""
        return
    origin = typing.get_origin(annotation)
    for arg in typing.get_args(annotation):
        for model, suffix in models_in(arg):
            yield model, "[]" if origin is list else suffix


def spec_fields(model: type[BaseModel] = ClusterSpec, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, FieldInfo) of every field of the spec at every depth (`hosts[].name` in lists)."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path, info
        for sub, suffix in models_in(info.annotation):
            yield from spec_fields(sub, f"{path}{suffix}.")


def test_the_walk_reaches_nested_models() -> None:
    paths = {p for p, _ in spec_fields()}
    assert {"backup.s3.bucket", "resources.patroni.cpus", "hosts[].ssh.known_hosts", "placement.etcd"} <= paths


def test_every_spec_field_has_a_description() -> None:
    missing = [path for path, info in spec_fields() if not (info.description or "").strip()]
    assert missing == [], f"spec fields without Field(description=...): {missing}"


def test_the_spec_page_names_every_field(pages: dict[str, str]) -> None:
    page = pages["reference/spec.md"]
    absent = [path for path, _ in spec_fields() if f"`{path}`" not in page]
    assert absent == [], f"missing from docs/reference/spec.md: {absent}"


# ---- deployments ----

def test_the_deployments_page_names_every_deployment(pages: dict[str, str]) -> None:
    page = pages["reference/deployments.md"]
    headings = [h for h in sections(page) if "/" in h]
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    absent = [d["name"] for d in deployments
              if not any(h.split(" {#")[0].endswith(f"/{d['name']}") for h in headings)
              or f"`{d['entrypoint']}`" not in page]
    assert absent == [], f"missing from docs/reference/deployments.md: {absent}"
    assert len(headings) == len(deployments)


# ---- every page ----

def test_no_page_keeps_a_marker(generate: types.ModuleType, pages: dict[str, str]) -> None:
    assert {"reference/cli.md", "reference/spec.md", "reference/deployments.md"} <= set(pages)
    left = [name for name, text in pages.items() if "<!-- pgha:generate" in text]
    assert left == [], f"markers left unexpanded in: {left}"


def test_an_unknown_marker_is_an_error(generate: types.ModuleType) -> None:
    with pytest.raises(KeyError, match="unknown generated section"):
        generate.expand("<!-- pgha:generate nothing_here -->\n")
