"""pgha's Prometheus exporter's adapter: the files it ships and the audit's sample it reads.

The exporter itself is `tasks/exporter_agent.py` plus the pure `stack/metrics.py`, copied into
the `metrics` container's config directory (read-only at /etc/pgha); this module reads them for
the topology and writes the last audit's sample there (`publish_audit`), where the exporter
picks it up at its next scrape.
"""

from __future__ import annotations

from pathlib import Path

from stack import layout, metrics
from stack.spec import ClusterSpec
from tasks import exporter_agent
from tasks.host.state import config_dir, write_private


def agent_files() -> dict[str, str]:
    """The agent's sources as the exporter runs them (exporter.py imports metrics.py beside it)."""
    return {"exporter.py": Path(exporter_agent.__file__).read_text(), "metrics.py": Path(metrics.__file__).read_text()}


def publish_audit(spec: ClusterSpec, sample: metrics.AuditSample) -> bool:
    """Write the audit's sample into the exporter's config directory (no-op with metrics off);
    True when written. The file holds check names, levels, times and counters: no secret."""
    if not spec.metrics.enabled:
        return False
    return write_private(config_dir(spec.scope, spec.metrics_member) / layout.METRICS_AUDIT,
                         metrics.audit_to_json(sample))
