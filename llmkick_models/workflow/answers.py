"""What a point answered, per document, as its logged samples hold it: the question, the gold answer and the
model's answer (the text it generated; a judged task's answer from its judged record; MT-Bench's two turns;
a multiple-choice task's highest-scored choice).  Read for the report's examples and answer statistics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmkick_models.workflow.run_results import PointResult, SamplesUnusable
from llmkick_models.workflow.sample_checks import leaf_tasks
from llmkick_tasks.judge.rejudge import _answer_and_reference
from llmkick_tasks.samples_file import SamplesFileError, read_jsonl

#: A prompt shown in place of a question (a task whose documents have no ``question``) keeps its end.
PROMPT_TAIL = 300


@dataclass(frozen=True)
class Answer:
    """One document of one point: its question, gold answer and what the point answered."""

    question: str
    gold: Any
    answer: str | list[str]  # a list: the turns of a multi-turn answer

    @property
    def texts(self) -> list[str]:
        """The answer's texts (one, or one per turn)."""
        return list(self.answer) if isinstance(self.answer, list) else [self.answer]


def _question(row: Mapping[str, Any]) -> str:
    """The document's ``question`` (with its choices, if any), else the end of the prompt the model saw."""
    doc = row.get("doc") if isinstance(row.get("doc"), Mapping) else {}
    question = doc.get("question") or doc.get("turns")
    if isinstance(question, list):
        question = " / ".join(map(str, question))
    if isinstance(question, str) and question.strip():
        choices = doc.get("choices")
        if isinstance(choices, list) and choices:
            question += "  " + "  ".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(choices))
        return question.strip()
    arguments = row.get("arguments") or {}
    first = next(iter(arguments.values()), {}) if isinstance(arguments, Mapping) else {}
    prompt = str(first.get("arg_0", "")) if isinstance(first, Mapping) else ""
    return prompt if len(prompt) <= PROMPT_TAIL else "…" + prompt[-PROMPT_TAIL:]


def logged_answer(row: Mapping[str, Any]) -> str | list[str]:
    """The text generated, the turns of a two-turn answer, or a multiple-choice task's best choice."""
    filtered = row.get("filtered_resps") or []
    if filtered and all(
        isinstance(r, list) and len(r) == 2 and isinstance(r[0], (int, float)) for r in filtered
    ):
        best = max(range(len(filtered)), key=lambda i: filtered[i][0])  # loglikelihood per choice
        choices = (row.get("doc") or {}).get("choices")
        return f"{chr(65 + best)}. {choices[best]}" if isinstance(choices, list) else f"choice {best}"
    first = filtered[0] if filtered else None
    if isinstance(first, str) and not first.startswith("{"):
        return first  # the filtered answer (what the metric scored), not the raw generation
    # A judged record (its "response"), a two-turn record, or a run that logged only the raw answer.
    answer, _ = _answer_and_reference({"doc": {}, "resps": [[first]], **row})
    if isinstance(answer, Mapping) and isinstance(answer.get("turns"), list):
        return [str(turn) for turn in answer["turns"]]
    return "" if answer is None else str(answer)


def task_answers(point: PointResult, task: str, filter_key: str) -> dict[tuple[str, Any], Answer]:
    """``{(leaf task, doc_id): Answer}`` of ``task`` (a group: over its subtasks) for one filter."""
    out: dict[tuple[str, Any], Answer] = {}
    for leaf in leaf_tasks(point.results, task):
        path = point.check.samples.path(leaf)
        if path is None or not path.is_file():
            raise SamplesUnusable(f"{task}: no samples of {leaf} at point {point.point['id']}")
        try:
            rows = read_jsonl(path)
        except SamplesFileError as error:
            raise SamplesUnusable(str(error)) from None
        for _, row in rows:
            if isinstance(row, dict) and row.get("filter", "none") == filter_key and "doc_id" in row:
                out[(leaf, row["doc_id"])] = Answer(_question(row), row.get("target"), logged_answer(row))
    return out
