"""report.md's main table: a row per point, its coordinates, stored size and headline scores + verdicts."""

from __future__ import annotations

from llmkick_models.workflow.paired_stats import MATCHING_TOLERANCE, Comparison
from llmkick_models.workflow.report_format import PROBLEM_MARK, SYMBOLS, fmt
from llmkick_models.workflow.run_results import PointResult, comparisons, dense_point, report_columns
from llmkick_models.workflow.stored_size import point_size


def markdown_table(points: list[PointResult], compared: dict | None = None) -> str:
    """Rows = compression points; columns = coordinates, measured sparsity, each task's headline metrics.

    Marks: the interval verdict; ⚠ where the score itself is listed under Problems.
    """
    compared = comparisons(points) if compared is None else compared
    dense = dense_point(points)
    columns = report_columns(points)
    header = ["point", "method", "sparsity", "pattern", "bits", "measured sparsity", "stored size"]
    header += [f"{task} ({metric.split(',')[0]})" for task, metric in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point in points:
        coords = point.point
        row = [coords["id"], coords["method"], fmt(coords["sparsity"]), coords["pattern"] or "–",
               fmt(coords["bits"]), fmt(point.measured_sparsity),
               fmt(point_size(point).relative)]  # fmt: skip
        for task, metric in columns:
            value = point.score(task, metric)
            cell = fmt(value)
            result = compared.get((coords["id"], task, metric))
            if value is not None and point.issue(task, metric) is not None:
                cell += f" {PROBLEM_MARK}"
            elif isinstance(result, Comparison):
                cell += f" {SYMBOLS[result.verdict]}".rstrip()
            row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    if dense is None:
        legend = (
            "\nNo dense point among these points: matching verdicts need one."  # a --models run: per model
        )
    else:
        legend = (
            f"\n✓ matching, ✗ not matching, ~ inconclusive: the 95% interval of the change from dense"
            f" lies within {MATCHING_TOLERANCE:.0%} of dense (LLM-KICK), beyond it, or straddles it; no mark:"
            " no verdict (dense scores 0, too few documents for an interval, or dense's score is listed under"
            " Problems)."
        )
    if any(PROBLEM_MARK in line for line in lines[2:]):
        legend += f" {PROBLEM_MARK}: this score is listed under Problems and gets no verdict."
    return "\n".join(lines) + "\n" + legend + "\n"
