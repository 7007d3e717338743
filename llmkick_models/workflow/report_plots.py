"""The report's figures: per task, score vs sparsity per method with paired interval bars, and on the same
x axis the relative change from dense (perplexity beside the task score); N:M and bits panels when present."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmkick_models.workflow.paired_stats import MATCHING_TOLERANCE, Comparison
from llmkick_models.workflow.run_results import (
    RATIO_METRICS,
    PointResult,
    comparisons,
    dense_point,
    higher_is_better,
    report_columns,
)

# Ticks of the change-from-dense axis once it turns logarithmic beyond +-100% (perplexity can grow 1000x).
SYMLOG_TICKS = (-100, -50, -25, 0, 25, 50, 100, 1_000, 10_000, 100_000, 1_000_000)


def _percent(value: float, _position: Any) -> str:
    return f"{value:+.0f}%" if value else "0"


def _is_perplexity(metric: str) -> bool:
    return metric.split(",")[0] in RATIO_METRICS


def _series(points: list[PointResult]) -> Iterator[tuple[str, list[PointResult]]]:
    for method in sorted({p.point["method"] for p in points}):
        yield method, [p for p in points if p.point["method"] == method]


def plot_run(points: list[PointResult], out_dir: Path, compared: dict | None = None) -> list[Path]:
    """One PNG per headline metric: score vs sparsity per method with paired 95% interval bars, and below
    it (same x axis) the relative change from dense of that score and of perplexity; N:M and bits panels
    only when the run has such points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogFormatter

    compared = comparisons(points) if compared is None else compared
    dense = dense_point(points)
    columns = list(report_columns(points))
    perplexity = next(((t, m) for t, m in columns if _is_perplexity(m)), None)
    unstructured = [p for p in points if p.point["sparsity"] is not None and not p.point["pattern"]]
    nm = [p for p in points if p.point["pattern"]]
    quantized = [p for p in points if p.point["bits"] is not None and p.point["sparsity"] is None]
    panels = [
        name for name, members in (("sparsity", unstructured), ("N:M", nm), ("bits", quantized)) if members
    ]
    panels = panels or ["sparsity"]
    methods = sorted({p.point["method"] for p in points if p.point["method"] != "none"})
    colors = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
    markers = dict(zip(methods, "osD^vP*X", strict=False))
    written = []
    for task, metric in columns:
        name = metric.split(",")[0]

        def value(point: PointResult, task: str = task, metric: str = metric) -> float | None:
            return point.trusted_score(task, metric)  # a score listed under Problems is not drawn

        def comparison(point: PointResult, task: str = task, metric: str = metric) -> Comparison | None:
            found = compared.get((point.point["id"], task, metric))
            return found if isinstance(found, Comparison) else None

        dense_value = value(dense) if dense else None
        show_relative = dense is not None
        figure, axes = plt.subplots(
            2 if show_relative else 1, len(panels), figsize=(5.2 * len(panels), 7 if show_relative else 4),
            squeeze=False, sharex="col", gridspec_kw={"height_ratios": [3, 2]} if show_relative else None,
        )  # fmt: skip
        for column, panel in enumerate(panels):
            top, bottom = axes[0][column], axes[1][column] if show_relative else None
            members = {"sparsity": unstructured, "N:M": nm, "bits": quantized}[panel]
            labels: list[Any] = []
            if panel == "N:M":
                labels = sorted(
                    {p.point["pattern"] for p in nm}, key=lambda s: [int(x) for x in s.split(":")]
                )
            elif panel == "bits":
                labels = sorted({p.point["bits"] for p in quantized}, reverse=True)
            group = [m for m in methods if any(p.point["method"] == m for p in members)]
            for k, method in enumerate(group):
                offset = (k - (len(group) - 1) / 2) * (0.006 if panel == "sparsity" else 0.12)
                chosen = [p for p in members if p.point["method"] == method]
                if panel == "sparsity":
                    chosen.sort(key=lambda p: p.point["sparsity"])
                    xs = [p.point["sparsity"] for p in chosen]
                else:
                    key = "pattern" if panel == "N:M" else "bits"
                    chosen.sort(key=lambda p, key=key: labels.index(p.point[key]))
                    xs = [labels.index(p.point[key]) for p in chosen]
                ys = [math.nan if (v := value(p)) is None else v for p in chosen]  # a gap, not a crash
                if panel == "sparsity" and dense_value is not None:
                    xs, ys = [0.0, *xs], [dense_value, *ys]
                lows, highs = [], []
                for p in ([dense] if panel == "sparsity" and dense_value is not None else []) + chosen:
                    c = comparison(p) if p is not dense else None
                    v = value(p)
                    # Drawn only down to 0 for scores: the conservative interval may reach below a
                    # score that cannot be negative (report.json keeps the interval as computed).
                    floor = -math.inf if _is_perplexity(metric) else 0.0
                    no_bar = c is None or v is None or c.difference_ci is None  # no interval: the point alone
                    lows.append(0.0 if no_bar else v - max(floor, v + c.difference_ci[0] - c.difference))
                    highs.append(0.0 if no_bar else (v + c.difference_ci[1] - c.difference) - v)
                xs_plot = [x + offset for x in xs]
                face = "white" if k % 2 else colors[method]
                style = {"color": colors[method], "marker": markers[method], "label": method, "capsize": 3,
                         "markersize": 6, "markerfacecolor": face}  # fmt: skip
                line = "-" if panel == "sparsity" else "none"
                top.errorbar(xs_plot, ys, yerr=[lows, highs], linestyle=line, **style)
                if bottom is not None and dense is not None:
                    rel_x, rel_y, rel_lo, rel_hi = [], [], [], []
                    for x, p in zip(xs_plot[-len(chosen) :], chosen, strict=True):
                        c = comparison(p)
                        if c is not None and c.relative is not None:
                            ci = c.relative_ci or (c.relative, c.relative)  # no interval: no bar
                            rel_x.append(x)
                            rel_y.append(100 * c.relative)
                            rel_lo.append(100 * (c.relative - max(-1.0, ci[0])))  # >= -100%
                            rel_hi.append(100 * (ci[1] - c.relative))
                    if panel == "sparsity" and rel_x:
                        rel_x, rel_y = [0.0 + offset, *rel_x], [0.0, *rel_y]
                        rel_lo, rel_hi = [0.0, *rel_lo], [0.0, *rel_hi]
                    if rel_x:
                        bottom.errorbar(rel_x, rel_y, yerr=[rel_lo, rel_hi], linestyle=line,
                                        **{**style, "label": f"{name} ({method})"})  # fmt: skip
                    if perplexity is not None and perplexity != (task, metric):
                        ppl_x, ppl_y = [], []
                        for x, p in zip(xs_plot[-len(chosen) :], chosen, strict=True):
                            found = compared.get((p.point["id"], *perplexity))
                            if isinstance(found, Comparison) and found.relative is not None:
                                ppl_x.append(x)
                                ppl_y.append(100 * found.relative)
                        if panel == "sparsity" and ppl_x:
                            ppl_x, ppl_y = [0.0 + offset, *ppl_x], [0.0, *ppl_y]
                        if ppl_x:
                            dashed = "--" if panel == "sparsity" else "none"
                            label = f"perplexity ({method})"
                            bottom.plot(
                                ppl_x, ppl_y, color=colors[method], linestyle=dashed, marker="x", label=label
                            )
            if dense_value is not None:
                top.axhline(dense_value, color="black", linestyle="--", linewidth=1, label="dense")
                higher = higher_is_better(dense.results, task, metric)
                limit = dense_value * (1 - MATCHING_TOLERANCE if higher else 1 + MATCHING_TOLERANCE)
                top.axhline(limit, color="grey", linestyle=":", linewidth=1, label="matching limit (5%)")
            if bottom is not None:
                bottom.axhspan(-100 * MATCHING_TOLERANCE, 100 * MATCHING_TOLERANCE, color="grey", alpha=0.2,
                               label="±5% of dense")  # fmt: skip
                bottom.axhline(0, color="black", linewidth=0.8)
                bottom.set_ylabel("change from dense (%)")
                # Perplexity can grow by thousands of percent while a score cannot fall below -100%:
                # linear within +-100%, logarithmic beyond, so both stay readable on one axis.
                if max((abs(v) for line in bottom.get_lines() for v in line.get_ydata()), default=0) > 200:
                    bottom.set_yscale("symlog", linthresh=100)
                    low, high = bottom.get_ylim()  # symlog's own ticks skip the linear part: name it
                    bottom.set_yticks([t for t in SYMLOG_TICKS if low <= t <= high])
                bottom.yaxis.set_major_formatter(FuncFormatter(_percent))
                bottom.grid(alpha=0.3)
                if column == 0:
                    bottom.legend(fontsize=7, ncol=2)
            axis = bottom if bottom is not None else top
            if panel == "sparsity":
                axis.set_xlabel("sparsity")
            else:
                axis.set_xticks(range(len(labels)), [str(label) for label in labels])
                axis.set_xlim(-0.6, len(labels) - 0.4)
                axis.set_xlabel("N:M pattern (N zeros per M)" if panel == "N:M" else "bits per weight")
            if _is_perplexity(metric):
                top.set_yscale("log")
                # plain numbers (40, 60, 100), not 4x10^1: perplexities are read and compared as numbers
                top.yaxis.set_major_formatter(LogFormatter())
                top.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
            top.set_ylabel(name)
            top.set_title(panel if len(panels) > 1 else "")
            top.grid(alpha=0.3)
            if column == 0:
                top.legend(fontsize=7)
        figure.suptitle(f"{task} — {name}\n(bars: paired 95% interval vs dense)", fontsize=10)
        figure.tight_layout()
        stem = task if len([c for c in columns if c[0] == task]) == 1 else f"{task}_{name}"
        path = out_dir / f"plot_{stem}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written
