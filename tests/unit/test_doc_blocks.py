"""The docs test's block parser (tests/support/doc_blocks.py): languages, skip markers, reasons required."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.doc_blocks import Block, DocBlockError, Lang, parse, parse_file

DOCS = Path(__file__).resolve().parents[2] / "docs"

PAGE = """\
# A page

```sh
pgha status
```

```bash
export A=1
```

```shell
echo "$A"
```

```python
print("hi")
```

```py title="x.py"
pass
```

```text
pgha status   # output, not run
```

```yaml
scope: x
```

```console
$ pgha dsn
```
"""


def test_languages() -> None:
    blocks = parse(PAGE)
    assert [(b.lang, b.first_line) for b in blocks] == [
        (Lang.SH, "pgha status"), (Lang.SH, "export A=1"), (Lang.SH, 'echo "$A"'),
        (Lang.PYTHON, 'print("hi")'), (Lang.PYTHON, "pass")]
    assert [b.line for b in blocks] == [3, 7, 11, 15, 19]
    assert all(b.skip is None for b in blocks)


def test_skip_marker_with_reason() -> None:
    text = "<!-- docs-test: skip needs a real Slack URL -->\n```sh\ncurl $SLACK\n```\n\n```sh\ntrue\n```\n"
    assert parse(text) == [Block(Lang.SH, "curl $SLACK\n", 2, "needs a real Slack URL"), Block(Lang.SH, "true\n", 6)]


@pytest.mark.parametrize("marker", ["<!-- docs-test: skip -->", "<!-- docs-test: skip    -->", "<!--docs-test:skip-->"])
def test_a_skip_needs_a_reason(marker: str) -> None:
    with pytest.raises(DocBlockError, match="needs a reason"):
        parse(f"{marker}\n```sh\nmake up\n```\n", "p.md")


def test_the_marker_must_be_right_before_the_fence() -> None:
    with pytest.raises(DocBlockError, match="p.md:1: .*right before a fence"):
        parse("<!-- docs-test: skip slow -->\n\n```sh\nmake up\n```\n", "p.md")
    with pytest.raises(DocBlockError, match="right before a fence"):
        parse("text\n<!-- docs-test: skip slow -->\n", "p.md")


def test_unknown_directive() -> None:
    with pytest.raises(DocBlockError, match="unknown docs-test directive"):
        parse("<!-- docs-test: skipp slow -->\n```sh\nmake up\n```\n")


def test_other_comments_and_markers_inside_blocks_are_prose() -> None:
    text = ("<!-- pgha:generate cli -->\n````markdown\n<!-- docs-test: skip not a marker here -->\n```sh\nx\n```\n"
            "````\n```sh\ny\n```\n")
    assert [(b.code, b.skip) for b in parse(text)] == [("y\n", None)]


def test_indented_fences_are_dedented() -> None:
    text = ("!!! tip\n    <!-- docs-test: skip a reason -->\n    ```sh\n    pgha status\n      --json\n    ```\n"
            "1. step\n\n    ```bash\n    pgha dsn\n    ```\n")
    blocks = parse(text)
    assert [(b.code, b.skip) for b in blocks] == [("pgha status\n  --json\n", "a reason"), ("pgha dsn\n", None)]


def test_tilde_fences_and_longer_closers() -> None:
    text = "~~~sh\necho '```'\n~~~~\n```sh\ntrue\n```\n"
    assert [b.code for b in parse(text)] == ["echo '```'\n", "true\n"]


def test_an_unclosed_fence_runs_to_the_end() -> None:
    assert [b.code for b in parse("```sh\ntrue\n")] == ["true\n"]


def test_every_page_the_docs_test_covers_parses() -> None:
    pages = [DOCS / "getting-started.md", *sorted((DOCS / "howto").glob("*.md"))]
    for page in pages:
        for b in parse_file(page):
            assert b.skip is None or b.skip.strip(), f"{page}:{b.line}"
