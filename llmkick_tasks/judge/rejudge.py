"""``llmkick judge``: judge answers that lm-eval already generated, again, without loading a model.

Generation once, judging many times (as FastChat's ``gen_judgment.py``): a judged task run with
``--log_samples`` leaves ``samples_<task>_<date>.jsonl`` beside its ``results_<date>.json``.  Each sample
holds the document and the model's answer (for MT-Bench both turns); the judged record also holds the
reference answer the judge compared against, which is reused so that only the judge changes.  This module
re-judges those answers with any judge settings / protocol and writes lm-eval-shaped results next to them:

* ``PATH`` a samples file, an lm-eval output folder (searched recursively), or a sweep run directory;
* per samples file, ``rejudged_samples_<task>_<label>_<date>.jsonl`` and
  ``rejudged_<task>_<label>_<date>.json`` beside it, ``<date>`` being the samples file's: the samples and
  results lm-eval would have written had this judge scored the run (:mod:`.rejudge_output`); a label that
  exists already is refused unless ``overwrite``;
* for a sweep run directory, also ``<run>/rejudged/<label>/``: a copy of the run whose points' results hold
  the re-judged tasks in place of the originals, so ``llmkick report <run>/rejudged/<label>`` tabulates them
  and compares every point with the re-judged dense on the same documents.

With the same judge (and its cache) the metrics equal the original run's exactly; with another judge a
second result is written, nothing is generated.

Everything that can be checked without the judge (each task's judge settings and protocol, its samples, the
label and whether results of that label exist) is checked for every task first, and every task is judged
before the first result is written: a refusal or a failed judge leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from llmkick_tasks.errors import UserError
from llmkick_tasks.judge.client import JudgeRequestError
from llmkick_tasks.judge.config import JudgeSettings
from llmkick_tasks.judge.protocol_choice import make_protocol
from llmkick_tasks.judge.rejudge_output import (
    SAMPLES_NAME,
    RejudgePlan,
    gather_sweep,
    outputs,
    write_results,
)
from llmkick_tasks.judge.task import FILTER_NAME, JudgeFilter
from llmkick_tasks.samples_file import SamplesFileError, read_jsonl

log = logging.getLogger(__name__)

# A label is part of file and folder names: nothing that could leave the folder or need quoting.
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# The judged tasks llmkick ships, by protocol kind (a results file next to the samples says it too).
KNOWN_TASKS = {
    "llmkick_summarization": "summarization",
    "llmkick_instruction_vicuna80": "instruction",
    "llmkick_mtbench": "mtbench",
}
# Task metadata of the original run that describes its judge or prompts, not the data: not carried over.
RUN_ONLY_KEYS = ("judge", "prompt_format")


class RejudgeError(UserError):
    """Nothing to re-judge at the given path, or a samples file that cannot be re-judged."""


def find_samples(path: Path, tasks: Sequence[str] | None = None) -> list[tuple[str, Path]]:
    """``(task, samples file)`` of every judged task under ``path`` (a file or a folder), oldest first."""
    path = Path(path).expanduser()
    if not path.exists():
        raise RejudgeError(f"llmkick judge: {path} does not exist")
    files = [path] if path.is_file() else sorted(path.rglob("samples_*.jsonl"))
    found, present = [], set()
    for file in files:
        match = SAMPLES_NAME.match(file.name)
        if match is None:
            if path.is_file():
                raise RejudgeError(
                    f"llmkick judge: {file} is not an lm-eval samples file (samples_<task>_<date>.jsonl)"
                )
            continue
        task = match["task"]
        present.add(task)
        if (tasks and task not in tasks) or (not tasks and _kind(task, file) is None):
            continue
        found.append((task, file))
    missing = [task for task in tasks or () if task not in present]
    if missing:
        raise RejudgeError(
            f"llmkick judge: --tasks {missing[0]}: no samples_{missing[0]}_<date>.jsonl under {path} "
            f"(samples found: {', '.join(sorted(present)) or 'none'})"
        )
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
            try:
                results = json.loads(candidate.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as error:
                raise RejudgeError(f"{candidate} is not an lm-eval results file: {error}") from None
            if not isinstance(results, dict):
                raise RejudgeError(f"{candidate} is not an lm-eval results file (not a JSON object)")
            return results
    return {}


def _original_metadata(original: Mapping[str, Any], task: str) -> dict[str, Any]:
    """The task metadata of the original run's results (``{}`` where it has none)."""
    configs = original.get("configs")
    config = configs.get(task) if isinstance(configs, dict) else None
    metadata = config.get("metadata") if isinstance(config, dict) else None
    return dict(metadata) if isinstance(metadata, dict) else {}


def _kind(task: str, samples: Path) -> str | None:
    kind = _original_metadata(_results_for(samples), task).get("llmkick_judged")
    return (
        kind
        if isinstance(kind, str) and kind in ("summarization", "instruction", "mtbench")
        else KNOWN_TASKS.get(task)
    )


def read_samples(samples: Path) -> list[dict[str, Any]]:
    """The samples of a file, in document order."""
    try:
        lines = read_jsonl(samples)
    except SamplesFileError as error:
        raise RejudgeError(str(error)) from None
    rows = []
    for number, row in lines:
        if not isinstance(row, dict) or not isinstance(row.get("doc"), dict) or "resps" not in row:
            raise RejudgeError(
                f"{samples} line {number} is not an lm-eval sample (needs a doc object and resps)"
            )
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


def plan_file(task: str, samples: Path, metadata: Mapping[str, Any]) -> RejudgePlan:
    """Check everything about re-judging one samples file that does not need the judge."""
    original = _results_for(samples)
    merged = {k: v for k, v in _original_metadata(original, task).items() if k not in RUN_ONLY_KEYS}
    merged |= dict(metadata)
    kind = _kind(task, samples)
    if kind is None:
        raise RejudgeError(f"{samples}: {task} is not a judged task llmkick knows ({', '.join(KNOWN_TASKS)})")
    settings = JudgeSettings.from_metadata(merged, task=task)
    protocol = make_protocol(kind, settings, merged, task)
    rows = read_samples(samples)
    if not rows:
        raise RejudgeError(f"{samples}: no samples of the {FILTER_NAME!r} filter")
    answers, docs = zip(*(_answer_and_reference(row) for row in rows), strict=True)
    return RejudgePlan(task, samples, merged, settings, protocol, rows, list(answers), list(docs), original)


def judge_plan(plan: RejudgePlan) -> list[dict[str, Any]]:
    """The judged records of a plan's samples, in order (the judge is called here)."""
    judge = JudgeFilter(
        protocol=plan.protocol, settings=plan.settings, prompt_for=_prompt_for(plan.task, plan.metadata)
    )
    return judge.apply(plan.answers, plan.docs)


def _file_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).lstrip("._+-") or "judge"


def default_label(plans: Sequence[RejudgePlan]) -> str:
    """``<judge model>-<protocol>`` as actually resolved for the tasks (``+`` joins differing ones)."""
    models = list(dict.fromkeys(plan.settings.model for plan in plans))
    protocols = list(dict.fromkeys(plan.settings.protocol for plan in plans))
    return _file_label(f"{'+'.join(models)}-{'+'.join(protocols)}")


def check_label(label: str) -> str:
    """``label`` if it is usable in file names; :class:`RejudgeError` otherwise."""
    if not LABEL.match(label):
        raise RejudgeError(
            f"llmkick judge: --label must be letters, digits, '.', '_', '+' or '-', starting with a letter "
            f"or digit; got {label!r}"
        )
    return label


def rejudge_path(
    path: Path | str,
    metadata: Mapping[str, Any] | None = None,
    *,
    label: str | None = None,
    tasks: Sequence[str] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Re-judge every judged task's samples under ``path``; returns the results files written.

    ``metadata``: judge settings as ``--metadata`` would give them (``judge_model``, ``judge_protocol``,
    ``judge_base_url``, ``data_dir``, ...), over the original run's task metadata.  ``label`` (default:
    the judge model and protocol actually used) names the results; results of an existing label are
    refused unless ``overwrite``, which replaces them.  Every task is checked, then judged, and only then
    are results written.  For a sweep run directory the re-judged points are also gathered into
    ``<run>/rejudged/<label>/`` for ``llmkick report``.
    """  # fmt: skip
    path = Path(path).expanduser()
    metadata = dict(metadata or {})
    if label is not None:
        check_label(label)
    plans = [plan_file(task, samples, metadata) for task, samples in find_samples(path, tasks)]
    label = label or default_label(plans)
    sweep = (path / "sweep.json").is_file()
    existing = [file for plan in plans for file in outputs(plan, label) if file.exists()]
    if sweep and (path / "rejudged" / label).exists():
        existing.insert(0, path / "rejudged" / label)
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise RejudgeError(
            f"llmkick judge: results labelled {label!r} exist already: {existing[0]}{more}; choose another "
            f"--label, or pass --overwrite to replace them"
        )
    date = datetime.now().isoformat().replace(":", "-")
    judged = []
    for plan in plans:
        log.info("llmkick judge: re-judging %s (%s)", plan.samples, plan.task)
        try:
            judged.append((plan, judge_plan(plan)))
        except JudgeRequestError as error:
            raise JudgeRequestError(f"{plan.task} ({plan.samples}): {error}; no result was written") from None
    written = [write_results(plan, records, label, date) for plan, records in judged]  # replaces files
    if sweep:
        if overwrite:  # the old folder may hold points of an older run layout: start it afresh
            shutil.rmtree(path / "rejudged" / label, ignore_errors=True)
        gather_sweep(path, label, written)
    return [file for file, _ in written]
