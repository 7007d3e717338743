"""A point's results are trusted only when its samples give them back.

lm-eval writes ``results_<date>.json`` and, with ``--log_samples`` (which the sweep always passes), one
``samples_<task>_<date>.jsonl`` per task holding every document's metric values.  Every score of a point's
``results.json`` is recomputed here from those samples, the way lm-eval aggregates them:

* a task's metric from its documents' values with the aggregation its config records (``mean``,
  ``perplexity``, ``weighted_perplexity``, ``bits_per_byte``; llmkick's judge counters such as
  ``judge_unparsed`` are sums), or lm-eval's default aggregation of the metric when the config names none;
* a group's metric (MMLU over its subjects) from its subtasks' recomputed values, as lm-eval does: weighted
  by each subtask's number of documents, or unweighted (a group's weighting is not in the results file, so
  either of the two lm-eval aggregations is accepted);
* each task's number of documents against ``n-samples``.

A task re-judged by ``llmkick judge`` (a sweep's ``rejudged/<label>/`` copy) is checked against the samples
file ``llmkick judge`` wrote, which holds the new judge's per-document values as lm-eval logs them; the
other tasks of the point against the original run's samples.

A score that disagrees, or whose samples are gone, is a :class:`Finding` that resume and the report refuse
to use.  A metric whose aggregation cannot be redone (one lm-eval does not expose, a task re-judged by an
older ``llmkick judge`` whose samples keep no per-document scores) is a finding of its own kind: stated,
never silently passed.

Tolerance: relative ``1e-9`` (absolute ``1e-12`` near zero).  The recomputation sums the same values in the
same order as lm-eval, and JSON keeps every float exactly, so an untouched score comes back to the last
bit or, for a group or a multi-process run, within a few ulps (~1e-15); an edited score — even one rounded
to 10 significant digits — is off by far more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkick_models.workflow.aggregations import AGGREGATIONS, aggregation_of, close, is_number
from llmkick_tasks.samples_file import (
    REJUDGED_FROM,
    REJUDGED_SAMPLES,
    SamplesFileError,
    read_jsonl,
    recorded_path,
)

MISMATCH = "results disagree with samples"
MISSING = "samples missing"
UNREADABLE = "unreadable"
NOT_RECOMPUTABLE = "not recomputable"
NOT_A_NUMBER = "not a number"

#: lm-eval's own fields of a logged sample: never metric values.
_SAMPLE_FIELDS = frozenset({
    "doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics", "doc_hash",
    "prompt_hash", "target_hash",
})  # fmt: skip


@dataclass(frozen=True)
class Finding:
    """Why a point's score is not trusted (or cannot be checked): shown in the report, refused by resume."""

    kind: str
    task: str
    metric: str | None  # lm-eval's metric key ("acc,none"); None: every metric of the task
    message: str

    def covers(self, task: str, metric: str) -> bool:
        """Whether this finding concerns ``metric`` of ``task``."""
        return self.task == task and self.metric in (None, metric)


# ---- where the samples are -----------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Rejudged:
    """A task whose scores ``llmkick judge`` replaced: the samples it re-judged and the samples it wrote
    (``None``: written by an older ``llmkick judge``, which kept no per-document values)."""

    source: Path
    samples: Path | None


def rejudged_tasks(results: dict[str, Any], folder: Path) -> dict[str, Rejudged]:
    """The tasks of ``results`` re-judged by ``llmkick judge``; paths relative to ``folder``, which holds
    the results file, are resolved against it."""
    out = {}
    for task, config in results.get("configs", {}).items():
        metadata = (config.get("metadata") or {}) if isinstance(config, dict) else {}
        source, samples = metadata.get(REJUDGED_FROM), metadata.get(REJUDGED_SAMPLES)
        if isinstance(source, str) and source:
            written = recorded_path(samples, folder) if isinstance(samples, str) and samples else None
            out[task] = Rejudged(recorded_path(source, folder), written)
    return out


def find_lm_eval_output(point_dir: Path, results: dict[str, Any]) -> tuple[Path, str] | None:
    """The folder and date id of the lm-eval run whose results these are.

    That run's ``results_<date>.json`` has the same start time (lm-eval's ``date``): scores may have been
    edited since, the start time identifies the run.  Looked for under the point folder, and (for a
    re-judged copy of a sweep) beside the samples the re-judged tasks came from.
    """
    date = results.get("date")
    if date is None:
        return None
    roots = [point_dir, *{rejudged.source.parent for rejudged in rejudged_tasks(results, point_dir).values()}]
    for root in roots:
        for candidate in sorted(root.rglob("results_*.json"), reverse=True):
            raw = _read_json(candidate)
            if isinstance(raw, dict) and raw.get("date") == date:
                return candidate.parent, candidate.stem[len("results_") :]
    return None


@dataclass
class LoggedSamples:
    """The samples logged with one point's results: located once, each task's file read on demand."""

    point_dir: Path
    results: dict[str, Any]
    _output: tuple[Path, str] | None = field(default=None, init=False)
    _rejudged: dict[str, Rejudged] = field(default_factory=dict, init=False)
    _read: dict[str, list[dict[str, Any]] | Finding] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._output = find_lm_eval_output(self.point_dir, self.results)
        self._rejudged = rejudged_tasks(self.results, self.point_dir)

    @property
    def folder(self) -> Path | None:
        """lm-eval's output folder of this run (None when none under the point folder is of this run)."""
        return self._output[0] if self._output else None

    def path(self, task: str) -> Path | None:
        """Where ``task``'s samples of this run are: the samples ``llmkick judge`` wrote for a re-judged task,
        else lm-eval's (None when the run's output folder is not found, or a re-judged task has none)."""
        if task in self._rejudged:
            return self._rejudged[task].samples
        return self._output[0] / f"samples_{task}_{self._output[1]}.jsonl" if self._output else None

    def _missing(self, task: str) -> Finding:
        if task in self._rejudged and self._rejudged[task].samples is None:
            return Finding(NOT_RECOMPUTABLE, task, None, (
                "cannot be recomputed from samples: re-judged by an older `llmkick judge`, whose samples "
                "keep the judge's records, not per-document scores; re-judge with --overwrite"
            ))  # fmt: skip
        path = self.path(task)
        if path is not None:
            return Finding(MISSING, task, None, f"samples missing: {path}")
        model = self.results.get("model_name_sanitized") or "<model>"
        expected = self.point_dir / "lm_eval" / str(model) / f"samples_{task}_<date>.jsonl"
        why = (
            "results.json has no lm-eval start time ('date')"
            if self.results.get("date") is None
            else f"no lm-eval results_<date>.json under {self.point_dir} has this run's start time "
            f"(date {self.results['date']!r})"
        )
        return Finding(MISSING, task, None, f"samples missing: {expected} ({why})")

    def rows(self, task: str) -> list[dict[str, Any]] | Finding:
        """``task``'s samples, each reduced to ``doc_id``, ``filter`` and its metric values; or why not."""
        if task not in self._read:
            path = self.path(task)
            if path is None or not path.is_file():
                self._read[task] = self._missing(task)
            else:
                self._read[task] = _read_rows(task, path)
        return self._read[task]


def _read_rows(task: str, path: Path) -> list[dict[str, Any]] | Finding:
    try:
        lines = read_jsonl(path)
    except SamplesFileError as error:
        return Finding(UNREADABLE, task, None, f"samples unreadable: {error}")
    rows = []
    for number, sample in lines:
        if not isinstance(sample, dict) or "doc_id" not in sample:
            return Finding(UNREADABLE, task, None, f"samples unreadable: {path} line {number}: no doc_id")
        names = sample.get("metrics") or [k for k in sample if k not in _SAMPLE_FIELDS]
        row = {name: sample[name] for name in names if name in sample}
        row["doc_id"], row["filter"] = sample["doc_id"], sample.get("filter", "none")
        rows.append(row)
    return rows


# ---- the check -----------------------------------------------------------------------------------------


def numeric_scores(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric scores of one results entry (``metric,filter`` keys; stderr and counts dropped)."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if "," in key and "_stderr" not in key and is_number(value)
    }


def children(results: dict[str, Any]) -> dict[str, list[str]]:
    """Each group's direct members."""
    return {group: list(members) for group, members in results.get("group_subtasks", {}).items()}


def leaf_tasks(results: dict[str, Any], task: str) -> list[str]:
    """The tasks (not groups) under ``task``, recursively; a plain task is its own leaf."""
    members = children(results).get(task)
    if not members:  # lm-eval lists plain tasks as groups of nothing
        return [task]
    return [leaf for member in members for leaf in leaf_tasks(results, member)]


@dataclass
class _Leaf:
    """One task's recomputed scores: ``{metric key: value}``, documents, or why there are none."""

    scores: dict[str, float] = field(default_factory=dict)
    documents: int = 0
    findings: list[Finding] = field(default_factory=list)


def _fmt(value: float) -> str:
    return repr(float(value))


class PointCheck:
    """Every reported score of one point recomputed from its samples (see the module doc)."""

    def __init__(self, point_dir: Path, results: dict[str, Any], results_file: Path | None = None) -> None:
        self.results = results
        self.results_file = results_file or point_dir / "results.json"
        self.samples = LoggedSamples(point_dir, results)
        self.findings: list[Finding] = []
        self._leaves: dict[str, _Leaf] = {}
        for task, metrics in results.get("results", {}).items():
            scores = numeric_scores(metrics if isinstance(metrics, dict) else {})
            if not scores:
                continue
            if children(results).get(task):
                self._check_group(task, scores)
            else:
                self._check_task(task, scores)

    def _mismatch(
        self, task: str, metric: str, reported: float, recomputed: float, source: str, how: str = ""
    ) -> None:
        self.findings.append(Finding(MISMATCH, task, metric, (
            f"results disagree with samples: {self.results_file} reports {task} {metric} = {_fmt(reported)}, "
            f"recomputed from {source}: {_fmt(recomputed)}{how}"
        )))  # fmt: skip

    def _leaf(self, task: str) -> _Leaf:
        """``task``'s scores recomputed from its samples file (every metric its samples hold)."""
        if task in self._leaves:
            return self._leaves[task]
        leaf = self._leaves[task] = _Leaf()
        rows = self.samples.rows(task)
        if isinstance(rows, Finding):
            leaf.findings.append(rows)
            return leaf
        values: dict[str, list[Any]] = {}
        for row in rows:
            for name, value in row.items():
                if name not in ("doc_id", "filter"):
                    values.setdefault(f"{name},{row['filter']}", []).append(value)
        leaf.documents = max((len(v) for v in values.values()), default=0)  # lm-eval's sample_len
        for key, items in values.items():
            aggregation = aggregation_of(self.results, task, key.split(",")[0])
            if aggregation not in AGGREGATIONS:
                leaf.findings.append(Finding(NOT_RECOMPUTABLE, task, key, (
                    f"{task} {key} cannot be recomputed from samples: lm-eval aggregated it with "
                    f"{aggregation!r}, which llmkick does not redo"
                )))  # fmt: skip
                continue
            try:
                leaf.scores[key] = AGGREGATIONS[aggregation](items)
            except (ValueError, TypeError, ZeroDivisionError) as error:
                message = f"samples unreadable: {self.samples.path(task)}: {key}: {error}"
                leaf.findings.append(Finding(UNREADABLE, task, key, message))
        return leaf

    def _check_task(self, task: str, scores: dict[str, float]) -> None:
        leaf = self._leaf(task)
        self.findings += [f for f in leaf.findings if f.metric is None or f.metric in scores]
        if any(f.metric is None for f in leaf.findings):
            return
        source = str(self.samples.path(task))
        expected = self.results.get("n-samples", {}).get(task, {}).get("effective")
        if is_number(expected) and expected != leaf.documents:
            self.findings.append(Finding(MISMATCH, task, None, (
                f"results disagree with samples: {self.results_file} says {task} scored {expected} documents "
                f"(n-samples), {source} holds {leaf.documents}"
            )))  # fmt: skip
        for key, reported in scores.items():
            if any(f.covers(task, key) for f in leaf.findings):
                continue
            if key not in leaf.scores:
                self.findings.append(Finding(MISMATCH, task, key, (
                    f"results disagree with samples: {self.results_file} reports {task} {key} = "
                    f"{_fmt(reported)}, but {source} has no per-document {key}"
                )))  # fmt: skip
            elif not close(reported, leaf.scores[key]):
                self._mismatch(task, key, reported, leaf.scores[key], source)

    def _check_group(self, group: str, scores: dict[str, float]) -> None:
        leaves = leaf_tasks(self.results, group)
        source = f"the samples of its {len(leaves)} subtasks in {self.samples.folder}"
        broken = [f for leaf in leaves for f in self._leaf(leaf).findings if f.metric is None]
        if broken:
            more = f" (and {len(broken) - 1} more subtasks)" if len(broken) > 1 else ""
            self.findings.append(Finding(broken[0].kind, group, None, broken[0].message + more))
            return
        for key, reported in scores.items():
            blocked = [f for leaf in leaves for f in self._leaf(leaf).findings if f.metric == key]
            if blocked:
                self.findings.append(Finding(blocked[0].kind, group, key, blocked[0].message))
                continue
            parts = [(self._leaf(leaf).scores[key], self._leaf(leaf).documents) for leaf in leaves
                     if key in self._leaf(leaf).scores]  # fmt: skip
            if not parts:
                self.findings.append(Finding(MISMATCH, group, key, (
                    f"results disagree with samples: {self.results_file} reports {group} {key} = "
                    f"{_fmt(reported)}, but {source} have no per-document {key}"
                )))  # fmt: skip
                continue
            # lm-eval's group aggregation, size-weighted or not (the group's setting is not recorded).
            weighted = sum(v * n for v, n in parts) / sum(n for _, n in parts)
            unweighted = sum(v for v, _ in parts) / len(parts)
            if not (close(reported, weighted) or close(reported, unweighted)):
                self._mismatch(group, key, reported, weighted, source,
                               f" weighted by subtask size, {_fmt(unweighted)} unweighted")  # fmt: skip

    def problems(self) -> list[Finding]:
        """Findings that make a score untrusted (all but the merely not recomputable)."""
        return [f for f in self.findings if f.kind != NOT_RECOMPUTABLE]

    def finding_for(self, task: str, metric: str) -> Finding | None:
        """The first finding about ``metric`` of ``task``, if any."""
        return next((f for f in self.findings if f.covers(task, metric)), None)
