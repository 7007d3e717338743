"""What ``llmkick judge`` writes: the re-judged run as lm-eval would have logged it with the new judge.

Per re-judged samples file, beside it:

* ``rejudged_samples_<task>_<label>_<date>.jsonl``: each original sample with the new judged record as its
  ``filtered_resps`` and the document's metric values from the task's own ``process_results``
  (``protocol.metrics``), listed under ``metrics`` - the line lm-eval writes;
* ``rejudged_<task>_<label>_<date>.json``: lm-eval's results of those values, aggregated with the
  aggregation the task's ``metric_list`` names (lm-eval's ``mean`` and its stderr, llmkick's counter), in the
  same order, so :mod:`llmkick_models.workflow.sample_checks` recomputes every score from the samples file.

For a sweep run directory, ``<run>/rejudged/<label>/`` gathers the points with the re-judged tasks in place.
Paths recorded in the task metadata are relative to the folder of the file recording them
(:mod:`llmkick_tasks.samples_file`).
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmkick_tasks.judge.protocols import JudgeProtocol, describe_judge
from llmkick_tasks.judge.task import FILTER_NAME
from llmkick_tasks.samples_file import (
    REJUDGED_FROM,
    REJUDGED_SAMPLES,
    recorded_path,
    relative_path,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from llmkick_tasks.judge.config import JudgeSettings


@dataclass
class RejudgePlan:
    """One samples file, checked and ready to judge: nothing of it needs the judge any more."""

    task: str
    samples: Path
    metadata: dict[str, Any]  # the original run's task metadata under the given one
    settings: JudgeSettings
    protocol: JudgeProtocol
    rows: list[dict[str, Any]]
    answers: list[Any]
    docs: list[dict[str, Any]]
    original: dict[str, Any]  # the original run's results file ({} without one)


DATE_PATTERN = r"\d{4}-\d{2}-\d{2}T[0-9.\-]+"
SAMPLES_NAME = re.compile(rf"^samples_(?P<task>.+)_(?P<date>{DATE_PATTERN})\.jsonl$")
LM_EVAL_BOOTSTRAP_ITERS = 100000  # lm_eval's default; only its sign matters for means and counters
#: The keys of a re-judged results file that replace the original run's in a sweep's re-judged copy.
REPLACED_KEYS = ("results", "configs", "versions", "n-samples", "higher_is_better")


def outputs(plan: RejudgePlan, label: str) -> tuple[Path, Path]:
    """The results and samples files of a plan under ``label``: named by the samples file's own date."""
    match = SAMPLES_NAME.match(plan.samples.name)
    stem = f"{plan.task}_{label}_{match['date'] if match else plan.samples.stem}"
    return (
        plan.samples.with_name(f"rejudged_{stem}.json"),
        plan.samples.with_name(f"rejudged_samples_{stem}.jsonl"),
    )


def _aggregation(spec_config: Mapping[str, Any]) -> Any:
    """The function lm-eval aggregates a ``metric_list`` entry with (a name is looked up as lm-eval does)."""
    from lm_eval.api.registry import get_aggregation

    recorded = spec_config["aggregation"]
    return get_aggregation(recorded) if isinstance(recorded, str) else recorded


def aggregate(
    protocol: JudgeProtocol,
    per_document: Sequence[Mapping[str, Any]],
    bootstrap_iters: int = LM_EVAL_BOOTSTRAP_ITERS,
) -> tuple[dict[str, Any], int]:
    """lm-eval's task aggregation of per-document metric values: ``({"<metric>,judge": value,
    "<metric>_stderr,judge": stderr or "N/A"}, documents)``, each metric over the documents that have it,
    in document order; ``documents`` is the most values any metric has (lm-eval's ``sample_len``).
    """
    from lm_eval.api.metrics import mean, stderr_for_metric

    functions = {spec.name: _aggregation(spec.config()) for spec in protocol.metric_specs()}
    values: dict[str, list[Any]] = {}
    for document in per_document:
        for name, value in document.items():
            values.setdefault(name, []).append(value)
    out: dict[str, Any] = {}
    for name, items in values.items():
        function = functions.get(name, mean)  # lm-eval's fallback for a metric without an aggregation
        out[f"{name},{FILTER_NAME}"] = function(items)
        stderr = stderr_for_metric(function, bootstrap_iters) if bootstrap_iters > 0 else None
        out[f"{name}_stderr,{FILTER_NAME}"] = stderr(items) if stderr and len(items) > 1 else "N/A"
    return out, max((len(items) for items in values.values()), default=0)


def recorded_metric_list(protocol: JudgeProtocol) -> list[dict[str, Any]]:
    """The task's ``metric_list`` as lm-eval records it in its results (a function by its source)."""
    return [
        {key: inspect.getsource(value) if callable(value) else value for key, value in spec.config().items()}
        for spec in protocol.metric_specs()
    ]


def rejudged_sample(row: Mapping[str, Any], record: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` as lm-eval would have logged it with ``record`` judged: the record as JSON text (lm-eval
    logs a response by its ``str()``, which is JSON for a judged record), the document's metric values, and
    their names under ``metrics``.
    """
    old = set(row.get("metrics") or ())  # the original judge's values
    kept = {key: value for key, value in row.items() if key not in old}
    text = json.dumps(record, ensure_ascii=False)
    return {**kept, "filtered_resps": [text], "metrics": list(values), **values}


def _of_task(original: Mapping[str, Any], key: str, task: str) -> Any:
    """``original[key][task]`` of the original run's results (None where it has none)."""
    entries = original.get(key)
    return entries.get(task) if isinstance(entries, dict) else None


def _bootstrap_iters(original: Mapping[str, Any]) -> int:
    config = original.get("config")
    iters = config.get("bootstrap_iters") if isinstance(config, dict) else None
    return iters if isinstance(iters, int) and not isinstance(iters, bool) else LM_EVAL_BOOTSTRAP_ITERS


def write_results(
    plan: RejudgePlan, records: Sequence[Any], label: str, date: str
) -> tuple[Path, dict[str, Any]]:
    """Write a plan's re-judged samples and results beside its samples; returns the results file and its
    content.
    """
    task, samples, rows = plan.task, plan.samples, plan.rows
    out, samples_out = outputs(plan, label)
    per_document = [
        plan.protocol.metrics(row["doc"], record) for row, record in zip(rows, records, strict=True)
    ]
    metrics, documents = aggregate(plan.protocol, per_document, _bootstrap_iters(plan.original))
    config = _of_task(plan.original, "configs", task)
    config = config if isinstance(config, dict) else {}
    counted = _of_task(plan.original, "n-samples", task)
    original_count = counted.get("original") if isinstance(counted, dict) else None
    here = out.parent
    results = {
        "results": {
            task: {"name": task, "alias": config.get("task_alias", task), "sample_len": documents, **metrics}
        },
        "configs": {
            task: {
                **config,
                "task": task,
                "metric_list": recorded_metric_list(plan.protocol),
                "metadata": {
                    **plan.metadata,
                    "judge": describe_judge(plan.settings, plan.protocol),
                    REJUDGED_FROM: relative_path(samples, here),
                    REJUDGED_SAMPLES: relative_path(samples_out, here),
                },
            }
        },
        "versions": {task: _of_task(plan.original, "versions", task)},
        "higher_is_better": {
            task: {spec.name: spec.higher_is_better for spec in plan.protocol.metric_specs()}
        },
        "n-samples": {
            task: {
                "original": original_count if isinstance(original_count, int) else len(rows),
                "effective": documents,
            }
        },
        "config": plan.original.get("config", {}),
        "llmkick_rejudge": {"samples": relative_path(samples, here), "label": label, "date": date},
    }
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    with samples_out.open("w", encoding="utf-8") as f:
        for row, record, values in zip(rows, records, per_document, strict=True):
            f.write(json.dumps(rejudged_sample(row, record, values), ensure_ascii=False, default=str) + "\n")
    return out, results


def _moved(entry: Mapping[str, Any], source: Path, target: Path) -> dict[str, Any]:
    """A re-judged ``configs`` entry recorded in ``source``, its paths made relative to ``target``."""
    metadata = dict(entry.get("metadata") or {})
    for key in (REJUDGED_FROM, REJUDGED_SAMPLES):
        if isinstance(metadata.get(key), str):
            metadata[key] = relative_path(recorded_path(metadata[key], source), target)
    return {**entry, "metadata": metadata}


def gather_sweep(run_dir: Path, label: str, written: Sequence[tuple[Path, dict[str, Any]]]) -> Path:
    """``<run>/rejudged/<label>/``: the run's points with the re-judged tasks' results in place."""
    target = run_dir / "rejudged" / label
    (target / "points").mkdir(parents=True, exist_ok=True)
    (target / "sweep.json").write_text((run_dir / "sweep.json").read_text())
    for point_results in sorted((run_dir / "points").glob("*/results.json")):
        point = point_results.parent
        copy = target / "points" / point.name
        results = json.loads(point_results.read_text())
        for file, rejudged in written:
            if point not in file.parents:
                continue
            for key in REPLACED_KEYS:
                results.setdefault(key, {}).update(rejudged.get(key, {}))
            for task, entry in rejudged["configs"].items():
                results["configs"][task] = _moved(entry, file.parent, copy)
        copy.mkdir(exist_ok=True)
        (copy / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"llmkick judge: re-judged sweep in {target}; tabulate it with `llmkick report {target}`")
    return target
