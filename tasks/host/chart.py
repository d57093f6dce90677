"""The drill chart: probe successes and errors over time, with the fault and heal marked."""

from __future__ import annotations

from pathlib import Path

from stack.drill import ProbeLog


def save_drill_chart(path: Path, title: str, writes: ProbeLog, reads: ProbeLog, t0: float,
                     marks: dict[str, float]) -> Path:
    """Write a PNG: one row of dots per probe (green ok, red error), vertical lines at marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 2.8), dpi=100)
    for y, (name, log) in enumerate((("reads (R/O)", reads), ("writes (R/W)", writes))):
        ax.scatter([t - t0 for t in log.ok], [y] * len(log.ok), s=6, marker="|", color="#2a9d4b",
                   label="ok" if y == 0 else None)
        ax.scatter([t - t0 for t, _ in log.errors], [y] * len(log.errors), s=14, marker="x", color="#d62828",
                   label="error" if y == 0 else None)
        ax.text(-0.01, y, name, transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=9)
    colors = ["#264653", "#e76f51", "#6a4c93", "#f4a261"]
    for i, (label, t) in enumerate(marks.items()):
        ax.axvline(t - t0, color=colors[i % len(colors)], linestyle="--", linewidth=1)
        ax.text(t - t0, 1.45, label, rotation=0, fontsize=8, color=colors[i % len(colors)], ha="left")
    ax.set_yticks([])
    ax.set_ylim(-0.6, 1.7)
    ax.set_xlabel("seconds since the fault")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
