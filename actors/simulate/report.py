"""A simulation's figures out: the printed table, the CSV, the PNG chart; each the same bytes for the same rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from .run import FIELDS, MinuteRow, Result

HEADERS = ("min", "channel", "accepted", "delivered", "defer:bucket", "defer:breaker", "retried", "dlq", "failed", "pending",
           "p50 ms", "p99 ms", "breaker", "transitions")


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def scale_note(scale: int) -> str:
    """What the title of a scaled run's table and chart says (nothing for an exact run)."""
    if scale == 1:
        return ""
    return f"; SCALED RUN: 1/{scale} of the volumes simulated, every count multiplied by {scale} (delays and breaker as run)"


def table(result: Result) -> str:
    """The per-minute table, one line per channel and minute, then the run's totals."""
    lines = [[*HEADERS]] + [[_cell(v) for v in row.values()] for row in result.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    out = io.StringIO()
    s = result.scenario
    out.write(f"scenario {s.name!r}, seed {result.seed}: {s.duration_s / 60:g} simulated minutes, channels "
              f"{', '.join(c.value for c in s.channels)}{scale_note(result.scale)}\n")
    for line in lines:
        out.write("  ".join(cell.rjust(w) if i not in (1, 12, 13) else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
                  .rstrip() + "\n")
    for channel, totals in result.totals.items():
        out.write(f"total {channel}: " + ", ".join(f"{k} {v}" for k, v in totals.items()) + "\n")
    return out.getvalue()


def write_csv(rows: Sequence[MinuteRow], path: Path, scale: int = 1) -> None:
    """One line per channel and minute, FIELDS as the header; an empty cell where there is no value. A scaled run's
    rows end with a column `scale` (its counts are multiplied by it); an exact run's have none."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FIELDS if scale == 1 else (*FIELDS, "scale"))
    for row in rows:
        writer.writerow(["" if v is None else v for v in row.values()] + ([] if scale == 1 else [scale]))
    path.write_text(buffer.getvalue(), encoding="utf-8")


def write_png(result: Result, path: Path) -> None:
    """The chart: per channel, the flows per minute, the backlog and deferrals, the delays; breaker openings marked.

    Byte-identical for the same rows: the Agg backend, matplotlib's default style (not the user's
    matplotlibrc), its bundled font, and no Software or date in the file's metadata."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    channels = [c.value for c in result.scenario.channels]
    with matplotlib.rc_context(rc=matplotlib.rcParamsDefault):
        matplotlib.use("Agg")
        fig, axes = plt.subplots(3, len(channels), figsize=(6 * len(channels), 9), squeeze=False, sharex=True)
        for col, channel in enumerate(channels):
            rows = [r for r in result.rows if r.channel == channel]
            minutes = [r.minute for r in rows]
            flows, backlog, delays = axes[0][col], axes[1][col], axes[2][col]
            for name, label in (("accepted", "accepted"), ("delivered", "delivered"), ("retried", "retried"),
                                ("dead_lettered", "dead-lettered")):
                flows.plot(minutes, [getattr(r, name) for r in rows], label=label, linewidth=1)
            flows.set_title(f"{channel}: per simulated minute")
            flows.legend(loc="upper right", fontsize=7)
            backlog.plot(minutes, [r.pending for r in rows], label="pending (end of minute)", linewidth=1)
            backlog.plot(minutes, [r.deferred_bucket for r in rows], label="deferred by the bucket", linewidth=1)
            backlog.plot(minutes, [r.deferred_breaker for r in rows], label="deferred by an open breaker", linewidth=1)
            backlog.legend(loc="upper right", fontsize=7)
            p50 = [(r.minute, r.delay_p50_ms / 1000) for r in rows if r.delay_p50_ms is not None]
            p99 = [(r.minute, r.delay_p99_ms / 1000) for r in rows if r.delay_p99_ms is not None]
            if p50:
                delays.plot(*zip(*p50), label="delay p50 (s)", linewidth=1)
            if p99:
                delays.plot(*zip(*p99), label="delay p99 (s)", linewidth=1)
            if p50 or p99:
                delays.set_yscale("log")
                delays.legend(loc="upper right", fontsize=7)
            delays.set_xlabel("simulated minute")
            for r in rows:
                if "->open" in r.transitions:
                    for ax in (flows, backlog, delays):
                        ax.axvline(r.minute, color="red", linewidth=0.6, alpha=0.5)
        scaled = "" if result.scale == 1 else f"\nscaled run: 1/{result.scale} of the volumes, counts x {result.scale}"
        fig.suptitle(f"herald simulate: {result.scenario.name} (seed {result.seed}); red: breaker opened{scaled}")
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=80, metadata={"Software": None})
        plt.close(fig)
