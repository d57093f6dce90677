"""The shell and Python blocks of a documentation page, as the docs test runs them.

A fenced block (``` or ~~~, CommonMark rules: the closing fence uses the same character and is
at least as long; an indented fence, inside a list or an admonition, is dedented) whose info
string starts with `sh`, `bash` or `shell` is a shell block, with `python` or `py` a Python
block; every other fence (`text`, `console`, `yaml`, ...) is prose to the test. A block is left
out when the line right before its fence is

    <!-- docs-test: skip REASON -->

and the reason is required: a marker without one, a marker not followed by a fence, or any
other `docs-test:` directive is a `DocBlockError`, so a typo cannot silently skip (or run)
a block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class DocBlockError(ValueError):
    """A page's `docs-test` markers cannot be read as written."""


class Lang(StrEnum):
    SH = "sh"
    PYTHON = "python"


LANGS: dict[str, Lang] = {"sh": Lang.SH, "bash": Lang.SH, "shell": Lang.SH, "python": Lang.PYTHON, "py": Lang.PYTHON}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")
_SKIP = re.compile(r"^\s*skip(?:\s+(?P<reason>.*?))?\s*$")


@dataclass(frozen=True)
class Block:
    """One executable block: its language, text, the 1-based line of its opening fence, and a skip reason."""

    lang: Lang
    code: str
    line: int
    skip: str | None = None

    @property
    def first_line(self) -> str:
        return next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")


def _dedent(lines: list[str], indent: str) -> list[str]:
    return [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines]


def parse(text: str, where: str = "<page>") -> list[Block]:
    """Every shell and Python block of a Markdown page, in order, with its skip reason (None: it runs)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None  # (line, reason) of a skip marker waiting for its fence
    i = 0
    while i < len(lines):
        line = lines[i]
        if pending is not None and pending[0] != i:  # the marker's next line was not a fence
            raise DocBlockError(f"{where}:{pending[0]}: a docs-test marker must be on the line right before a fence")
        if (m := _MARKER.match(line)) is not None:
            s = _SKIP.match(m.group("body"))
            if s is None:
                raise DocBlockError(f"{where}:{i + 1}: unknown docs-test directive {m.group('body').strip()!r} "
                                    "(only `skip REASON`)")
            if not s.group("reason"):
                raise DocBlockError(f"{where}:{i + 1}: `docs-test: skip` needs a reason (why this block cannot run here)")
            pending = (i + 1, s.group("reason"))
            i += 1
            continue
        f = _FENCE.match(line)
        if f is None or (f.group("fence")[0] == "`" and "`" in f.group("info")):
            i += 1
            continue
        indent, fence = f.group("indent"), f.group("fence")
        info = f.group("info").strip().lstrip("{").lstrip(".")
        word = re.split(r"[\s{}]", info, maxsplit=1)[0].lower() if info else ""
        body: list[str] = []
        j = i + 1
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        while j < len(lines) and close.match(lines[j]) is None:
            body.append(lines[j])
            j += 1
        reason = pending[1] if pending is not None else None
        pending = None
        if word in LANGS:
            code = "\n".join(_dedent(body, indent)) + "\n"
            blocks.append(Block(lang=LANGS[word], code=code, line=i + 1, skip=reason))
        i = j + 1
    if pending is not None:
        raise DocBlockError(f"{where}:{pending[0]}: a docs-test marker must be on the line right before a fence")
    return blocks


def parse_file(path: Path) -> list[Block]:
    return parse(path.read_text(), str(path))
