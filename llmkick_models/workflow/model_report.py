"""The report of a --models run: a section per model (its table and plots, every point against its own
model's dense) and one cross-model figure (score and relative change from dense vs parameter count)."""

from __future__ import annotations

from pathlib import Path

from llmkick_models.workflow.paired_stats import Comparison
from llmkick_models.workflow.run_results import PointResult, dense_point, report_columns


def run_models(points: list[PointResult]) -> dict[str, list[PointResult]]:
    """The run's points per model label (empty for a one-model run)."""
    models: dict[str, list[PointResult]] = {}
    for point in points:
        if point.point.get("model"):
            models.setdefault(point.point["model"], []).append(point)
    return models


def _parameters(points: list[PointResult]) -> float | None:
    """The model's parameter count, as lm-eval recorded it at its dense point."""
    dense = dense_point(points)
    count = dense.results.get("config", {}).get("model_num_parameters") if dense is not None else None
    return float(count) if isinstance(count, (int, float)) and count > 0 else None


def models_section(points: list[PointResult], compared: dict, run_dir: Path) -> tuple[str, list[Path]]:
    """Markdown, one section per model (its main table and its plots under ``models/<label>/``), and the
    plots written; nothing for a one-model run."""
    from llmkick_models.workflow.main_table import markdown_table
    from llmkick_models.workflow.report_plots import plot_run

    blocks, plots = [], []
    for label, members in run_models(points).items():
        folder = run_dir / "models" / label
        folder.mkdir(parents=True, exist_ok=True)
        written = plot_run(members, folder, compared)
        plots += written
        pretrained = members[0].point.get("pretrained", label)
        blocks += [f"## Model {label} (`{pretrained}`)", "", markdown_table(members, compared),
                   *[f"![{plot.stem}](models/{label}/{plot.name})" for plot in written], ""]  # fmt: skip
    return "\n".join(blocks), plots


def plot_models(points: list[PointResult], run_dir: Path, compared: dict) -> list[Path]:
    """``models.png``: per headline metric, the score (top) and the relative change from the model's own
    dense (bottom) against the model's parameter count, one line per method setting (dense included)."""
    from llmkick_models.workflow.report_plots import pyplot

    models = run_models(points)
    sizes = {label: _parameters(members) for label, members in models.items()}
    if len(models) < 2 or any(size is None for size in sizes.values()):
        return []
    plt = pyplot()
    columns = list(report_columns(points))
    figure, axes = plt.subplots(2, len(columns), figsize=(5 * len(columns), 7), squeeze=False, sharex="col")
    for column, (task, metric) in enumerate(columns):
        lines: dict[str, list[tuple[float, float, float | None]]] = {}
        for label, members in models.items():
            for point in members:
                score = point.trusted_score(task, metric)
                found = compared.get((point.point["id"], task, metric))
                change = found.relative if isinstance(found, Comparison) else None
                line = point.point.get("series", "").removeprefix(f"{label}: ")
                line = "dense" if point.point["method"] == "none" else line
                if score is not None:
                    lines.setdefault(line, []).append((sizes[label] or 0.0, score, change))
        for line, values in sorted(lines.items()):
            values.sort()
            axes[0][column].plot([v[0] for v in values], [v[1] for v in values], marker="o", label=line)
            changed = [(v[0], 100 * v[2]) for v in values if v[2] is not None]
            if changed:
                axes[1][column].plot(*zip(*changed, strict=True), marker="o", label=line)
        axes[0][column].set_title(f"{task} — {metric.split(',')[0]}", fontsize=9)
        axes[0][column].legend(fontsize=7)
        axes[1][column].axhspan(-5, 5, color="grey", alpha=0.15)
        axes[1][column].set_ylabel("change from dense (%)")
        axes[1][column].set_xlabel("parameters")
        axes[1][column].set_xscale("log")
    figure.tight_layout()
    written = run_dir / "models.png"
    figure.savefig(written, dpi=110)
    plt.close(figure)
    return [written]
