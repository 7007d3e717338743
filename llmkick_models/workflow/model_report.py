"""The report of a --models run: a section per model (its table and plots, every point against its own
model's dense) and one cross-model figure (score and relative change from dense vs parameter count)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmkick_models.workflow.paired_stats import Comparison
from llmkick_models.workflow.run_results import PointResult, dense_point, report_columns


def run_models(points: list[PointResult]) -> dict[str, list[PointResult]]:
    """The run's points per model label (empty for a one-model run)."""
    models: dict[str, list[PointResult]] = {}
    for point in points:
        if point.point.get("model"):
            models.setdefault(point.point["model"], []).append(point)
    return models


def model_parts(points: list[PointResult]) -> list[tuple[str, list[PointResult]]]:
    """Each model's label and points; a one-model run: one part labelled ``""``."""
    return list(run_models(points).items()) or [("", points)]


def figure_link(plot: Path, run_dir: Path) -> str:
    """The markdown image of a figure written under ``run_dir``, its path (with any model folder) as text."""
    where = plot.relative_to(run_dir).as_posix()
    return f"![{where.removesuffix('.png')}]({where})"


def _parameters(points: list[PointResult]) -> float | None:
    """The model's parameter count, as lm-eval recorded it at its dense point."""
    dense = dense_point(points)
    count = dense.results.get("config", {}).get("model_num_parameters") if dense is not None else None
    return float(count) if isinstance(count, (int, float)) and count > 0 else None


def each_model(
    points: list[PointResult], run_dir: Path, draw: Callable[[list[PointResult], Path], list[Path]]
) -> list[Path]:
    """``draw(points, folder)`` once per model into ``models/<label>/`` (a one-model run: once, into the run
    directory): a figure that draws dense, or a change from it, sees one model's points only."""
    models = run_models(points)
    if not models:
        return draw(points, run_dir)
    written = []
    for label, members in models.items():
        folder = run_dir / "models" / label
        folder.mkdir(parents=True, exist_ok=True)
        written += draw(members, folder)
    return written


def demote(markdown: str) -> str:
    """``markdown`` with every heading one level down (a report section inside a model's section)."""
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in markdown.splitlines()) + "\n"


def run_title(sweep: dict[str, Any]) -> str:
    """report.md's first line: the model (``pretrained=`` of the run's model args) or, for a --models run,
    every planned model with its label, finished or not."""
    planned = {p["model"]: p.get("pretrained", p["model"]) for p in sweep.get("points", []) if p.get("model")}
    if not planned:
        return f"# llmkick sweep: {sweep.get('base_model_args', '')}"
    named = ", ".join(f"{label} (`{pretrained}`)" for label, pretrained in planned.items())
    base = sweep.get("base_model_args")
    return f"# llmkick sweep of {len(planned)} models: {named}" + (
        f"\n\nModel args of every model: `{base}`" if base else ""
    )


def models_section(
    points: list[PointResult], compared: dict, run_dir: Path
) -> tuple[str, list[Path], list[dict[str, Any]]]:
    """Markdown, one section per model: its dense, its main table, quantization table and --grid axes, and
    its figures (written under ``models/<label>/``); the figures; report.json's ``models``.  Nothing for a
    one-model run."""
    from llmkick_models.workflow.axis_report import axes_section, plot_axes
    from llmkick_models.workflow.main_table import markdown_table
    from llmkick_models.workflow.quantization_table import quantization_json, quantization_section
    from llmkick_models.workflow.report_plots import plot_run
    from llmkick_models.workflow.size_plot import plot_stored_size

    blocks, plots, data = [], [], []
    for label, members in run_models(points).items():
        compressed = any(p.point["method"] != "none" for p in members)  # else no figure: nothing to draw
        written = each_model(members, run_dir, lambda m, folder: [
            *plot_run(m, folder, compared), *plot_stored_size(m, folder, compared),
            *plot_axes(m, folder, compared),
        ]) if compressed else []  # fmt: skip
        plots += written
        pretrained = members[0].point.get("pretrained", label)
        dense = dense_point(members)
        reference = (
            f"Dense reference: `{dense.point['id']}`; every verdict and change from dense in this section is"
            " against it."
            if dense is not None
            else "This model has no finished dense point: its points get no verdict."
        )
        sections = [quantization_section(members, compared), axes_section(members, compared)]
        blocks += [f"## Model {label} (`{pretrained}`)", "", reference, "", markdown_table(members, compared),
                   *[demote(section) for section in sections if section],
                   *[figure_link(plot, run_dir) for plot in written],
                   ""]  # fmt: skip
        data.append({
            "label": label, "pretrained": pretrained, "dense": dense.point["id"] if dense else None,
            "parameters": None if (count := _parameters(members)) is None else int(count),
            "points": [p.point["id"] for p in members],
            "quantization": quantization_json(members, compared),
            "figures": [plot.relative_to(run_dir).as_posix() for plot in written],
        })  # fmt: skip
    return "\n".join(blocks), plots, data


def plot_models(points: list[PointResult], run_dir: Path, compared: dict) -> list[Path]:
    """``models.png``: per headline metric, the score (top) and the relative change from the model's own
    dense (bottom; dense itself at 0) against the model's parameter count, each model's ticks named, one
    line per point setting (its id without the model: ``wanda-s0.5``) in one color in both panels, dense in
    black; one legend below the panels."""

    from matplotlib.ticker import NullLocator

    from llmkick_models.workflow.report_plots import (
        legend_below,
        pyplot,
        save_figure,
        score_axis,
        style_changes,
    )

    models = run_models(points)
    sizes = {label: _parameters(members) for label, members in models.items()}
    if len(models) < 2 or any(size is None for size in sizes.values()):
        return []
    plt = pyplot()
    columns = list(report_columns(points))
    names = sorted({p.point["id"].removeprefix(f"{p.point['model']}--") for p in points
                    if p.point["method"] != "none"})  # fmt: skip
    colors = {"dense": "black", **{name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}}
    figure, axes = plt.subplots(2, len(columns), figsize=(5 * len(columns), 7.5), squeeze=False, sharex="col")
    for column, (task, metric) in enumerate(columns):
        top, bottom = axes[0][column], axes[1][column]
        lines: dict[str, list[tuple[float, float, float | None]]] = {}
        for label, members in models.items():
            for point in members:
                score = point.trusted_score(task, metric)
                found = compared.get((point.point["id"], task, metric))
                dense = point.point["method"] == "none"
                change = 0.0 if dense else found.relative if isinstance(found, Comparison) else None
                # A line joins the same setting across models: the point id without the model's label.
                setting = "dense" if dense else point.point["id"].removeprefix(f"{label}--")
                if score is not None:
                    lines.setdefault(setting, []).append((sizes[label] or 0.0, score, change))
        for line, values in sorted(lines.items(), key=lambda item: (item[0] != "dense", item[0])):
            values.sort()
            top.plot(
                [v[0] for v in values], [v[1] for v in values], marker="o", color=colors[line], label=line
            )
            changed = [(v[0], 100 * v[2]) for v in values if v[2] is not None]
            if changed:
                bottom.plot(*zip(*changed, strict=True), marker="o", color=colors[line], label=line)
        top.set_title(f"{task} — {metric.split(',')[0]}", fontsize=9)
        score_axis(top, metric)
        style_changes(bottom)
        bottom.set_xscale("log")
        bottom.set_xticks(list(sizes.values()), [f"{label}\n{size:.3g}" for label, size in sizes.items()])
        bottom.xaxis.set_minor_locator(NullLocator())
        bottom.set_xlabel("parameters (model_num_parameters)")
    figure.suptitle("Across models: each point against its own model's dense", fontsize=10)
    legend_below(figure, axes[0][0], ncol=min(4, 2 * len(columns)))  # as many as the figure's width holds
    return [save_figure(plt, figure, run_dir / "models.png")]
