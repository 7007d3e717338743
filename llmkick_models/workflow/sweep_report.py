"""Turn a sweep's run directory into LLM-KICK's picture: verdicts with intervals, a table, plots.

"Matching" follows the paper: a compressed point matches when its score is within 5% of the dense model's
(>= 0.95x dense for higher-is-better metrics, <= 1.05x for perplexity-like ones).  With the per-document
samples a sweep keeps, every point is compared with dense on the same documents
(:mod:`llmkick_models.workflow.paired_stats`) and the verdict is taken on the 95% interval of the relative
change: ``matching``, ``not matching`` or ``inconclusive``.

Only top-level tasks and groups with a score are reported as columns (a group's subtasks go to
``report.json``); a judged task shows every headline judge score.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from llmkick_models.workflow import paired_stats
from llmkick_models.workflow.paired_stats import MATCHING_TOLERANCE, Comparison
from llmkick_models.workflow.point_stack import run_stack, stack_section, stack_warning
from llmkick_models.workflow.report_plots import plot_run
from llmkick_models.workflow.run_results import (
    PointResult,
    comparisons,
    dense_point,
    higher_is_better,
    load_run,
    matches,
    numeric_metrics,
    report_columns,
    reported_tasks,
)

REPORT_SCHEMA = "llmkick-report/1"
SYMBOLS = {
    paired_stats.MATCHING: "✓",
    paired_stats.NOT_MATCHING: "✗",
    paired_stats.INCONCLUSIVE: "~",
    paired_stats.NO_VERDICT: "",
}
#: Which metric headlines a task when it reports several (first present wins).
# ---- the report ------------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}"


def _pct(value: float) -> str:
    return f"{value * 100:+.1f}%"


def markdown_table(points: list[PointResult], compared: dict | None = None) -> str:
    """Rows = compression points; columns = coordinates, measured sparsity, each task's headline metrics.

    Marks: the interval verdict where per-document samples exist, else the point estimate's (labelled so).
    """
    compared = comparisons(points) if compared is None else compared
    dense = dense_point(points)
    columns = report_columns(points)
    header = ["point", "method", "sparsity", "pattern", "bits", "measured sparsity"]
    header += [f"{task} ({metric.split(',')[0]})" for task, metric in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    estimate_only = False
    for point in points:
        coords = point.point
        row = [coords["id"], coords["method"], _fmt(coords["sparsity"]), coords["pattern"] or "–",
               _fmt(coords["bits"]), _fmt(point.measured_sparsity)]  # fmt: skip
        for task, metric in columns:
            value = point.results.get("results", {}).get(task, {}).get(metric)
            cell = _fmt(value)
            result = compared.get((coords["id"], task, metric))
            if isinstance(result, Comparison):
                cell += f" {SYMBOLS[result.verdict]}".rstrip()
            elif value is not None and dense is not None and point is not dense:
                dense_value = dense.results.get("results", {}).get(task, {}).get(metric)
                if dense_value is not None:
                    ok = matches(value, dense_value, higher_is_better(point.results, task, metric))
                    cell += "" if ok is None else " ✓*" if ok else " ✗*"
                    estimate_only = estimate_only or ok is not None
            row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    if dense is None:
        legend = "\nNo dense point in this run: matching verdicts need one."
    else:
        legend = (
            f"\n✓ matching, ✗ not matching, ~ inconclusive: the 95% interval of the change from dense"
            f" lies within {MATCHING_TOLERANCE:.0%} of dense (LLM-KICK), beyond it, or straddles it; no mark:"
            " no verdict (dense scores 0, no samples, or too few documents for an interval)."
        )
        if estimate_only:
            legend += (
                " ✓*/✗*: point estimate only, no per-document samples (sweep with --log_samples), so"
                " sampling error is not accounted for."
            )
    return "\n".join(lines) + "\n" + legend + "\n"


def comparison_tables(points: list[PointResult], compared: dict) -> str:
    """One table per headline metric: each point against dense, with intervals, n and the verdict."""
    blocks = []
    for task, metric in report_columns(points):
        rows = [(pid, result) for (pid, t, m), result in compared.items() if (t, m) == (task, metric)]
        if not rows:
            continue
        name = metric.split(",")[0]
        lines = [
            f"### {task} — {name}",
            "",
            "| point | n | dense | point | difference [95% CI] | relative [95% CI] | McNemar p | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for pid, result in rows:
            if not isinstance(result, Comparison):
                lines.append(f"| {pid} | – | – | – | – | – | – | no verdict: {result} |")
                continue
            if result.relative is None:
                relative = "– (dense is 0)"
            elif result.relative_ci is None:
                relative = f"{_pct(result.relative)} [no interval]"
            else:
                relative = (
                    f"{_pct(result.relative)} [{_pct(result.relative_ci[0])}, {_pct(result.relative_ci[1])}]"
                )
            interval = (
                f"[{result.difference_ci[0]:+.4g}, {result.difference_ci[1]:+.4g}]"
                if result.difference_ci is not None
                else "[no interval]"
            )
            p_value = "–" if result.mcnemar_p is None else f"{result.mcnemar_p:.3g}"
            lines.append(
                f"| {pid} | {result.n} | {_fmt(result.dense)} | {_fmt(result.point)} | "
                f"{result.difference:+.4g} {interval} | {relative} | {p_value} | {result.verdict} |"
            )
        methods = sorted({r.method for _, r in rows if isinstance(r, Comparison)})
        if methods:
            lines += ["", "Intervals: " + "; ".join(methods) + "."]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def report_json(points: list[PointResult], compared: dict, sweep: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable report (schema documented in the README)."""
    columns = report_columns(points)
    out_points = []
    for point in points:
        entries = point.results.get("results", {})
        top = reported_tasks(point.results)
        scores: dict[str, dict[str, float]] = {}
        for task, metric in columns:
            if metric in entries.get(task, {}):
                scores.setdefault(task, {})[metric.split(",")[0]] = entries[task][metric]
        compared_here: dict[str, dict[str, Any]] = {}
        for (pid, task, metric), result in compared.items():
            if pid == point.point["id"]:
                compared_here.setdefault(task, {})[metric.split(",")[0]] = (
                    result.as_dict()
                    if isinstance(result, Comparison)
                    else {"verdict": paired_stats.NO_VERDICT, "reason": result}
                )
        subtasks = {
            name: {key.split(",")[0]: value for key, value in numeric_metrics(metrics).items()}
            for name, metrics in entries.items()
            if name not in top and numeric_metrics(metrics)
        }
        out_points.append({
            **point.point, "measured_sparsity": point.measured_sparsity, "scores": scores,
            "comparisons": compared_here, "subtasks": subtasks,
        })  # fmt: skip
    return {
        "schema": REPORT_SCHEMA,
        "tolerance": MATCHING_TOLERANCE,
        "confidence": paired_stats.CONFIDENCE,
        "run": {
            **{key: sweep.get(key) for key in ("base_model_args", "tasks", "compress_args", "lm_eval_args")},
            "stack": run_stack(points),
        },
        "headlines": [{"task": task, "metric": metric.split(",")[0]} for task, metric in columns],
        "points": out_points,
    }


def write_report(run_dir: Path) -> tuple[Path, list[Path]]:
    """Write ``report.md``, ``report.json`` and ``plot_<task>.png`` files into the run directory."""
    points = load_run(run_dir)
    compared = comparisons(points)
    plots = plot_run(points, run_dir, compared)
    sweep = json.loads((run_dir / "sweep.json").read_text())
    stack = run_stack(points)
    warning = stack_warning(stack)
    body = [
        f"# llmkick sweep: {sweep.get('base_model_args', '')}",
        "",
        f"Tasks: `{sweep.get('tasks', '')}`; extra lm-eval args: `{' '.join(sweep.get('lm_eval_args', []))}`",
        "",
        *([warning, ""] if warning else []),
        markdown_table(points, compared),
        "## Each point against dense, on the same documents",
        "",
        comparison_tables(points, compared) or "No comparison: the run has no dense point.\n",
        *[f"![{plot.stem}]({plot.name})" for plot in plots],
        "",
        stack_section(stack),
    ]
    report = run_dir / "report.md"
    report.write_text("\n".join(body))
    (run_dir / "report.json").write_text(json.dumps(report_json(points, compared, sweep), indent=1))
    return report, plots
