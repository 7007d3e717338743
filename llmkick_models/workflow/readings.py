"""The paper's readings of the judged tasks: a headline score broken down by the group each document belongs
to — summarization per story-length bin × criterion (coherence, consistency, fluency, relevance), MT-Bench
per turn and per category, Vicuna-80 per category — every point against dense on the same documents.

The judged tasks report these as metrics of their own, ``<headline>_<group>`` (``coherence_small``,
``score_turn1``, ``score_writing``), each the mean over the documents of that group; they are checked against
the samples and compared per document like any headline (:func:`run_results.comparisons`), so a group's
interval is paired on the documents of that group.  The ``_delta`` metrics (score minus the reference's) are
not groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmkick_models.workflow.deciding_size import comparison_json, deciding_cell
from llmkick_models.workflow.paired_stats import INCONCLUSIVE, Comparison
from llmkick_models.workflow.report_format import PROBLEM_MARK, SYMBOLS, fmt, relative_cell
from llmkick_models.workflow.run_results import (
    PointResult,
    comparisons,
    dense_point,
    is_judged,
    report_columns,
)
from llmkick_models.workflow.sample_checks import numeric_scores

NOT_GROUPS = ("delta",)


@dataclass(frozen=True)
class Breakdown:
    """One task's headline ``criteria`` by ``groups``: ``metrics[(criterion, group)]`` is the metric key."""

    task: str
    criteria: list[str]
    groups: list[str]
    metrics: dict[tuple[str, str], str]


def breakdowns(points: list[PointResult]) -> list[Breakdown]:
    """Every reported judged task with per-group metrics of its headlines, groups in the results' order."""
    dense = dense_point(points) or points[0]
    headlines: dict[str, list[str]] = {}
    for task, metric in report_columns(points):
        if is_judged(dense.results, task):  # other tasks' metric names are not groups (acc_norm)
            headlines.setdefault(task, []).append(metric)
    out = []
    for task, metrics in headlines.items():
        scores = numeric_scores(dense.results.get("results", {}).get(task, {}))
        found: dict[tuple[str, str], str] = {}
        for headline in metrics:
            name, _, filter_key = headline.partition(",")
            for key in scores:
                metric, _, key_filter = key.partition(",")
                group = metric[len(name) + 1 :]
                if key_filter == filter_key and metric.startswith(f"{name}_") and group not in NOT_GROUPS:
                    found[(name, group)] = key
        if found:
            criteria = list(dict.fromkeys(criterion for criterion, _ in found))
            groups = list(dict.fromkeys(group for _, group in found))
            out.append(Breakdown(task, criteria, groups, found))
    return out


def breakdown_comparisons(points: list[PointResult], found: list[Breakdown]) -> dict:
    """The paired comparisons of every per-group metric (keyed as :func:`run_results.comparisons`)."""
    return comparisons(points, [(b.task, key) for b in found for key in b.metrics.values()])


def _cell(point: PointResult, task: str, key: str | None, compared: dict) -> str:
    value = None if key is None else point.score(task, key)
    if value is None:
        return "–"
    if point.issue(task, key) is not None:  # type: ignore[arg-type]
        return f"{fmt(value)} {PROBLEM_MARK}"
    result = compared.get((point.point["id"], task, key))
    if result is None:  # dense
        return fmt(value)
    if not isinstance(result, Comparison):
        return f"{fmt(value)} (no verdict)"
    decide = f" ({deciding_cell(result)})" if result.verdict == INCONCLUSIVE else ""
    return f"{fmt(value)} · {relative_cell(result)} {SYMBOLS[result.verdict]}".rstrip() + decide


def readings_section(points: list[PointResult], found: list[Breakdown], compared: dict) -> str:
    """report.md's section: per task and criterion, a table of points × groups (empty without any)."""
    blocks = []
    for breakdown in found:
        for criterion in breakdown.criteria:
            header = ["point", *breakdown.groups]
            lines = [f"### {breakdown.task} — {criterion} by group", "",
                     "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # fmt: skip
            for point in points:
                cells = [_cell(point, breakdown.task, breakdown.metrics.get((criterion, g)), compared)
                         for g in breakdown.groups]  # fmt: skip
                lines.append("| " + " | ".join([point.point["id"], *cells]) + " |")
            blocks.append("\n".join(lines))
    if not blocks:
        return ""
    intro = (
        "## The paper's readings: scores by group\n\nEach judged score by the group of its documents"
        " (summarization: story-length bin; MT-Bench: turn and category; Vicuna-80: category). Each cell:"
        " the score · its change from dense on the same documents of that group [95% interval] and the"
        " verdict (✓ matching, ✗ not matching, ~ inconclusive, with the documents of that group that would"
        " decide it). A group holds fewer documents than the task: its interval is wider."
    )
    return intro + "\n\n" + "\n\n".join(blocks) + "\n"


def readings_json(points: list[PointResult], found: list[Breakdown], compared: dict) -> list[dict[str, Any]]:
    """report.json's ``readings``: per task, criterion and group, every point's score and comparison."""
    out = []
    for breakdown in found:
        for (criterion, group), key in breakdown.metrics.items():
            entry: dict[str, Any] = {
                "task": breakdown.task, "criterion": criterion, "group": group, "metric": key.split(",")[0],
                "scores": {}, "comparisons": {},
            }  # fmt: skip
            for point in points:
                entry["scores"][point.point["id"]] = point.score(breakdown.task, key)
                result = compared.get((point.point["id"], breakdown.task, key))
                if result is not None:
                    entry["comparisons"][point.point["id"]] = comparison_json(result)
            out.append(entry)
    return out
