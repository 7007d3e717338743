"""The report's size figure: every headline score against the stored size relative to dense 16-bit, pruning
and quantization points on the same axes, so that "quantization beats pruning at equal size" is read off."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from llmkick_models.workflow.report_plots import (
    MetricView,
    dense_lines,
    legend_below,
    model_prefix,
    pyplot,
    save_figure,
    score_axis,
)
from llmkick_models.workflow.run_results import PointResult, report_columns
from llmkick_models.workflow.stored_size import point_size

#: Marker per kind of point: the kind is what the figure compares, the color says the method.
KIND_MARKERS = {"pruning": "o", "quantization": "s", "pruning + quantization": "^"}
PANELS_PER_ROW = 3


def point_kind(point: PointResult) -> str:
    """``pruning``, ``quantization`` or ``pruning + quantization`` (from the point's coordinates)."""
    prunes = point.point["sparsity"] is not None or bool(point.point["pattern"])
    quantizes = point.point["bits"] is not None
    return "pruning + quantization" if prunes and quantizes else "pruning" if prunes else "quantization"


def point_label(point: PointResult) -> str:
    """A short label beside the marker: ``50%``, ``2:4``, ``4 bit``."""
    parts = []
    if point.point["pattern"]:
        parts.append(point.point["pattern"])
    elif point.point["sparsity"] is not None:
        parts.append(f"{100 * point.point['sparsity']:g}%")
    if point.point["bits"] is not None:
        parts.append(f"{point.point['bits']} bit")
    return " ".join(parts)


def plot_stored_size(points: list[PointResult], out_dir: Path, compared: dict) -> list[Path]:
    """``plot_stored_size.png``: one panel per headline metric, score vs stored size (whole model) with
    paired 95% interval bars; dense at 1.  Nothing when the run has no dense point or no sized point."""
    sized = [(p, size) for p in points if p.point["method"] != "none" and (size := point_size(p).relative)]
    columns = list(report_columns(points))
    if not sized or not columns or not any(p.point["method"] == "none" for p in points):
        return []
    shares = {round(share, 9) for p, _ in sized if (share := point_size(p).linear_share)}
    share = shares.pop() if len(shares) == 1 else None  # one model, one share: else no second axis
    plt = pyplot()
    rows = math.ceil(len(columns) / PANELS_PER_ROW)
    width = min(len(columns), PANELS_PER_ROW)
    figure, axes = plt.subplots(rows, width, figsize=(5.2 * width, 4.2 * rows + 0.8), squeeze=False)
    methods = sorted({p.point["method"] for p, _ in sized})
    colors = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
    for index, (task, metric) in enumerate(columns):
        axis = axes[index // PANELS_PER_ROW][index % PANELS_PER_ROW]
        _draw_panel(axis, MetricView(points, compared, task, metric), sized, colors, share)
        axis.set_title(f"{task} — {metric.split(',')[0]}", fontsize=9)
    for spare in range(len(columns), rows * width):
        axes[spare // PANELS_PER_ROW][spare % PANELS_PER_ROW].set_visible(False)
    title = "Score vs stored size (whole model, relative to dense 16-bit; storage model in report.json)"
    figure.suptitle(f"{model_prefix(points)}{title}\n(bars: paired 95% interval vs dense)", fontsize=10)
    legend_below(figure, axes[0][0], ncol=4, row_height=0.035)
    return [save_figure(plt, figure, out_dir / "plot_stored_size.png")]


def _draw_panel(
    axis: Any,
    view: MetricView,
    sized: list[tuple[PointResult, float]],
    colors: dict[str, Any],
    share: float | None,
) -> None:
    """Dense at 1 (a black star), then each method's points of each kind, joined by a thin line; with the
    linears' ``share`` of the parameters, their own ratio on a second x axis at the top."""
    dense_value = view.value(view.dense)
    if dense_value is not None:
        axis.plot([1.0], [dense_value], marker="*", markersize=12, color="black", linestyle="none")
    dense_lines(axis, view)
    series: dict[tuple[str, str], list[tuple[float, PointResult]]] = {}
    for point, size in sized:
        if view.value(point) is not None:  # a score listed under Problems is not drawn
            series.setdefault((point.point["method"], point_kind(point)), []).append((size, point))
    for k, ((method, kind), members) in enumerate(sorted(series.items())):
        members.sort(key=lambda item: item[0])
        xs, chosen = [size for size, _ in members], [point for _, point in members]
        ys, bars = [view.value(p) for p in chosen], [view.bar(p) for p in chosen]
        style = {"color": colors[method], "marker": KIND_MARKERS[kind], "linewidth": 0.8, "capsize": 3,
                 "markersize": 6, "label": f"{method} ({kind})"}  # fmt: skip
        axis.errorbar(xs, ys, yerr=[[b[0] for b in bars], [b[1] for b in bars]], linestyle="-", **style)
        for x, y, point in zip(xs, ys, chosen, strict=True):  # labels above and below in turn: less overlap
            axis.annotate(point_label(point), (x, y), textcoords="offset points", fontsize=7,
                          xytext=(5, 4 if k % 2 == 0 else -11), color=colors[method])  # fmt: skip
    score_axis(axis, view.metric)
    axis.set_xlabel("stored size relative to dense 16-bit (whole model)")
    low, _ = axis.get_xlim()
    axis.set_xlim(min(low, 0.95), 1.05)
    if share:  # the same sizes, counted over the decoder linears only (a linear map of the whole model's)
        top = axis.secondary_xaxis(
            "top", functions=(lambda x: 1 - (1 - x) / share, lambda x: 1 - share * (1 - x))
        )
        top.set_xlabel("decoder linears only", fontsize=8)
        top.tick_params(labelsize=7)
