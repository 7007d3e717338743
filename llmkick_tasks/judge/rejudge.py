"""``llmkick judge``: judge answers that lm-eval already generated, again, without loading a model.

Generation once, judging many times (as FastChat's ``gen_judgment.py``): a judged task run with
``--log_samples`` leaves ``samples_<task>_<date>.jsonl`` beside its ``results_<date>.json``.  Each sample
holds the document and the model's answer (for MT-Bench both turns); the judged record also holds the
reference answer the judge compared against, which is reused so that only the judge changes.  This module
re-judges those answers with any judge settings / protocol and writes lm-eval-shaped results next to them:

* ``PATH`` a samples file, an lm-eval output folder (searched recursively), or a sweep run directory;
* per samples file, ``rejudged_<task>_<label>_<date>.json`` beside it (``results`` / ``configs`` as lm-eval
  writes them, the original run's ``config`` and ``versions`` kept);
* for a sweep run directory, also ``<run>/rejudged/<label>/``: a copy of the run whose points' results hold
  the re-judged tasks in place of the originals, so ``llmkick report <run>/rejudged/<label>`` tabulates them.

With the same judge (and its cache) the metrics equal the original run's exactly; with another judge a
second result is written, nothing is generated.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from llmkick_tasks.judge.config import JudgeSettings
from llmkick_tasks.judge.protocol_choice import make_protocol
from llmkick_tasks.judge.protocols import JudgeProtocol, describe_judge
from llmkick_tasks.judge.task import FILTER_NAME, JudgeFilter

log = logging.getLogger(__name__)

SAMPLES_NAME = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[0-9.\-]+)\.jsonl$")
# The judged tasks llmkick ships, by protocol kind (a results file next to the samples says it too).
KNOWN_TASKS = {
    "llmkick_summarization": "summarization",
    "llmkick_instruction_vicuna80": "instruction",
    "llmkick_mtbench": "mtbench",
}
# Task metadata of the original run that describes its judge or prompts, not the data: not carried over.
RUN_ONLY_KEYS = ("judge", "prompt_format")


class RejudgeError(ValueError):
    """Nothing to re-judge at the given path, or a samples file that cannot be re-judged."""


def find_samples(path: Path, tasks: Sequence[str] | None = None) -> list[tuple[str, Path]]:
    """``(task, samples file)`` of every judged task under ``path`` (a file or a folder), oldest first."""
    path = Path(path).expanduser()
    if not path.exists():
        raise RejudgeError(f"llmkick judge: {path} does not exist")
    files = [path] if path.is_file() else sorted(path.rglob("samples_*.jsonl"))
    found = []
    for file in files:
        match = SAMPLES_NAME.match(file.name)
        if match is None:
            if path.is_file():
                raise RejudgeError(
                    f"llmkick judge: {file} is not an lm-eval samples file (samples_<task>_<date>.jsonl)"
                )
            continue
        task = match["task"]
        if (tasks and task not in tasks) or (not tasks and _kind(task, file) is None):
            continue
        found.append((task, file))
    if not found:
        raise RejudgeError(
            f"llmkick judge: no samples of a judged task under {path}; run the judged tasks with "
            f"--log_samples first (tasks: {', '.join(KNOWN_TASKS)})"
        )
    return found


def _results_for(samples: Path) -> dict[str, Any]:
    """The lm-eval results file written with ``samples`` (same date), else ``{}``."""
    match = SAMPLES_NAME.match(samples.name)
    if match is not None:
        candidate = samples.with_name(f"results_{match['date']}.json")
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    return {}


def _kind(task: str, samples: Path) -> str | None:
    metadata = _results_for(samples).get("configs", {}).get(task, {}).get("metadata") or {}
    kind = metadata.get("llmkick_judged")
    return (
        kind
        if isinstance(kind, str) and kind in ("summarization", "instruction", "mtbench")
        else KNOWN_TASKS.get(task)
    )


def read_samples(samples: Path) -> list[dict[str, Any]]:
    """The samples of a file, in document order."""
    rows = []
    for number, line in enumerate(samples.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise RejudgeError(f"{samples} line {number} is not JSON ({error.msg})") from None
        if not isinstance(row, dict) or "doc" not in row or "resps" not in row:
            raise RejudgeError(f"{samples} line {number} is not an lm-eval sample (needs doc and resps)")
        if row.get("filter", FILTER_NAME) == FILTER_NAME:
            rows.append(row)
    return sorted(rows, key=lambda row: row.get("doc_id", 0))


def _as_record(value: Any, keys: Sequence[str]) -> Any:
    """``value`` as the dict lm-eval stringified (our records' ``str()`` is JSON), if it has ``keys``."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(decoded, Mapping) and all(key in decoded for key in keys):
            return decoded
    return value


def _answer_and_reference(row: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The model's answer and the document, with the reference the original judge saw (if any)."""
    doc = dict(row["doc"])
    filtered = _as_record((row.get("filtered_resps") or [None])[0], ("response", "judgments"))
    if isinstance(filtered, Mapping) and "response" in filtered and "judgments" in filtered:
        if not doc.get("reference") and filtered.get("reference"):
            doc["reference"], doc["reference_source"] = (
                filtered["reference"],
                filtered.get("reference_source"),
            )
        return _as_record(filtered["response"], ("turns",)), doc
    resps = row["resps"]
    answer = resps[0][0] if isinstance(resps, list) and resps and isinstance(resps[0], list) else resps
    return _as_record(answer, ("turns",)), doc  # a --predict_only run: the raw answer


def aggregate(
    protocol: JudgeProtocol, docs: Sequence[Mapping[str, Any]], records: Sequence[Any]
) -> dict[str, Any]:
    """lm-eval's aggregation of the per-document metrics: means (with their stderr) and counts."""
    per_metric: dict[str, list[float]] = {}
    for doc, record in zip(docs, records, strict=True):
        for name, value in protocol.metrics(doc, record).items():
            per_metric.setdefault(name, []).append(value)
    out: dict[str, Any] = {}
    for spec in protocol.metric_specs():
        values = per_metric.get(spec.name)
        if not values:
            continue
        key = f"{spec.name},{FILTER_NAME}"
        if spec.aggregation == "count":
            out[key], out[f"{spec.name}_stderr,{FILTER_NAME}"] = float(sum(values)), "N/A"
            continue
        mean = sum(values) / len(values)  # as lm-eval's `mean`
        out[key] = mean
        if len(values) > 1:
            variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
            out[f"{spec.name}_stderr,{FILTER_NAME}"] = math.sqrt(variance) / math.sqrt(len(values))
        else:
            out[f"{spec.name}_stderr,{FILTER_NAME}"] = "N/A"
    return out


def _prompt_for(task: str, metadata: Mapping[str, Any]) -> Any:
    """``doc_to_text`` of ``task`` (built on demand: only needed to generate missing reference answers)."""
    built: dict[str, Any] = {}

    def prompt_for(doc: Mapping[str, Any]) -> str:
        if "task" not in built:
            from lm_eval.tasks import TaskManager

            import llmkick_tasks

            manager = TaskManager(
                include_path=str(Path(llmkick_tasks.__file__).parent),
                include_defaults=False,
                metadata=dict(metadata),
            )
            built["task"] = manager.load([task])["tasks"][task]
        return built["task"].doc_to_text(doc)

    return prompt_for


def rejudge_file(
    task: str, samples: Path, metadata: Mapping[str, Any], label: str, date: str
) -> tuple[Path, dict[str, Any]]:
    """Re-judge one samples file; returns the results file written and its content."""
    original = _results_for(samples)
    original_meta = dict(original.get("configs", {}).get(task, {}).get("metadata") or {})
    merged = {k: v for k, v in original_meta.items() if k not in RUN_ONLY_KEYS} | dict(metadata)
    kind = _kind(task, samples)
    if kind is None:
        raise RejudgeError(f"{samples}: {task} is not a judged task llmkick knows ({', '.join(KNOWN_TASKS)})")
    settings = JudgeSettings.from_metadata(merged, task=task)
    protocol = make_protocol(kind, settings, merged, task)
    rows = read_samples(samples)
    if not rows:
        raise RejudgeError(f"{samples}: no samples of the {FILTER_NAME!r} filter")
    answers, docs = zip(*(_answer_and_reference(row) for row in rows), strict=True)
    judge = JudgeFilter(protocol=protocol, settings=settings, prompt_for=_prompt_for(task, merged))
    records = judge.apply(list(answers), list(docs))
    describe = describe_judge(settings, protocol)
    results = {
        "results": {task: {"alias": task, **aggregate(protocol, docs, records)}},
        "configs": {
            task: {
                "task": task,
                "metadata": {**merged, "judge": describe, "rejudged_from": str(samples)},
            }
        },
        "versions": {task: original.get("versions", {}).get(task)},
        "n-samples": {task: {"original": len(rows), "effective": len(rows)}},
        "config": original.get("config", {}),
        "llmkick_rejudge": {"samples": str(samples), "label": label, "date": date},
    }
    out = samples.with_name(f"rejudged_{task}_{label}_{date}.json")
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    with (samples.with_name(f"rejudged_samples_{task}_{label}_{date}.jsonl")).open(
        "w", encoding="utf-8"
    ) as f:
        for row, record in zip(rows, records, strict=True):
            f.write(
                json.dumps(
                    {"doc_id": row.get("doc_id"), "doc": row["doc"], "judged": record}, ensure_ascii=False
                )
                + "\n"
            )
    return out, results


def default_label(metadata: Mapping[str, Any]) -> str:
    """A file-name label for a re-judging: the judge model and protocol asked for."""
    text = f"{metadata.get('judge_model') or 'judge'}-{metadata.get('judge_protocol') or 'llmkick'}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def rejudge_path(
    path: Path | str,
    metadata: Mapping[str, Any] | None = None,
    *,
    label: str | None = None,
    tasks: Sequence[str] | None = None,
) -> list[Path]:
    """Re-judge every judged task's samples under ``path``; returns the results files written.

    ``metadata``: judge settings as ``--metadata`` would give them (``judge_model``, ``judge_protocol``,
    ``judge_base_url``, ``data_dir``, ...), over the original run's task metadata.  For a sweep run directory
    the re-judged points are also gathered into ``<run>/rejudged/<label>/`` for ``llmkick report``.
    """  # fmt: skip
    path = Path(path).expanduser()
    metadata = dict(metadata or {})
    label = label or default_label(metadata)
    date = datetime.now().isoformat().replace(":", "-")
    written: list[tuple[Path, dict[str, Any]]] = []
    for task, samples in find_samples(path, tasks):
        log.info("llmkick judge: re-judging %s (%s)", samples, task)
        written.append(rejudge_file(task, samples, metadata, label, date))
    if (path / "sweep.json").is_file():
        _gather_sweep(path, label, written)
    return [file for file, _ in written]


def _gather_sweep(run_dir: Path, label: str, written: Sequence[tuple[Path, dict[str, Any]]]) -> Path:
    """``<run>/rejudged/<label>/``: the run's points with the re-judged tasks' results in place."""
    target = run_dir / "rejudged" / label
    (target / "points").mkdir(parents=True, exist_ok=True)
    (target / "sweep.json").write_text((run_dir / "sweep.json").read_text())
    for point_results in sorted((run_dir / "points").glob("*/results.json")):
        point = point_results.parent
        results = json.loads(point_results.read_text())
        for file, rejudged in written:
            if point in file.parents:
                for key in ("results", "configs", "versions", "n-samples"):
                    results.setdefault(key, {}).update(rejudged.get(key, {}))
        (target / "points" / point.name).mkdir(exist_ok=True)
        (target / "points" / point.name / "results.json").write_text(
            json.dumps(results, indent=1, default=str)
        )
    print(f"llmkick judge: re-judged sweep in {target}; tabulate it with `llmkick report {target}`")
    return target
