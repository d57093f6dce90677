"""A drill's artifacts in the Prefect UI (the drill flow's and the site drills')."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from stack.results import DrillResult
from stack.spec import ClusterSpec


def report_artifacts(spec: ClusterSpec, r: DrillResult, ok: bool, message: str, title: str,
                     table: list[str]) -> None:
    """A drill's two artifacts: every figure as a table, and the verdict, `table` (markdown lines),
    the text timeline, the chart and the notes."""
    rows = [{"metric": k, "value": str(v)} for k, v in r.to_json().items() if k not in ("notes", "timeline")]
    key = f"{spec.scope}-drill-{r.kind}"
    create_table_artifact(key=key, table=rows, description=f"{'PASS' if ok else 'FAIL'}: {message}")
    md = "\n".join([
        f"# {title}: {'PASS' if ok else 'FAIL'}",
        "",
        message,
        "",
        *table,
        "",
        "```",
        r.timeline,
        "```",
        "",
        f"Chart: `{r.chart_png}`",
        *[f"- {n}" for n in r.notes],
    ])
    create_markdown_artifact(key=f"{key}-timeline", markdown=md, description=message)
