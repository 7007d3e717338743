"""Sweep run directories as the sweep leaves them, fabricated for the report and resume tests.

Per point: ``results.json`` plus lm-eval's ``lm_eval/<model>/results_<date>.json`` and one
``samples_<task>_<date>.jsonl`` per task of that same run.  The scores are computed from the per-document
values the way lm-eval aggregates them — written out here, independently of the code under test — so an
untouched point is consistent and a test edits what it means to break.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmkick_models.workflow.sweep_plan import SweepPoint

DATE_ID = "2026-01-01T00-00-00.000001"
MODEL = "org__model"
#: Per metric, the aggregation lm-eval records in the task config (anything else: ``mean``).
AGGREGATIONS = {
    "word_perplexity": "weighted_perplexity",
    "token_perplexity": "weighted_perplexity",
    "byte_perplexity": "weighted_perplexity",
    "bits_per_byte": "bits_per_byte",
    "judge_unparsed": "count",
    "empty_answers": "count",
}


def judge_count_source() -> str:
    """lm-eval records a Python aggregation function by its source: llmkick's judge counter."""
    from llmkick_tasks.judge.protocols import count

    return inspect.getsource(count)


def lm_eval_aggregate(aggregation: str, values: Sequence[Any]) -> float:
    """lm-eval's aggregations, written out (``weighted_mean`` = sum of numerators / sum of weights)."""
    if aggregation == "mean":
        return sum(values) / len(values)
    if aggregation == "count":
        return float(sum(values))
    ratio = sum(v[0] for v in values) / sum(v[1] for v in values)
    if aggregation == "weighted_perplexity":
        return math.exp(-ratio)
    if aggregation == "bits_per_byte":
        return -ratio / math.log(2)
    raise ValueError(aggregation)


def write_sweep(run_dir: Path, points: Sequence[SweepPoint], tasks: str = "x") -> None:
    """``sweep.json`` naming ``points``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "sweep.json").write_text(json.dumps({"points": [p.as_dict() for p in points], "tasks": tasks}))


def point_results(
    tasks: dict[str, dict[str, list[Any]]],
    *,
    groups: dict[str, list[str]] | None = None,
    unweighted: Sequence[str] = (),
    filter_key: str = "none",
    recorded: dict[str, str] | None = None,
    sparsity: float = 0.0,
    date: float = 1764500000.25,
    compression: dict[str, Any] | None = None,
    parameters: int | None = None,
    judged: dict[str, str] | None = None,
) -> dict[str, Any]:
    """lm-eval's results of per-document values ``{task: {metric: [value or None (no such value)]}}``.

    ``groups``: ``{group: members}`` (members may be groups), aggregated over their leaf tasks weighted by
    size unless named in ``unweighted``; ``recorded``: the aggregation a metric's config records, when it
    is not the one above (``None`` records none, as a YAML without ``aggregation:`` does);
    ``compression``: the compression report (default: the overall sparsity only); ``parameters``: lm-eval's
    ``model_num_parameters``; ``judged``: ``{task: kind}`` of tasks an LLM judge scores (their config's
    ``llmkick_judged``).
    """
    groups = groups or {}
    recorded = recorded or {}
    results: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for task, metrics in tasks.items():
        entry: dict[str, Any] = {"alias": task}
        metric_list = []
        for metric, values in metrics.items():
            aggregation = AGGREGATIONS.get(metric, "mean")
            present = [v for v in values if v is not None]
            entry[f"{metric},{filter_key}"] = lm_eval_aggregate(aggregation, present)
            entry[f"{metric}_stderr,{filter_key}"] = "N/A"
            shown = recorded.get(metric, judge_count_source() if aggregation == "count" else aggregation)
            metric_list.append({"metric": metric} | ({"aggregation": shown} if shown is not None else {}))
        sizes[task] = max(len([v for v in values if v is not None]) for values in metrics.values())
        entry["sample_len"] = sizes[task]
        results[task] = entry
        configs[task] = {"task": task, "metric_list": metric_list}
        if task in (judged or {}):
            configs[task]["metadata"] = {"llmkick_judged": judged[task]}  # type: ignore[index]

    def leaves(name: str) -> list[str]:
        return [leaf for member in groups[name] for leaf in leaves(member)] if name in groups else [name]

    for group in groups:
        members = leaves(group)
        entry = {"alias": group}
        for key in results[members[0]]:
            if "," in key and "_stderr" not in key:
                weights = [1 if group in unweighted else sizes[m] for m in members]
                entry[key] = sum(results[m][key] * w for m, w in zip(members, weights, strict=True)) / sum(
                    weights
                )
        results[group] = entry
    higher = {
        task: {m: not ("perplexity" in m or "bits" in m or m in AGGREGATIONS) for m in metrics}
        for task, metrics in tasks.items()
    }
    return {
        "results": results,
        "group_subtasks": {**groups, **{task: [] for task in tasks}},
        "configs": configs,
        "higher_is_better": higher,
        "n-samples": {task: {"original": sizes[task], "effective": sizes[task]} for task in tasks},
        "config": {
            "llmkick_compression": compression or {"overall_sparsity": sparsity},
            **({"model_num_parameters": parameters} if parameters is not None else {}),
        },
        "date": date,
        "model_name_sanitized": MODEL,
    }


def write_point(
    run_dir: Path,
    point_id: str,
    tasks: dict[str, dict[str, list[Any]]],
    *,
    filter_key: str = "none",
    answers: dict[str, list[Any]] | None = None,
    **options: Any,
) -> Path:
    """A finished point as the sweep leaves it (see the module doc); returns its folder.

    ``answers``: per task, each document's answer as lm-eval logs it (``resps``, ``filtered_resps``; none
    by default; such a task is ``generate_until``); documents are ``{"question": "q<doc_id>"}`` with
    target ``t<doc_id>``."""
    results = point_results(tasks, filter_key=filter_key, **options)
    for task in answers or {}:  # a task with answers generates them
        results["configs"][task]["output_type"] = "generate_until"
    folder = run_dir / "points" / point_id
    raw = folder / "lm_eval" / MODEL
    raw.mkdir(parents=True)
    (raw / f"results_{DATE_ID}.json").write_text(json.dumps(results, indent=2))
    (folder / "results.json").write_text(json.dumps(results))
    for task, metrics in tasks.items():
        lines = []
        for doc_id in range(max(len(values) for values in metrics.values())):
            values = {m: v[doc_id] for m, v in metrics.items() if doc_id < len(v) and v[doc_id] is not None}
            answer = (answers or {}).get(task)
            logged = [answer[doc_id]] if answer is not None else []
            sample = {"doc_id": doc_id, "doc": {"question": f"q{doc_id}"}, "target": f"t{doc_id}",
                      "arguments": {}, "resps": [logged] if logged else [], "filtered_resps": logged,
                      "filter": filter_key, "metrics": list(values), **values}  # fmt: skip
            lines.append(json.dumps(sample))
        (raw / f"samples_{task}_{DATE_ID}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def samples_file(folder: Path, task: str) -> Path:
    """Where :func:`write_point` put ``task``'s samples."""
    return folder / "lm_eval" / MODEL / f"samples_{task}_{DATE_ID}.jsonl"


def edit_score(folder: Path, task: str, metric_key: str, value: Any) -> Path:
    """Hand-edit one score of a point's ``results.json`` (as a user might); returns the file."""
    results_file = folder / "results.json"
    results = json.loads(results_file.read_text())
    results["results"][task][metric_key] = value
    results_file.write_text(json.dumps(results))
    return results_file


def compression_report(spec: dict[str, Any], shape: tuple[int, int], zeros: int = 0) -> dict[str, Any]:
    """A compression report of one decoder linear of ``shape`` holding ``zeros`` zeros, under ``spec``."""
    rows, cols = shape
    layer = {"shape": [rows, cols], "zeros": zeros, "sparsity": zeros / (rows * cols)}
    return {"spec": spec, "overall_sparsity": zeros / (rows * cols), "layers": {"model.layers.0.mlp": layer}}
