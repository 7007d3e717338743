"""A sweep's results as the report reads them: the points, their headline metrics, and each point's paired
comparison with dense on the same documents (from the per-document samples lm-eval logged).  A score is
used only once its samples give it back (:mod:`llmkick_models.workflow.sample_checks`)."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkick_models.workflow import paired_stats
from llmkick_models.workflow.aggregations import AGGREGATIONS, aggregation_of, close, is_number
from llmkick_models.workflow.paired_stats import Comparison
from llmkick_models.workflow.sample_checks import (
    NOT_A_NUMBER,
    UNREADABLE,
    Finding,
    PointCheck,
    children,
    leaf_tasks,
    numeric_scores,
    rejudged_tasks,
)
from llmkick_tasks.errors import UserFileNotFoundError

PREFERRED_METRICS = (
    "contains",
    "exact_match",
    "acc",
    "strict_em",
    "em",
    "f1",
    "token_perplexity",
    "word_perplexity",
    "score",
)
#: Judged tasks headline every one of these they report (summarization's four dimensions; win rates).
JUDGED_HEADLINES = ("coherence", "consistency", "fluency", "relevance", "score", "win_rate")
#: Corpus-level metrics: per-document (log-likelihood, weight) pairs, aggregated as a ratio of sums.
RATIO_METRICS = ("token_perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "perplexity")


def reported_tasks(results: dict[str, Any]) -> list[str]:
    """Top-level tasks and groups that carry a score, in results order.

    A group without an aggregate score (``llmkick_exact_match``) is looked through to its members; the
    members of a scored group (MMLU's subjects) are not columns of their own.
    """
    entries = results.get("results", {})
    children_of = children(results)
    nested = {child for members in children_of.values() for child in members}
    roots = [name for name in [*entries, *children_of] if name not in nested]
    out: list[str] = []

    def visit(name: str) -> None:
        if name in out:
            return
        if numeric_scores(entries.get(name, {})):
            out.append(name)
        else:
            for child in children_of.get(name, []):
                visit(child)

    for root in dict.fromkeys(roots):
        visit(root)
    return out


def task_headlines(results: dict[str, Any], task: str) -> list[tuple[str, float]]:
    """The headline ``(metric key, value)`` pairs of one task: all judge scores, else the preferred one."""
    candidates = numeric_scores(results.get("results", {}).get(task, {}))
    if not candidates:
        return []
    judged = [key for key in candidates if key.split(",")[0] in JUDGED_HEADLINES]
    if (judged and any(key.split(",")[0] != "score" for key in judged)) or len(judged) > 1:
        order = {name: i for i, name in enumerate(JUDGED_HEADLINES)}
        return [(key, candidates[key]) for key in sorted(judged, key=lambda k: order[k.split(",")[0]])]
    ranked = sorted(
        candidates,
        key=lambda k: (
            PREFERRED_METRICS.index(k.split(",")[0])
            if k.split(",")[0] in PREFERRED_METRICS
            else len(PREFERRED_METRICS)
        ),
    )
    return [(ranked[0], candidates[ranked[0]])]


def headline_metrics(results: dict[str, Any]) -> dict[str, tuple[str, float]]:
    """Each reported task's (or group's) first headline metric: ``{task: (metric key, value)}``."""
    out = {}
    for task in reported_tasks(results):
        headlines = task_headlines(results, task)
        if headlines:
            out[task] = headlines[0]
    return out


def is_judged(results: dict[str, Any], task: str) -> bool:
    """Whether ``task`` is scored by llmkick's LLM judge (its config's ``llmkick_judged`` metadata)."""
    config = results.get("configs", {}).get(task, {})
    return isinstance(config, dict) and bool((config.get("metadata") or {}).get("llmkick_judged"))


def higher_is_better(results: dict[str, Any], task: str, metric_key: str) -> bool:
    """Whether a larger value of ``metric_key`` is better, from lm-eval's results (perplexity: no)."""
    metric = metric_key.split(",")[0]
    known = results.get("higher_is_better", {}).get(task, {})
    if metric in known and known[metric] is not None:
        return bool(known[metric])
    return "perplexity" not in metric and "bits_per_byte" not in metric


@dataclass
class PointResult:
    """One finished point of a run: its coordinates, lm-eval's results and the samples logged with them."""

    point: dict[str, Any]
    results: dict[str, Any]
    point_dir: Path
    load_error: str | None = None  # results.json could not be read: the point has no scores

    @property
    def measured_sparsity(self) -> float | None:
        """Overall sparsity measured on the weights (from the compression report), if recorded."""
        report = self.results.get("config", {}).get("llmkick_compression")
        return report.get("overall_sparsity") if report else None

    @functools.cached_property
    def check(self) -> PointCheck:
        """Every reported score recomputed from the samples (read once, on first use)."""
        return PointCheck(self.point_dir, self.results)

    def findings(self) -> list[Finding]:
        """Why some of this point's scores are not trusted or not checked (results.json itself unreadable
        included)."""
        if self.load_error is not None:
            return [Finding(UNREADABLE, "*", None, self.load_error)]
        return self.check.findings

    def samples(self, task: str) -> list[dict[str, Any]] | Finding:
        """``task``'s logged samples (``doc_id``, ``filter`` and the metric values), or why there are none."""
        return self.check.samples.rows(task)

    def score(self, task: str, metric_key: str) -> Any:
        """The reported value of ``metric_key`` of ``task`` (None when not reported)."""
        return self.results.get("results", {}).get(task, {}).get(metric_key)

    def issue(self, task: str, metric_key: str) -> Finding | None:
        """Why this point's score of ``metric_key`` of ``task`` gets no verdict, or None when it is sound."""
        finding = self.check.finding_for(task, metric_key)  # a disagreement first: it says the most
        value = self.score(task, metric_key)
        if finding is None and is_number(value) and not math.isfinite(value):
            return Finding(NOT_A_NUMBER, task, metric_key, f"score is not a number ({value})")
        return finding

    def trusted_score(self, task: str, metric_key: str) -> float | None:
        """The reported score when it is a number its samples give back, else None."""
        value = self.score(task, metric_key)
        return float(value) if is_number(value) and self.issue(task, metric_key) is None else None


def _load_point(point: dict[str, Any], point_dir: Path) -> PointResult:
    results_file = point_dir / "results.json"
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return PointResult(point, {}, point_dir, f"results unreadable: {results_file}: {error}")
    if not isinstance(results, dict):
        return PointResult(point, {}, point_dir, f"results unreadable: {results_file} is not a JSON object")
    return PointResult(point, results, point_dir)


def load_run(run_dir: Path) -> list[PointResult]:
    """Finished points of a run directory, in the sweep's order."""
    sweep_file = run_dir / "sweep.json"
    if not sweep_file.is_file():
        raise UserFileNotFoundError(
            f"{run_dir} is not a sweep run directory (no sweep.json); run `llmkick sweep` first"
        )
    planned = json.loads(sweep_file.read_text())["points"]
    loaded = []
    for point in planned:
        point_dir = run_dir / "points" / point["id"]
        if (point_dir / "results.json").is_file():
            loaded.append(_load_point(point, point_dir))
    if not loaded:
        raise UserFileNotFoundError(f"{run_dir} holds no finished point yet")
    check_rejudged_parent(run_dir, loaded)
    return loaded


def check_rejudged_parent(run_dir: Path, points: list[PointResult]) -> None:
    """Refuse a re-judged copy (``llmkick judge``'s ``rejudged/<label>/``) moved away from the sweep it
    re-judged: its samples stay in that sweep's points, so not one of them would be found (one missing file
    is a point's problem, listed in the report; all of them missing is the wrong folder)."""
    sources = [
        (point.point["id"], task, rejudged.source)
        for point in points
        for task, rejudged in rejudged_tasks(point.results, point.point_dir).items()
    ]
    if sources and not any(source.exists() for _, _, source in sources):
        point_id, task, source = sources[0]
        raise UserFileNotFoundError(
            f"{run_dir} is a re-judged copy of a sweep (llmkick judge) whose samples are in that sweep, "
            f"which is not where it was ({point_id} · {task} reads {source}); report on it inside the "
            "sweep's rejudged/ folder, or copy the whole sweep"
        )


def problems(points: list[PointResult]) -> list[tuple[str, Finding]]:
    """``(point id, finding)`` for every score that gets no verdict because of its data: results that
    disagree with their samples, samples missing or unreadable, scores that cannot be recomputed, and
    headline scores that are not numbers."""
    out = [(p.point["id"], finding) for p in points for finding in p.findings()]
    for point in points:
        for task, metric in report_columns(points):
            issue = point.issue(task, metric)
            if issue is not None and issue.kind == NOT_A_NUMBER:
                out.append((point.point["id"], issue))
    return out


# ---- per-document values -------------------------------------------------------------------------------


class SamplesUnusable(ValueError):
    """The samples cannot support a paired comparison (the reason is shown in the report)."""


def document_values(point: PointResult, task: str, metric_key: str) -> dict[tuple[str, Any], Any]:
    """``{(leaf task, doc_id): value}`` of one metric, pooled over a group's subtasks.

    The score itself was checked against the samples; pooling is checked here: a group that averages
    its subtasks unweighted is not the mean of its documents, so it cannot be paired per document.
    """
    metric, _, filter_key = metric_key.partition(",")
    values: dict[tuple[str, Any], Any] = {}
    aggregations = set()
    for leaf in leaf_tasks(point.results, task):
        rows = point.samples(leaf)
        if isinstance(rows, Finding):
            raise SamplesUnusable(rows.message)
        aggregations.add(aggregation_of(point.results, leaf, metric))
        for row in rows:
            if row["filter"] == filter_key and metric in row:
                values[(leaf, row["doc_id"])] = row[metric]
    if not values:
        raise SamplesUnusable(f"the samples of {task} hold no {metric!r} per document")
    ratio = metric in RATIO_METRICS and aggregations <= {"weighted_perplexity", "bits_per_byte"}
    if not (ratio or aggregations == {"mean"}) or len(aggregations) != 1:
        raise SamplesUnusable(
            f"{task} {metric} is aggregated with {', '.join(sorted(aggregations))}: only means and corpus "
            f"ratios are compared per document"
        )
    reported = point.results["results"][task][metric_key]
    try:
        pooled = AGGREGATIONS[aggregations.pop()](list(values.values()))
    except (ValueError, TypeError, ZeroDivisionError) as error:
        raise SamplesUnusable(f"{task} {metric} samples: {error}") from None
    if not close(reported, pooled):
        raise SamplesUnusable(
            f"{task} {metric} is not the mean (or corpus ratio) of its documents at point "
            f"{point.point['id']} (reported {reported:.6g}, pooled samples give {pooled:.6g}: a group "
            f"averaging its subtasks unweighted), so it cannot be paired per document"
        )
    return values


def compare_point(dense: PointResult, point: PointResult, task: str, metric_key: str) -> Comparison:
    """The paired comparison of ``point`` with ``dense`` on ``task``'s headline ``metric_key``."""
    dense_values = document_values(dense, task, metric_key)
    point_values = document_values(point, task, metric_key)
    if dense_values.keys() != point_values.keys():
        raise SamplesUnusable(
            f"{task}: dense and {point.point['id']} scored different documents "
            f"({len(dense_values)} vs {len(point_values)}); re-run both with the same --limit"
        )
    keys = sorted(dense_values, key=str)
    metric = metric_key.split(",")[0]
    higher = higher_is_better(dense.results, task, metric_key)
    a, b = [dense_values[k] for k in keys], [point_values[k] for k in keys]
    if metric in RATIO_METRICS:
        return paired_stats.compare_ratios(metric, a, b, higher)
    return paired_stats.compare_means(a, b, higher)


def report_columns(points: list[PointResult]) -> dict[tuple[str, str], None]:
    """The (task, metric key) columns of the report, in first-seen order across the points."""
    columns: dict[tuple[str, str], None] = {}
    for point in points:
        for task in reported_tasks(point.results):
            for metric, _ in task_headlines(point.results, task):
                columns[(task, metric)] = None
    return columns


def dense_point(points: list[PointResult], of: PointResult | None = None) -> PointResult | None:
    """The dense (``method=none``) point of the run, if it has one; in a --models run, the dense of the
    model of point ``of`` (every comparison pairs a point with its own model's dense only)."""
    same = (lambda p: p.point.get("model") == of.point.get("model")) if of is not None else (lambda p: True)
    return next((p for p in points if p.point["method"] == "none" and same(p)), None)


def comparisons(
    points: list[PointResult], columns: Iterable[tuple[str, str]] | None = None
) -> dict[tuple[str, str, str], Comparison | str]:
    """``{(point id, task, metric key): Comparison or why there is none}`` for every non-dense point, on
    the ``(task, metric key)`` columns (default: the report's headline columns).

    A score that is not a number, or that its samples do not give back (or cannot be checked against
    them), on either side gets no verdict, with the reason.
    """
    out: dict[tuple[str, str, str], Comparison | str] = {}
    for point in points:
        dense = dense_point(points, point)
        if dense is None or point is dense:
            continue
        for task, metric in list(report_columns(points) if columns is None else columns):
            key = (point.point["id"], task, metric)
            if point.score(task, metric) is None:
                continue
            if dense.score(task, metric) is None:
                out[key] = "dense has no such score"
                continue
            issue, dense_issue = point.issue(task, metric), dense.issue(task, metric)
            if issue is not None or dense_issue is not None:
                out[key] = issue.message if issue is not None else f"dense: {dense_issue.message}"
                continue
            try:
                out[key] = compare_point(dense, point, task, metric)
            except SamplesUnusable as error:
                out[key] = str(error)
    return out
