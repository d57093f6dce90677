"""Text from the code (help texts, descriptions) as markdown that shows it literally."""

from __future__ import annotations

import re

_CODE = re.compile(r"(`[^`]*`)")
_SPECIAL = re.compile(r"([\\*_\[\]<>|#])")
# An option (--volumes, -c) or an environment variable ($PGHA_SPEC) named in a help text.
_LITERAL = re.compile(r"(?<![\w`/.=-])(--?[a-z][a-z-]*[a-z]|-[a-z]|\$[A-Z][A-Z0-9_]+)(?![\w-])")


def md(text: str) -> str:
    """Text as markdown on one line: `code spans` kept, options and variables as code, the rest literal."""
    out = []
    for i, part in enumerate(_CODE.split(" ".join(text.split()))):
        if i % 2:  # a code span already
            out.append(part)
            continue
        for j, piece in enumerate(_LITERAL.split(part)):
            out.append(f"`{piece}`" if j % 2 else
                       _SPECIAL.sub(r"\\\1", piece).replace("\\<", "&lt;").replace("\\>", "&gt;"))
    return "".join(out)
