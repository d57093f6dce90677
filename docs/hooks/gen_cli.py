"""Generated reference: the CLI, from the Typer app (`cli.app`).

Every verb and subcommand that is not hidden, grouped by the panels of `pgha --help`
(`cli.core.PANELS`), each with its usage line, its help text and example, and a table of its
arguments and options (names, type or choices, default, help).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from enum import Enum
from typing import Any

from mdtext import md

HELP_OPTION = "help"
EXAMPLE = "Example:"
# A reference example is not run by the docs test: the guides run these verbs against a cluster.
SKIP_EXAMPLE = "<!-- docs-test: skip reference example (the guides run these verbs) -->"
TYPE_NAMES = {"str": "text", "int": "integer", "float": "number", "path": "path", "Path": "path",
              "bool": "flag", "int range": "integer", "float range": "number"}


def root() -> tuple[Any, Any]:
    """The click tree of the Typer app and a context named `pgha`."""
    import typer.main

    try:  # Typer >= 0.2x carries its own copy of Click
        from typer._click import Context
    except ImportError:  # pragma: no cover - older Typer on Click
        from click import Context  # type: ignore[no-redef]

    from cli.app import app

    cmd = typer.main.get_command(app)
    return cmd, Context(cmd, info_name="pgha")


def walk(cmd: Any, ctx: Any) -> Iterator[tuple[Any, Any]]:
    """(command, context) of every visible subcommand below `cmd`, depth first, in `pgha --help` order."""
    if not hasattr(cmd, "commands"):
        return
    for name in cmd.list_commands(ctx):
        sub = cmd.commands[name]
        if getattr(sub, "hidden", False):
            continue
        sub_ctx = type(ctx)(sub, info_name=name, parent=ctx)
        yield sub, sub_ctx
        yield from walk(sub, sub_ctx)


def params(cmd: Any, ctx: Any) -> list[Any]:
    """The arguments and options a user sees (hidden ones and --help left out)."""
    return [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False) and p.name != HELP_OPTION]


def is_group(cmd: Any) -> bool:
    return hasattr(cmd, "commands")


def paragraphs(text: str | None) -> list[str]:
    """The help text's paragraphs, single line breaks joined (as `pgha --help` shows them)."""
    body = inspect.cleandoc(text or "").partition("\f")[0]
    return [" ".join(p.split()) for p in body.split("\n\n") if p.strip()]


def example(cmd: Any) -> str | None:
    """The command line of the help's `Example:` paragraph (None without one)."""
    for p in paragraphs(cmd.help):
        if p.startswith(EXAMPLE):
            return p.removeprefix(EXAMPLE).strip()
    return None


def arg_name(p: Any) -> str:
    name = (p.metavar or p.name).upper()
    return f"{name}..." if p.nargs == -1 else name


def usage(cmd: Any, ctx: Any) -> str:
    pieces = [ctx.command_path]
    if is_group(cmd):
        return f"{ctx.command_path} COMMAND [ARGS]..."
    ps = params(cmd, ctx)
    if any(p.param_type_name == "option" for p in ps):
        pieces.append("[OPTIONS]")
    for p in ps:
        if p.param_type_name == "argument":
            pieces.append(arg_name(p) if p.required else f"[{arg_name(p)}]")
    return " ".join(pieces)


def names(p: Any) -> str:
    if p.param_type_name == "argument":
        return f"`{arg_name(p)}`"
    opts = [f"`{o}`" for o in p.opts]
    if p.secondary_opts:
        opts = [" / ".join([f"`{o}`" for o in p.opts + p.secondary_opts])]
    if p.metavar and not p.is_flag:
        opts[0] = f"`{p.opts[0]} {p.metavar}`"
    return ", ".join(opts)


def kind(p: Any, ctx: Any) -> str:
    """Type or choices, with a range when the option has one."""
    desc = getattr(p, "type_descriptor", None)
    if desc is not None and desc.is_choice:
        text = "one of " + ", ".join(f"`{getattr(c, 'value', c)}`" for c in desc.choices or ())
    elif getattr(p, "is_flag", False):
        text = "flag"
    else:
        bare = p.display_type(ctx).strip("<>")
        if bare.startswith("list[") and bare.endswith("]"):
            bare = bare[5:-1]
        text = TYPE_NAMES.get(bare, bare)
    low, high = getattr(p, "min", None), getattr(p, "max", None)
    if low is not None and high is not None:
        text += f", {low} to {high}"
    elif low is not None:
        text += f", at least {low}"
    elif high is not None:
        text += f", at most {high}"
    if p.multiple:
        text += ", repeatable"
    return text


def default(p: Any, ctx: Any) -> str:
    if p.required:
        return "required"
    value = p.get_default(ctx, call=False)
    if getattr(p, "is_flag", False):
        if p.secondary_opts:
            return f"`{p.opts[0] if value else p.secondary_opts[0]}`"
        return "on" if value else "off"
    if value is None or value == [] or value == ():
        return ""
    if isinstance(value, Enum):
        value = value.value
    return f"`{value}`"


def table(cmd: Any, ctx: Any) -> list[str]:
    ps = params(cmd, ctx)
    if not ps:
        return ["Takes no options.", ""]
    rows = ["| Argument or option | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for p in ps:
        rows.append(f"| {names(p)} | {kind(p, ctx)} | {default(p, ctx)} | {md(' '.join((p.help or '').split()))} |")
    return [*rows, ""]


def section(cmd: Any, ctx: Any, level: int) -> list[str]:
    out = [f"{'#' * level} {ctx.command_path}", ""]
    texts = [p for p in paragraphs(cmd.help) if not p.startswith(EXAMPLE)]
    if texts:
        out += [md(texts[0]), ""]
    out += ["```text", usage(cmd, ctx), "```", ""]
    for t in texts[1:]:
        out += [md(t), ""]
    if is_group(cmd):
        subs = [(s, c) for s, c in walk(cmd, ctx) if c.parent is ctx]
        out += [f"Commands: {', '.join(f'[`{s.name}`](#{slug(c.command_path)})' for s, c in subs)}.", ""]
        return out
    if (ex := example(cmd)) is not None:
        out += ["Example:", "", SKIP_EXAMPLE, "```sh", ex, "```", ""]
    return out + table(cmd, ctx)


def slug(heading: str) -> str:
    """MkDocs' (Python-Markdown toc) anchor of a heading made of words, dashes and spaces."""
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", heading).strip().lower())


def render() -> str:
    from cli.core import PANELS

    top, ctx = root()
    verbs = [(c, x) for c, x in walk(top, ctx) if x.parent is ctx]
    panels: dict[str, list[tuple[Any, Any]]] = {}
    for cmd, cctx in verbs:
        panels.setdefault(getattr(cmd, "rich_help_panel", None) or "Other commands", []).append((cmd, cctx))
    out: list[str] = []
    for panel in sorted(panels, key=lambda p: PANELS.index(p) if p in PANELS else len(PANELS)):
        out += [f"## {panel}", ""]
        for cmd, cctx in panels[panel]:
            out += section(cmd, cctx, 3)
            for sub, sctx in walk(cmd, cctx):
                out += section(sub, sctx, 4)
    return "\n".join(out)
