"""Turn a sweep's run directory into LLM-KICK's picture: a markdown table and plots vs compression.

"Matching" follows the paper: a compressed point matches when its score is within 5% of the dense model's
(>= 0.95x dense for higher-is-better metrics, <= 1.05x for perplexity-like ones).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MATCHING_TOLERANCE = 0.05
#: Which metric headlines a task when it reports several (first present wins).
PREFERRED_METRICS = ("contains", "exact_match", "acc", "strict_em", "em", "f1", "word_perplexity", "score")


def headline_metrics(results: dict[str, Any]) -> dict[str, tuple[str, float]]:
    """Each task's (and group's) headline metric: ``{task: (metric key, value)}``."""
    headlines = {}
    for task, metrics in results.get("results", {}).items():
        candidates = {
            key: value
            for key, value in metrics.items()
            if "," in key
            and "_stderr" not in key
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        }
        if not candidates:
            continue
        ranked = sorted(
            candidates,
            key=lambda k: (
                PREFERRED_METRICS.index(k.split(",")[0])
                if k.split(",")[0] in PREFERRED_METRICS
                else len(PREFERRED_METRICS)
            ),
        )
        headlines[task] = (ranked[0], float(candidates[ranked[0]]))
    return headlines


def _higher_is_better(results: dict[str, Any], task: str, metric_key: str) -> bool:
    metric = metric_key.split(",")[0]
    known = results.get("higher_is_better", {}).get(task, {})
    if metric in known:
        return bool(known[metric])
    return "perplexity" not in metric and "bits_per_byte" not in metric


@dataclass
class PointResult:
    """One finished point of a run."""

    point: dict[str, Any]
    results: dict[str, Any]

    @property
    def measured_sparsity(self) -> float | None:
        """Overall sparsity measured on the weights (from the compression report), if recorded."""
        report = self.results.get("config", {}).get("llmkick_compression")
        return report.get("overall_sparsity") if report else None


def load_run(run_dir: Path) -> list[PointResult]:
    """Finished points of a run directory, in the sweep's order."""
    sweep_file = run_dir / "sweep.json"
    if not sweep_file.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a sweep run directory (no sweep.json); run `llmkick sweep` first"
        )
    planned = json.loads(sweep_file.read_text())["points"]
    loaded = []
    for point in planned:
        results_file = run_dir / "points" / point["id"] / "results.json"
        if results_file.is_file():
            loaded.append(PointResult(point, json.loads(results_file.read_text())))
    if not loaded:
        raise FileNotFoundError(f"{run_dir} holds no finished point yet")
    return loaded


def matches(value: float, dense: float, higher_is_better: bool) -> bool | None:
    """LLM-KICK's "matching": within 5% of the dense score, in the metric's good direction.

    None when the dense model scores 0 on a higher-is-better metric: every point would "match" a model
    that knows nothing, which says nothing.
    """
    if higher_is_better and dense <= 0:
        return None
    if higher_is_better:
        return value >= (1 - MATCHING_TOLERANCE) * dense
    return value <= (1 + MATCHING_TOLERANCE) * dense


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}"


def markdown_table(points: list[PointResult]) -> str:
    """Rows = compression points; columns = coordinates, measured sparsity, each task's headline metric."""
    dense = next((p for p in points if p.point["method"] == "none"), None)
    columns: dict[str, str] = {}
    for point in points:
        for task, (metric, _value) in headline_metrics(point.results).items():
            columns.setdefault(task, metric)
    header = ["point", "method", "sparsity", "pattern", "bits", "measured sparsity"]
    header += [f"{task} ({metric.split(',')[0]})" for task, metric in columns.items()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point in points:
        coords = point.point
        row = [coords["id"], coords["method"], _fmt(coords["sparsity"]), coords["pattern"] or "–",
               _fmt(coords["bits"]), _fmt(point.measured_sparsity)]  # fmt: skip
        values = headline_metrics(point.results)
        for task, metric in columns.items():
            value = values.get(task, (metric, None))[1]
            cell = _fmt(value)
            dense_value = headline_metrics(dense.results).get(task, (metric, None))[1] if dense else None
            if value is not None and dense_value is not None and point is not dense:
                ok = matches(value, dense_value, _higher_is_better(point.results, task, metric))
                cell += "" if ok is None else " ✓" if ok else " ✗"
            row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    legend = (
        f"\n✓ = matching (within {MATCHING_TOLERANCE:.0%} of dense, LLM-KICK), ✗ = not; no mark: dense is 0."
        if dense
        else "\nNo dense point in this run: matching verdicts need one."
    )
    return "\n".join(lines) + "\n" + legend + "\n"


def plot_run(points: list[PointResult], out_dir: Path) -> list[Path]:
    """One PNG per task: score vs sparsity (a line per method), N:M and bits as their own panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = next((p for p in points if p.point["method"] == "none"), None)
    tasks: dict[str, str] = {}
    for point in points:
        for task, (metric, _value) in headline_metrics(point.results).items():
            tasks.setdefault(task, metric)
    written = []
    for task, metric in tasks.items():

        def value_of(point: PointResult, task: str = task) -> float | None:
            return headline_metrics(point.results).get(task, (None, None))[1]

        dense_value = value_of(dense) if dense else None
        unstructured = [p for p in points if p.point["sparsity"] is not None and not p.point["pattern"]]
        nm = [p for p in points if p.point["pattern"]]
        quantized = [p for p in points if p.point["bits"] is not None and p.point["sparsity"] is None]
        panels = [
            name
            for name, members in (("sparsity", unstructured), ("N:M", nm), ("bits", quantized))
            if members
        ]
        panels = panels or ["sparsity"]
        figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
        for axis, panel in zip(axes[0], panels, strict=True):
            if panel == "sparsity":
                for method in sorted({p.point["method"] for p in unstructured}):
                    series = sorted(
                        (p.point["sparsity"], value_of(p))
                        for p in unstructured
                        if p.point["method"] == method
                    )
                    if dense_value is not None:
                        series = [(0.0, dense_value), *series]
                    axis.plot([x for x, _ in series], [y for _, y in series], marker="o", label=method)
                axis.set_xlabel("sparsity")
            elif panel == "N:M":
                labels = sorted({p.point["pattern"] for p in nm})
                for method in sorted({p.point["method"] for p in nm}):
                    xs = [labels.index(p.point["pattern"]) for p in nm if p.point["method"] == method]
                    ys = [value_of(p) for p in nm if p.point["method"] == method]
                    axis.plot(xs, ys, marker="s", linestyle="none", label=method)
                axis.set_xticks(range(len(labels)), labels)
                axis.set_xlabel("N:M pattern (N zeros per M)")
            else:
                for method in sorted({p.point["method"] for p in quantized}):
                    series = sorted(
                        (p.point["bits"], value_of(p)) for p in quantized if p.point["method"] == method
                    )
                    axis.plot([x for x, _ in series], [y for _, y in series], marker="^", label=method)
                axis.set_xlabel("bits")
                axis.invert_xaxis()
            if dense_value is not None:
                axis.axhline(dense_value, color="black", linestyle="--", linewidth=1, label="dense")
                higher = _higher_is_better(dense.results, task, metric)
                band = dense_value * (1 - MATCHING_TOLERANCE if higher else 1 + MATCHING_TOLERANCE)
                axis.axhline(band, color="grey", linestyle=":", linewidth=1, label="matching limit (5%)")
            if "perplexity" in metric:
                axis.set_yscale("log")
            axis.set_ylabel(metric.split(",")[0])
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
        figure.suptitle(task)
        figure.tight_layout()
        path = out_dir / f"plot_{task}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def write_report(run_dir: Path) -> tuple[Path, list[Path]]:
    """Write ``report.md`` (table) and ``plot_<task>.png`` files into the run directory."""
    points = load_run(run_dir)
    plots = plot_run(points, run_dir)
    sweep = json.loads((run_dir / "sweep.json").read_text())
    body = [
        f"# llmkick sweep: {sweep.get('base_model_args', '')}",
        "",
        f"Tasks: `{sweep.get('tasks', '')}`; extra lm-eval args: `{' '.join(sweep.get('lm_eval_args', []))}`",
        "",
        markdown_table(points),
        *[f"![{plot.stem}]({plot.name})" for plot in plots],
        "",
    ]
    report = run_dir / "report.md"
    report.write_text("\n".join(body))
    return report, plots
