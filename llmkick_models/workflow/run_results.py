"""A sweep's results as the report reads them: the points, their headline metrics, and each point's paired
comparison with dense on the same documents (from the per-document samples lm-eval logged)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkick_models.workflow import paired_stats
from llmkick_models.workflow.paired_stats import MATCHING_TOLERANCE, Comparison

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


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric metric values of one results entry (strings, stderr placeholders and aliases dropped)."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if "," in key
        and "_stderr" not in key
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    }


def _children(results: dict[str, Any]) -> dict[str, list[str]]:
    return {group: list(subtasks) for group, subtasks in results.get("group_subtasks", {}).items()}


def reported_tasks(results: dict[str, Any]) -> list[str]:
    """Top-level tasks and groups that carry a score, in results order.

    A group without an aggregate score (``llmkick_exact_match``) is looked through to its members; the
    members of a scored group (MMLU's subjects) are not columns of their own.
    """
    entries = results.get("results", {})
    children = _children(results)
    nested = {child for members in children.values() for child in members}
    roots = [name for name in [*entries, *children] if name not in nested]
    out: list[str] = []

    def visit(name: str) -> None:
        if name in out:
            return
        if numeric_metrics(entries.get(name, {})):
            out.append(name)
        else:
            for child in children.get(name, []):
                visit(child)

    for root in dict.fromkeys(roots):
        visit(root)
    return out


def task_headlines(results: dict[str, Any], task: str) -> list[tuple[str, float]]:
    """The headline ``(metric key, value)`` pairs of one task: all judge scores, else the preferred one."""
    candidates = numeric_metrics(results.get("results", {}).get(task, {}))
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


def higher_is_better(results: dict[str, Any], task: str, metric_key: str) -> bool:
    """Whether a larger value of ``metric_key`` is better, from lm-eval's results (perplexity: no)."""
    metric = metric_key.split(",")[0]
    known = results.get("higher_is_better", {}).get(task, {})
    if metric in known and known[metric] is not None:
        return bool(known[metric])
    return "perplexity" not in metric and "bits_per_byte" not in metric


@dataclass
class PointResult:
    """One finished point of a run: its coordinates, lm-eval's results and its per-document samples."""

    point: dict[str, Any]
    results: dict[str, Any]
    point_dir: Path | None = None
    _samples: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict, repr=False)

    @property
    def measured_sparsity(self) -> float | None:
        """Overall sparsity measured on the weights (from the compression report), if recorded."""
        report = self.results.get("config", {}).get("llmkick_compression")
        return report.get("overall_sparsity") if report else None

    def _samples_folder(self) -> tuple[Path, str] | None:
        """The lm-eval output folder and date id of the run whose results this point kept."""
        if self.point_dir is None:
            return None
        for results_file in sorted(self.point_dir.rglob("results_*.json"), reverse=True):
            try:
                raw = json.loads(results_file.read_text())
            except (OSError, ValueError):
                continue
            # Only samples of the very run whose scores we report: the same file, or (if the sweep added
            # fields of its own) the same lm-eval start time and the same scores.
            same_run = raw == self.results or (
                raw.get("date") is not None
                and raw.get("date") == self.results.get("date")
                and raw.get("results") == self.results.get("results")
            )
            if same_run:
                return results_file.parent, results_file.stem[len("results_") :]
        return None

    def samples(self, task: str) -> list[dict[str, Any]] | None:
        """lm-eval's logged samples of ``task`` (``None`` when the run kept none)."""
        if task not in self._samples:
            found = self._samples_folder()
            path = found[0] / f"samples_{task}_{found[1]}.jsonl" if found else None
            if path is None or not path.is_file():
                self._samples[task] = None
            else:
                with path.open(encoding="utf-8") as handle:
                    self._samples[task] = [json.loads(line) for line in handle if line.strip()]
        return self._samples[task]


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
        point_dir = run_dir / "points" / point["id"]
        results_file = point_dir / "results.json"
        if results_file.is_file():
            loaded.append(PointResult(point, json.loads(results_file.read_text()), point_dir))
    if not loaded:
        raise FileNotFoundError(f"{run_dir} holds no finished point yet")
    return loaded


def matches(value: float, dense: float, higher_is_better: bool) -> bool | None:
    """LLM-KICK's "matching" on point estimates alone: within 5% of the dense score, in the good direction.

    None when the dense model scores 0 on a higher-is-better metric: every point would "match" a model
    that knows nothing, which says nothing.
    """
    if higher_is_better and dense <= 0:
        return None
    if higher_is_better:
        return value >= (1 - MATCHING_TOLERANCE) * dense
    return value <= (1 + MATCHING_TOLERANCE) * dense


# ---- per-document values -------------------------------------------------------------------------------


class SamplesUnusable(ValueError):
    """The samples cannot support a paired comparison (the reason is shown in the report)."""


def _leaf_tasks(results: dict[str, Any], task: str) -> list[str]:
    children = _children(results)
    if not children.get(task):  # lm-eval lists plain tasks as groups of nothing
        return [task]
    return [leaf for child in children[task] for leaf in _leaf_tasks(results, child)]


def _document_values(point: PointResult, task: str, metric_key: str) -> dict[tuple[str, Any], Any]:
    """``{(leaf task, doc_id): value}`` of one metric, checked to reproduce the reported score."""
    metric, _, filter_key = metric_key.partition(",")
    values: dict[tuple[str, Any], Any] = {}
    for leaf in _leaf_tasks(point.results, task):
        samples = point.samples(leaf)
        if samples is None:
            raise SamplesUnusable(f"no per-document samples of {leaf} for point {point.point['id']}")
        for sample in samples:
            if sample.get("filter", filter_key) != filter_key or metric not in sample:
                continue
            values[(leaf, sample["doc_id"])] = sample[metric]
    if not values:
        raise SamplesUnusable(f"the samples of {task} hold no {metric!r} per document")
    reported = point.results["results"][task][metric_key]
    recomputed = _aggregate(metric, list(values.values()))
    if not math.isclose(recomputed, reported, rel_tol=1e-6, abs_tol=1e-9):
        raise SamplesUnusable(
            f"{task} {metric} is not the mean (or corpus ratio) of its samples at point {point.point['id']} "
            f"(reported {reported:.6g}, samples give {recomputed:.6g}), so it cannot be paired per document"
        )
    return values


def _aggregate(metric: str, values: list[Any]) -> float:
    if metric in RATIO_METRICS:
        if not all(isinstance(v, (list, tuple)) and len(v) == 2 for v in values):
            raise SamplesUnusable(f"{metric} samples are not (log-likelihood, weight) pairs")
        return float(paired_stats.ratio_aggregate(metric, [v[0] for v in values], [v[1] for v in values]))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise SamplesUnusable(f"{metric} samples are not numbers")
    return sum(values) / len(values)


def compare_point(dense: PointResult, point: PointResult, task: str, metric_key: str) -> Comparison:
    """The paired comparison of ``point`` with ``dense`` on ``task``'s headline ``metric_key``."""
    dense_values = _document_values(dense, task, metric_key)
    point_values = _document_values(point, task, metric_key)
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


def dense_point(points: list[PointResult]) -> PointResult | None:
    """The dense (``method=none``) point of the run, if it has one."""
    return next((p for p in points if p.point["method"] == "none"), None)


def comparisons(points: list[PointResult]) -> dict[tuple[str, str, str], Comparison | str]:
    """``{(point id, task, metric key): Comparison or why there is none}`` for every non-dense point."""
    dense = dense_point(points)
    out: dict[tuple[str, str, str], Comparison | str] = {}
    if dense is None:
        return out
    for point in points:
        if point is dense:
            continue
        for task, metric in report_columns(points):
            if metric not in point.results.get("results", {}).get(task, {}):
                continue
            if metric not in dense.results.get("results", {}).get(task, {}):
                out[(point.point["id"], task, metric)] = "dense has no such score"
                continue
            try:
                out[(point.point["id"], task, metric)] = compare_point(dense, point, task, metric)
            except SamplesUnusable as error:
                out[(point.point["id"], task, metric)] = str(error)
    return out
