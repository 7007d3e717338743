"""LLM-KICK's Table 2 in the report: every quantization point (method × bits) against dense, with its
stored size; the cells reuse the paired comparisons of the main report."""

from __future__ import annotations

from typing import Any

from llmkick_models.workflow.paired_stats import NO_VERDICT, Comparison
from llmkick_models.workflow.report_format import PROBLEM_MARK, SYMBOLS, fmt, relative_cell
from llmkick_models.workflow.report_plots import series
from llmkick_models.workflow.run_results import PointResult, dense_point, report_columns
from llmkick_models.workflow.stored_size import point_size


def quantization_points(points: list[PointResult]) -> list[PointResult]:
    """The points that quantize without pruning: methods in the run's order, bits from most to fewest."""
    chosen = [p for p in points if p.point["bits"] is not None and p.point["sparsity"] is None
              and not p.point["pattern"]]  # fmt: skip
    order = {method: i for i, method in enumerate(dict.fromkeys(p.point["method"] for p in chosen))}
    return sorted(chosen, key=lambda p: (order[p.point["method"]], -p.point["bits"]))


def _cell(point: PointResult, task: str, metric: str, compared: dict) -> str:
    value = point.score(task, metric)
    if value is None:
        return "–"
    if point.issue(task, metric) is not None:
        return f"{fmt(value)} {PROBLEM_MARK}"
    result = compared.get((point.point["id"], task, metric))
    if not isinstance(result, Comparison):
        return fmt(value) if result is None else f"{fmt(value)} (no verdict)"
    return f"{fmt(value)} · {relative_cell(result)} {SYMBOLS[result.verdict]}".rstrip()


def quantization_section(points: list[PointResult], compared: dict) -> str:
    """The markdown section (empty when the run has no quantization point)."""
    quantized = quantization_points(points)
    if not quantized:
        return ""
    columns = report_columns(points)
    header = ["method", "bits", "stored size", "linears only"]
    header += [f"{task} ({metric.split(',')[0]})" for task, metric in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    dense = dense_point(points)
    for point in ([dense] if dense else []) + quantized:
        size = point_size(point)
        line = series(point)  # with any --grid values (e.g. "gptq nsamples=8")
        coords = ("dense", "16") if point is dense else (line, str(point.point["bits"]))
        row = [*coords, fmt(size.relative), fmt(size.linears_relative)]
        row += [_cell(point, task, metric, compared) for task, metric in columns]
        lines.append("| " + " | ".join(row) + " |")
    return (
        "## Quantization: method × bits against dense\n\n"
        + "\n".join(lines)
        + "\n\nEach cell: the score · its"
        " change from dense on the same documents [95% interval] and the verdict (✓ matching, ✗ not matching,"
        " ~ inconclusive; the reasons for any other are in the tables below). Stored size: relative to the"
        " dense model in 16 bits, whole model and decoder linears only (storage model below).\n"
    )


def quantization_json(points: list[PointResult], compared: dict) -> list[dict[str, Any]]:
    """report.json's ``quantization``: one entry per quantization point, its size and per-task verdicts."""
    out = []
    for point in quantization_points(points):
        size = point_size(point)
        tasks: dict[str, dict[str, Any]] = {}
        for task, metric in report_columns(points):
            result = compared.get((point.point["id"], task, metric))
            entry: dict[str, Any] = {"score": point.score(task, metric)}
            if isinstance(result, Comparison):
                entry |= {"relative": result.relative, "relative_ci": result.as_dict()["relative_ci"],
                          "verdict": result.verdict}  # fmt: skip
            else:
                entry |= {"verdict": NO_VERDICT, "reason": result or "no score"}
            tasks.setdefault(task, {})[metric.split(",")[0]] = entry
        out.append({"point": point.point["id"], "method": point.point["method"], "bits": point.point["bits"],
                    "stored_size": size.relative, "linears_stored_size": size.linears_relative,
                    "tasks": tasks})  # fmt: skip
    return out
