"""Turn a sweep's run directory into LLM-KICK's picture: verdicts with intervals, a table, plots.

"Matching" follows the paper: a compressed point matches when its score is within 5% of the dense model's
(>= 0.95x dense for higher-is-better metrics, <= 1.05x for perplexity-like ones).  With the per-document
samples a sweep keeps, every point is compared with dense on the same documents
(:mod:`llmkick_models.workflow.paired_stats`) and the verdict is taken on the 95% interval of the relative
change: ``matching``, ``not matching`` or ``inconclusive``.

Only top-level tasks and groups with a score are reported as columns (a group's subtasks go to
``report.json``); a judged task shows every headline judge score.

A score is used only when its samples give it back (:mod:`llmkick_models.workflow.sample_checks`); one that
does not, whose samples are missing, that cannot be recomputed or that is not a number gets no verdict, a
⚠ in the table and a line under "Problems" at the top of ``report.md`` (and in ``report.json``): one bad
point never stops the report of the others.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from llmkick_models.workflow import paired_stats
from llmkick_models.workflow.axis_report import axes_section, plot_axes
from llmkick_models.workflow.deciding_size import DECIDING_NOTE, POWER, comparison_json, deciding_cell
from llmkick_models.workflow.distinct_tokens import distinct_json, distinct_section, distinct_statistics
from llmkick_models.workflow.lost_examples import lost_documents, lost_section
from llmkick_models.workflow.main_table import markdown_table
from llmkick_models.workflow.model_report import (
    each_model,
    figure_link,
    model_parts,
    models_section,
    plot_models,
    run_title,
)
from llmkick_models.workflow.paired_stats import MATCHING_TOLERANCE, Comparison
from llmkick_models.workflow.point_stack import run_stack, stack_section, stack_warning
from llmkick_models.workflow.quantization_table import quantization_json, quantization_section
from llmkick_models.workflow.readings import (
    breakdown_comparisons,
    breakdowns,
    readings_json,
    readings_section,
)
from llmkick_models.workflow.readings_plot import plot_breakdowns
from llmkick_models.workflow.report_format import PROBLEM_MARK, fmt, relative_cell
from llmkick_models.workflow.report_plots import plot_run
from llmkick_models.workflow.run_results import (
    PointResult,
    comparisons,
    load_run,
    problems,
    report_columns,
    reported_tasks,
)
from llmkick_models.workflow.sample_checks import Finding, numeric_scores
from llmkick_models.workflow.size_plot import plot_stored_size
from llmkick_models.workflow.stored_size import STORAGE_MODEL, point_size
from llmkick_models.workflow.unfinished_points import unfinished_points, unfinished_section

REPORT_SCHEMA = "llmkick-report/1"
#: What a point of a --models run is compared with.
OWN_DENSE = "its own model's dense"


def problems_section(found: list[tuple[str, Finding]]) -> str:
    """The "Problems" block at the top of report.md: every score that gets no verdict because of its data."""
    if not found:
        return ""
    lines = [
        f"## Problems ({len(found)})",
        "",
        f"These scores get no verdict ({PROBLEM_MARK} in the table). `llmkick sweep` refuses to reuse a point"
        " whose results disagree with their samples or lack them; `--rerun` recomputes it.",
        "",
    ]
    for point_id, finding in found:
        metric = f" {finding.metric.split(',')[0]}" if finding.metric else ""
        lines.append(f"- **{point_id}** · {finding.task}{metric}: {finding.message}")
    return "\n".join(lines) + "\n"


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
            "| point | n | dense | point | difference [95% CI] | relative [95% CI] | McNemar p | verdict |"
            f" documents to decide ({POWER:.0%} power) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for pid, result in rows:
            if not isinstance(result, Comparison):
                lines.append(f"| {pid} | – | – | – | – | – | – | no verdict: {result} | – |")
                continue
            relative = relative_cell(result)
            interval = (
                f"[{result.difference_ci[0]:+.4g}, {result.difference_ci[1]:+.4g}]"
                if result.difference_ci is not None
                else "[no interval]"
            )
            p_value = "–" if result.mcnemar_p is None else f"{result.mcnemar_p:.3g}"
            lines.append(
                f"| {pid} | {result.n} | {fmt(result.dense)} | {fmt(result.point)} | "
                f"{result.difference:+.4g} {interval} | {relative} | {p_value} | {result.verdict} | "
                f"{deciding_cell(result)} |"
            )
        methods = sorted({r.method for _, r in rows if isinstance(r, Comparison)})
        if methods:
            lines += ["", "Intervals: " + "; ".join(methods) + ".", "", DECIDING_NOTE]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def report_json(
    points: list[PointResult],
    compared: dict,
    sweep: dict[str, Any],
    found: list[tuple[str, Finding]],
    readings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The machine-readable report (schema documented in the README); strict JSON (no NaN).  ``readings``:
    further top-level sections (``quantization``, ``lost``, ``models``, ...)."""
    columns = report_columns(points)
    out_points = []
    for point in points:
        entries = point.results.get("results", {})
        top = reported_tasks(point.results)
        scores: dict[str, dict[str, Any]] = {}
        for task, metric in columns:
            if metric in entries.get(task, {}):
                scores.setdefault(task, {})[metric.split(",")[0]] = entries[task][metric]
        compared_here: dict[str, dict[str, Any]] = {}
        for (pid, task, metric), result in compared.items():
            if pid == point.point["id"]:
                compared_here.setdefault(task, {})[metric.split(",")[0]] = comparison_json(result)
        subtasks = {
            name: {key.split(",")[0]: value for key, value in numeric_scores(metrics).items()}
            for name, metrics in entries.items()
            if name not in top and numeric_scores(metrics)
        }
        out_points.append({
            **point.point, "measured_sparsity": point.measured_sparsity,
            "stored_size": point_size(point).as_dict(), "scores": scores, "comparisons": compared_here,
            "subtasks": subtasks,
        })  # fmt: skip
    return strict_json({
        "schema": REPORT_SCHEMA,
        "tolerance": MATCHING_TOLERANCE,
        "confidence": paired_stats.CONFIDENCE,
        "run": {
            **{key: sweep.get(key) for key in ("base_model_args", "tasks", "compress_args", "lm_eval_args")},
            "stack": run_stack(points),
        },
        "problems": [_problem_json(pid, finding) for pid, finding in found],
        "headlines": [{"task": task, "metric": metric.split(",")[0]} for task, metric in columns],
        "storage_model": STORAGE_MODEL,
        "points": out_points,
        **(readings or {}),
    })  # fmt: skip


def _problem_json(point_id: str, finding: Finding) -> dict[str, Any]:
    metric = finding.metric.split(",")[0] if finding.metric else None
    return {"point": point_id, "task": finding.task, "metric": metric, "kind": finding.kind,
            "message": finding.message}  # fmt: skip


def _not_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def strict_json(data: Any) -> Any:
    """``data`` with every NaN or infinity replaced by null and a ``<key>_reason`` beside it (a NaN inside a
    list is reasoned on the list's key): JSON has no such numbers."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            inner = value if isinstance(value, (list, tuple)) else [value]
            bad = [repr(v) for v in inner if _not_finite(v)]
            out[key] = strict_json(value)
            if bad:
                out[f"{key}_reason"] = f"not a number: {', '.join(bad)}"
        return out
    if isinstance(data, (list, tuple)):
        return [strict_json(v) for v in data]
    return None if _not_finite(data) else data


def write_report(run_dir: Path) -> tuple[Path, list[Path]]:
    """Write ``report.md``, ``report.json`` and the ``plot_*.png`` figures into the run directory: the
    verdicts, then the readings (by group, distinct tokens, lost documents).  A --models run: a section per
    model, whose tables and figures (under ``models/<label>/``) hold that model's points and its dense."""
    points = load_run(run_dir)
    compared = comparisons(points)
    found = problems(points)
    sweep = json.loads((run_dir / "sweep.json").read_text())
    per_model, plots, models = models_section(points, compared, run_dir)
    if models:  # the cross-model figure first; every figure and table against dense is in the model sections
        top = plot_models(points, run_dir, compared)
        across = ["## Across models", "", *[figure_link(plot, run_dir) for plot in top], ""] if top else []
        overview = [*across, per_model]
    else:
        top = [*plot_run(points, run_dir, compared), *plot_stored_size(points, run_dir, compared),
               *plot_axes(points, run_dir, compared)]  # fmt: skip
        sections = [quantization_section(points, compared), axes_section(points, compared)]
        overview = [markdown_table(points, compared), *filter(None, sections)]
    groups = breakdowns(points)
    by_group = breakdown_comparisons(points, groups)
    group_plots = each_model(points, run_dir, lambda m, folder: plot_breakdowns(m, groups, by_group, folder))
    stack = run_stack(points)
    warning = stack_warning(stack)
    lost = lost_documents(points, compared)
    distinct = [(label, distinct_statistics(members), members) for label, members in model_parts(points)]
    unfinished = unfinished_points(run_dir, sweep["points"])  # sweep.json, read once above
    body = [
        run_title(sweep),
        "",
        f"Tasks: `{sweep.get('tasks', '')}`; extra lm-eval args: `{' '.join(sweep.get('lm_eval_args', []))}`",
        "",
        *([warning, ""] if warning else []),
        problems_section(found),
        *filter(None, [unfinished_section(unfinished)]),
        *overview,
        f"Stored size: {STORAGE_MODEL}\n",
        f"## Each point against {OWN_DENSE if models else 'dense'}, on the same documents",
        "",
        comparison_tables(points, compared) or "No comparison: the run has no dense point.\n",
        *[figure_link(plot, run_dir) for plot in ([] if models else top)],
        "",
        *filter(None, [readings_section(points, groups, by_group)]),
        *[figure_link(plot, run_dir) + "\n" for plot in group_plots],
        *filter(None, [distinct_section(distinct), lost_section(lost)]),
        stack_section(stack),
    ]
    report = run_dir / "report.md"
    report.write_text("\n".join(body))
    readings: dict[str, Any] = {
        "readings": readings_json(points, groups, by_group),
        "lost": [entry.as_dict() for entry in lost],
        "unfinished": [entry.as_dict() for entry in unfinished],
    }
    if models:  # what compares with one dense is per model
        for entry, (_, statistics, _) in zip(models, distinct, strict=True):
            entry["distinct_tokens"] = distinct_json(statistics)
        readings["models"] = models
    else:
        readings |= {"quantization": quantization_json(points, compared),
                     "distinct_tokens": distinct_json(distinct[0][1])}  # fmt: skip
    data = report_json(points, compared, sweep, found, readings)
    (run_dir / "report.json").write_text(json.dumps(data, indent=1, allow_nan=False))
    return report, top + plots + group_plots
