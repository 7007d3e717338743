"""The per-group figure of a judged task (``plot_<task>_by_group.png``), as LLM-KICK reads summarization per
story-length bin: one panel per criterion (rows) and group (columns), each the score against sparsity, one
line per pruning method from dense at sparsity 0, with paired 95% interval bars, dense's score (dashed) and
the 5% matching limit (dotted).  Only unstructured pruning points have a sparsity to draw against: N:M and
quantization points are in the tables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from llmkick_models.workflow.readings import Breakdown
from llmkick_models.workflow.report_plots import (
    MARKERS,
    MetricView,
    dense_lines,
    model_prefix,
    pyplot,
    save_figure,
    score_axis,
)
from llmkick_models.workflow.run_results import PointResult

#: Panels per row before the groups wrap (MT-Bench has 2 turns and 8 categories).
MAX_COLUMNS = 5


def _pruned(points: list[PointResult]) -> dict[str, list[PointResult]]:
    """Each pruning method's unstructured points, by sparsity."""
    out: dict[str, list[PointResult]] = {}
    for point in points:
        coords = point.point
        if coords["method"] != "none" and coords["sparsity"] is not None and not coords["pattern"]:
            out.setdefault(coords["method"], []).append(point)
    return {
        method: sorted(chosen, key=lambda p: p.point["sparsity"]) for method, chosen in sorted(out.items())
    }


def _panel(
    axis: Any, view: MetricView, methods: dict[str, list[PointResult]], labels: tuple[str, str]
) -> None:
    """One criterion × group: each method's scores from dense, with their interval bars (methods offset a
    little along x so that none hides another)."""
    dense_value = view.value(view.dense)
    colors = pyplot().get_cmap("tab10")
    # Each method the color and marker of the report's other figures (indexed among all its methods;
    # every second one hollow).
    every = sorted({p.point["method"] for p in view.points if p.point["method"] != "none"})
    for k, (method, chosen) in enumerate(methods.items()):
        style = every.index(method)
        offset = (k - (len(methods) - 1) / 2) * 0.006
        xs = [p.point["sparsity"] + offset for p in chosen]
        ys = [math.nan if (v := view.value(p)) is None else v for p in chosen]
        bars = [view.bar(p) for p in chosen]
        if dense_value is not None:
            xs, ys, bars = [offset, *xs], [dense_value, *ys], [(0.0, 0.0), *bars]
        axis.errorbar(xs, ys, yerr=[[b[0] for b in bars], [b[1] for b in bars]], color=colors(style),
                      marker=MARKERS[style % len(MARKERS)], capsize=3, markersize=5, label=method,
                      markerfacecolor="white" if style % 2 else colors(style))  # fmt: skip
    dense_lines(axis, view)
    score_axis(axis, view.metric)
    axis.set_ylabel(labels[0])
    axis.set_title(labels[1], fontsize=9)


def plot_breakdowns(
    points: list[PointResult], found: list[Breakdown], compared: dict, out_dir: Path
) -> list[Path]:
    """One figure per judged task with groups (none when the run has no unstructured pruning point)."""
    methods = _pruned(points)
    if not methods:
        return []
    plt = pyplot()
    written = []
    for breakdown in found:
        panels = [(c, g) for c in breakdown.criteria for g in breakdown.groups if (c, g) in breakdown.metrics]
        columns = len(breakdown.groups) if len(breakdown.groups) <= MAX_COLUMNS else MAX_COLUMNS
        rows = math.ceil(len(panels) / columns)
        # One scale per row: the groups of a criterion side by side read as LLM-KICK compares them.
        figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows), squeeze=False,
                                    sharex=True, sharey="row")  # fmt: skip
        for index, (criterion, group) in enumerate(panels):
            axis = axes[index // columns][index % columns]
            view = MetricView(points, compared, breakdown.task, breakdown.metrics[(criterion, group)])
            _panel(axis, view, methods, (criterion if index % columns == 0 else "", f"{criterion} — {group}"))
            axis.set_xlabel("sparsity" if index + columns >= len(panels) else "")
        for index in range(len(panels), rows * columns):
            axes[index // columns][index % columns].set_visible(False)
        axes[0][0].legend(fontsize=7)
        title = f"{model_prefix(points)}{breakdown.task} by group"
        figure.suptitle(f"{title} (bars: paired 95% interval vs dense)", fontsize=10)
        figure.tight_layout()
        written.append(save_figure(plt, figure, out_dir / f"plot_{breakdown.task}_by_group.png", dpi=100))
    return written
