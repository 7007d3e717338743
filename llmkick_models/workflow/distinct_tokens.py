"""Distinct-token statistics of generated answers, each point against dense on the same documents.

LLM-KICK reads compressed models as generating fewer unique tokens; this measures it for every generation
task of a run (``output_type: generate_until``), on the answers the samples hold (:mod:`.answers`):

* tokenization: the evaluated model's tokenizer may not be available when the report is written, so words
  are counted — lower-cased runs of letters, digits and ``_`` (the regular expression ``\\w+``, Unicode);
  punctuation and whitespace are not tokens;
* per answer: ``tokens`` (words), ``unique_tokens`` (distinct words) and ``distinct_2`` (distinct word
  bigrams over bigrams; an answer of fewer than 2 words has none and is left out of that comparison,
  the count is shown); a multi-turn answer (MT-Bench) counts the mean over its turns;
* per point: the mean over documents, compared with dense's on the same documents by the report's paired
  machinery (:func:`paired_stats.compare_means`: bootstrap interval of the relative change).  No verdict:
  a change in vocabulary is a reading, not LLM-KICK's matching criterion.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from llmkick_models.workflow.answers import Answer, task_answers
from llmkick_models.workflow.paired_stats import Comparison, compare_means
from llmkick_models.workflow.report_format import fmt, relative_cell
from llmkick_models.workflow.run_results import PointResult, SamplesUnusable, dense_point, report_columns
from llmkick_models.workflow.sample_checks import leaf_tasks

TOKEN = re.compile(r"\w+")
TOKENIZATION = "lower-cased words: runs of letters, digits and _ (regular expression \\w+, Unicode)"
STATISTICS = ("tokens", "unique_tokens", "distinct_2")


def words(text: str) -> list[str]:
    """The tokens of ``text`` (see the module doc)."""
    return TOKEN.findall(text.lower())


def _one(text: str) -> dict[str, float | None]:
    tokens = words(text)
    bigrams = list(itertools.pairwise(tokens))
    return {"tokens": float(len(tokens)), "unique_tokens": float(len(set(tokens))),
            "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else None}  # fmt: skip


def answer_statistics(answer: Answer) -> dict[str, float | None]:
    """One document's statistics: of its answer, or the mean over the turns of a multi-turn answer."""
    per_turn = [_one(text) for text in answer.texts]
    out: dict[str, float | None] = {}
    for name in STATISTICS:
        values = [s[name] for s in per_turn if s[name] is not None]
        out[name] = sum(values) / len(values) if values else None  # type: ignore[arg-type]
    return out


def generation_tasks(point: PointResult) -> list[tuple[str, str]]:
    """``(task, filter)`` of the reported tasks whose subtasks all generate text (the headline's filter)."""
    out = {}
    for task, metric in report_columns([point]):
        configs = point.results.get("configs", {})
        leaves = leaf_tasks(point.results, task)
        if all((configs.get(leaf) or {}).get("output_type") == "generate_until" for leaf in leaves):
            out.setdefault(task, metric.partition(",")[2])
    return list(out.items())


def _compare(dense: dict[Any, dict], point: dict[Any, dict], name: str) -> dict[str, Any]:
    """Dense's and the point's mean of one statistic on the documents both have it for, and the comparison."""
    keys = [k for k in dense if dense[k][name] is not None and point[k][name] is not None]
    left_out = len(dense) - len(keys)
    if not keys:
        return {"documents": 0, "left_out": left_out, "reason": "no document has it on both sides"}
    result = compare_means([dense[k][name] for k in keys], [point[k][name] for k in keys])
    return {"documents": len(keys), "left_out": left_out, "comparison": result}


def _means(stats: dict[Any, dict[str, float | None]]) -> dict[str, float | None]:
    """Each statistic's mean over the documents that have it."""
    out = {}
    for name in STATISTICS:
        values = [s[name] for s in stats.values() if s[name] is not None]
        out[name] = sum(values) / len(values) if values else None  # type: ignore[arg-type]
    return out


def distinct_statistics(points: list[PointResult]) -> dict[str, dict[str, Any]]:
    """Per generation task of the run's dense point (none without one): ``{"dense": {statistic: mean},
    "points": {point id: {statistic: {"documents", "left_out", "comparison" | "reason"}} | {"reason"}}}``,
    or ``{"reason"}`` when dense's answers cannot be read."""
    dense = dense_point(points)
    out: dict[str, dict[str, Any]] = {}
    for task, filter_key in generation_tasks(dense) if dense is not None else []:
        try:
            dense_stats = {k: answer_statistics(a) for k, a in task_answers(dense, task, filter_key).items()}
        except SamplesUnusable as error:
            out[task] = {"reason": f"dense: {error}"}
            continue
        metric = _headline(points, task)[0]
        out[task] = {"dense": _means(dense_stats), "points": {
            point.point["id"]: _point_entry(dense_stats, point, task, filter_key)
            for point in points if point is not dense and point.score(task, metric) is not None
        }}  # fmt: skip
    return out


def _headline(points: list[PointResult], task: str) -> list[str]:
    return [metric for t, metric in report_columns(points) if t == task]


def _point_entry(dense_stats: dict, point: PointResult, task: str, filter_key: str) -> dict[str, Any]:
    try:
        stats = {k: answer_statistics(a) for k, a in task_answers(point, task, filter_key).items()}
    except SamplesUnusable as error:
        return {"reason": str(error)}
    if stats.keys() != dense_stats.keys():
        return {"reason": f"dense and {point.point['id']} answered different documents "
                          f"({len(dense_stats)} vs {len(stats)})"}  # fmt: skip
    return {name: _compare(dense_stats, stats, name) for name in STATISTICS}


def _cell(entry: dict[str, Any]) -> str:
    result = entry.get("comparison")
    if not isinstance(result, Comparison):
        return f"– ({entry['reason']})"
    left_out = f" ({entry['left_out']} left out)" if entry["left_out"] else ""
    return f"{fmt(result.point)} · {relative_cell(result)}{left_out}"


def distinct_section(parts: list[tuple[str, dict[str, dict[str, Any]], list[PointResult]]]) -> str:
    """report.md's section: per generation task, the headline score and the statistics per point; one
    table per model of a --models run (``parts``: each model's label, its statistics, its points; one
    part with label ``""`` for a one-model run)."""
    blocks = []
    for label, found, points in parts:
        for task, entries in found.items():
            title = f"### {label} · {task}" if label else f"### {task}"
            blocks.append(_distinct_table(title, entries, points, task))
    if not blocks:
        return ""
    intro = (
        "## Distinct tokens of generated answers\n\nPer answer, the mean over documents: words, distinct"
        " words and distinct-2 (distinct word bigrams over bigrams), each point against dense on the same"
        f" documents: the point's value · its change from dense [95% interval]. Tokens: {TOKENIZATION}."
        " Answers of fewer than 2 words have no distinct-2 and are left out of that comparison."
    )
    if len(parts) > 1:
        intro += " Each model's points against its own dense."
    return intro + "\n\n" + "\n\n".join(blocks) + "\n"


def _distinct_table(title: str, entries: dict[str, Any], points: list[PointResult], task: str) -> str:
    metric = _headline(points, task)[0]
    if "reason" in entries:
        return f"{title}\n\nNo statistics: {entries['reason']}"
    header = ["point", metric.split(",")[0], "tokens", "unique tokens", "distinct-2"]
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point in points:
        if point.point["method"] == "none":
            cells = [fmt(entries["dense"][name]) for name in STATISTICS]
        elif (entry := entries["points"].get(point.point["id"])) is None:
            continue
        else:
            cells = [f"– ({entry['reason']})", "", ""] if "reason" in entry else [
                _cell(entry[name]) for name in STATISTICS
            ]  # fmt: skip
        lines.append("| " + " | ".join([point.point["id"], fmt(point.score(task, metric)), *cells]) + " |")
    return "\n".join(lines)


def _no_verdict(value: Any) -> Any:
    """A comparison's fields but its verdict (see the module doc); anything else as it is."""
    if not isinstance(value, Comparison):
        return value
    return {key: field for key, field in value.as_dict().items() if key != "verdict"}


def distinct_json(found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """report.json's ``distinct_tokens``: the statistics, comparisons as in ``points[].comparisons``."""

    def entry_json(entry: dict[str, Any]) -> dict[str, Any]:
        if "reason" in entry:
            return entry
        return {name: {key: _no_verdict(value) for key, value in stat.items()}
                for name, stat in entry.items()}  # fmt: skip

    tasks = {
        task: entries if "reason" in entries else
        {"dense": entries["dense"], "points": {pid: entry_json(e) for pid, e in entries["points"].items()}}
        for task, entries in found.items()
    }  # fmt: skip
    return {"tokenization": TOKENIZATION, "tasks": tasks}
