"""A drill's artifacts in the Prefect UI (the drill flow's and the site drills')."""

from __future__ import annotations

import time

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from stack.drill import ProbeLog, timeline, verdict
from stack.errors import PghaError
from stack.results import DrillResult
from stack.spec import ClusterSpec
from tasks.host.chart import save_drill_chart
from tasks.host.prune import drills_dir, prune_drill_charts


def finish(spec: ClusterSpec, r: DrillResult, writes: ProbeLog, reads: ProbeLog, t_fault: float, t_end: float,
           wall: float, marks: dict[str, float], chart_title: str, title: str, table: list[str],
           failed: type[PghaError]) -> DrillResult:
    """A drill's end, the same for every drill: its chart saved (older ones pruned), its text timeline,
    the verdict, the artifacts (`title`, `table`); raises `failed` when the verdict fails."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(wall))
    r.chart_png = str(save_drill_chart(drills_dir(spec.scope) / f"{stamp}-{r.kind}.png", chart_title, writes,
                                       reads, t_fault, {"fault": t_fault, **marks}))
    prune_drill_charts(spec.scope, spec.state.drill_charts)
    r.timeline = timeline(writes, reads, t_fault - 2.0, t_end, t_fault, marks)
    ok, message = verdict(r)
    report_artifacts(spec, r, ok, message, title, table)
    if not ok:
        raise failed(f"{r.kind} drill failed: {message}")
    get_run_logger().info(message)
    return r


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
