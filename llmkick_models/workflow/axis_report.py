"""The report's view of the --grid axes: per axis, one table (each headline score against the axis value,
the point's verdict vs dense beside it) and one figure (score vs axis value, one line per series: the
method with its other coordinates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmkick_models.workflow.paired_stats import Comparison
from llmkick_models.workflow.report_format import SYMBOLS, fmt
from llmkick_models.workflow.run_results import PointResult, dense_point, report_columns


def run_axes(points: list[PointResult]) -> dict[str, list[str]]:
    """Each --grid axis of the run with its values, in first-seen order (none for an older run)."""
    axes: dict[str, list[str]] = {}
    for point in points:
        for name, value in point.point.get("axes", {}).items():
            if value not in axes.setdefault(name, []):
                axes[name].append(value)
    return axes


def _line(point: PointResult, axis: str) -> str:
    """What a point has besides ``axis``: its id with that axis' part taken out (one line per such)."""
    coords = point.point
    rest = [f"{k}={v}" for k, v in coords.get("axes", {}).items() if k != axis]
    where = coords["pattern"] or (f"s{coords['sparsity']:g}" if coords["sparsity"] is not None else "")
    bits = f"{coords['bits']}bit" if coords["bits"] is not None else ""
    return " ".join(filter(None, [coords["method"], where, bits, *rest]))  # a --models run: per model


def _cell(point: PointResult, task: str, metric: str, compared: dict) -> str:
    score = point.trusted_score(task, metric)
    result = compared.get((point.point["id"], task, metric))
    mark = SYMBOLS.get(result.verdict, "") if isinstance(result, Comparison) else ""
    return f"{fmt(score)} {mark}".strip()


def axes_section(points: list[PointResult], compared: dict) -> str:
    """Markdown: one table per --grid axis (rows: the other coordinates and the axis value; columns: the
    headline scores, with the verdict mark vs dense); empty when the run has no --grid axis."""
    axes = run_axes(points)
    columns = list(report_columns(points))
    blocks = []
    for axis, values in axes.items():
        header = ["line", axis, *(f"{task} ({metric.split(',')[0]})" for task, metric in columns)]
        lines = [f"## Axis {axis}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        if (dense := dense_point(points)) is not None:  # the one model's (a --models run: per model)
            lines.append("| dense | – | " + " | ".join(_cell(dense, t, m, {}) for t, m in columns) + " |")
        members = [p for p in points if axis in p.point.get("axes", {})]
        members.sort(key=lambda p: (_line(p, axis), values.index(p.point["axes"][axis])))
        for point in members:
            cells = [_cell(point, t, m, compared) for t, m in columns]
            lines.append(
                f"| {_line(point, axis)} | {point.point['axes'][axis]} | " + " | ".join(cells) + " |"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def _x_positions(values: list[str]) -> tuple[list[float], bool]:
    """Numbers when every value is one (nsamples), else their order (calibration=c4,wikitext2)."""
    try:
        return [float(v) for v in values], True
    except ValueError:
        return [float(i) for i in range(len(values))], False


def plot_axes(points: list[PointResult], out_dir: Path, compared: dict) -> list[Path]:
    """One PNG per --grid axis (``axis_<name>.png``): per headline metric a panel of score vs the axis
    value, one line per series, dense as a dashed line."""
    from llmkick_models.workflow.report_plots import model_prefix, pyplot, save_figure

    written = []
    columns = list(report_columns(points))
    dense = dense_point(points)
    for axis, values in run_axes(points).items():
        plt = pyplot()
        xs, numeric = _x_positions(values)
        figure, panels = plt.subplots(1, len(columns), figsize=(5 * len(columns), 4), squeeze=False)
        for panel, (task, metric) in zip(panels[0], columns, strict=True):
            _draw_axis_panel(panel, points, axis, (values, xs), (task, metric))
            if dense is not None and (base := dense.trusted_score(task, metric)) is not None:
                panel.axhline(base, color="black", linestyle="--", linewidth=0.8, label="dense")
            panel.set_xticks(xs, values)
            panel.set_xscale("log" if numeric and min(xs) > 0 and max(xs) / min(xs) >= 8 else "linear")
            panel.set_xlabel(axis)
            panel.set_ylabel(metric.split(",")[0])
            panel.set_title(task, fontsize=9)
            panel.grid(alpha=0.3)
            panel.legend(fontsize=7)
        if model_prefix(points):  # a --models run: each model's figure, against its own dense
            figure.suptitle(f"{model_prefix(points)}score vs {axis}", fontsize=10)
        figure.tight_layout()
        written.append(save_figure(plt, figure, out_dir / f"axis_{axis}.png"))
    return written


def _draw_axis_panel(
    panel: Any, points: list[PointResult], axis: str, where: tuple[list[str], list[float]], column: tuple
) -> None:
    values, xs = where
    lines: dict[str, list[tuple[float, float]]] = {}
    for point in points:
        value = point.point.get("axes", {}).get(axis)
        score = point.trusted_score(*column) if value is not None else None
        if score is not None:
            lines.setdefault(_line(point, axis), []).append((xs[values.index(value)], score))
    for label, pairs in sorted(lines.items()):
        pairs.sort()
        panel.plot([x for x, _ in pairs], [y for _, y in pairs], marker="o", label=label)
