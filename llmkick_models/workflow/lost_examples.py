"""What was lost, by example: for each point and exact-match task, the documents dense got right and the
point got wrong, with the question, the gold answer and both answers — a few in report.md, all of them in
report.json — so that a reader sees which facts went.

"Exact-match task": a headline metric scored 0/1 per document (accuracy, exact match, ``contains``) of a
task that is not judged.  The examples shown are ``SHOWN`` of the lost documents drawn with seed ``SEED``
(reproducible: the same run gives the same examples), listed in document order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from llmkick_models.workflow.answers import Answer, task_answers
from llmkick_models.workflow.paired_stats import Comparison
from llmkick_models.workflow.run_results import (
    PointResult,
    SamplesUnusable,
    dense_point,
    document_values,
    is_judged,
)

SHOWN = 5
SEED = 0
#: report.md cuts a question or an answer to this many characters (report.json keeps them whole).
CELL_CHARACTERS = 160


@dataclass
class Lost:
    """The documents one point lost on one metric of one task (or why they cannot be listed)."""

    point: str
    task: str
    metric: str
    documents: list[tuple[tuple[str, Any], Answer, Answer]]  # (leaf task, doc_id), dense's, the point's
    reason: str | None = None

    def shown(self) -> list[tuple[tuple[str, Any], Answer, Answer]]:
        """``SHOWN`` of them, drawn with seed ``SEED``, in document order."""
        if len(self.documents) <= SHOWN:
            return self.documents
        chosen = sorted(random.Random(SEED).sample(range(len(self.documents)), SHOWN))
        return [self.documents[i] for i in chosen]

    def as_dict(self) -> dict[str, Any]:
        """report.json's entry: every lost document."""
        out: dict[str, Any] = {"point": self.point, "task": self.task, "metric": self.metric.split(",")[0],
                               "lost": len(self.documents)}  # fmt: skip
        if self.reason is not None:
            return out | {"lost": None, "reason": self.reason}
        out["documents"] = [
            {"task": leaf, "doc_id": doc_id, "question": dense.question, "gold": dense.gold,
             "dense_answer": dense.answer, "point_answer": point.answer}
            for (leaf, doc_id), dense, point in self.documents
        ]  # fmt: skip
        return out


def _order(key: tuple[str, Any]) -> tuple[str, int, Any]:
    """Document order: by subtask, then by lm-eval's integer doc id (10 after 9)."""
    leaf, doc_id = key
    return (leaf, 0, doc_id) if isinstance(doc_id, int) else (leaf, 1, str(doc_id))


def _lost(dense: PointResult, point: PointResult, task: str, metric: str) -> Lost:
    found = Lost(point.point["id"], task, metric, [])
    try:
        dense_values, point_values = (
            document_values(dense, task, metric),
            document_values(point, task, metric),
        )
        keys = sorted((k for k, v in dense_values.items() if v == 1 and point_values.get(k) == 0), key=_order)
        if keys:
            filter_key = metric.partition(",")[2]
            dense_answers, point_answers = (
                task_answers(dense, task, filter_key),
                task_answers(point, task, filter_key),
            )
            found.documents = [(k, dense_answers[k], point_answers[k]) for k in keys]
    except (SamplesUnusable, KeyError) as error:
        found.reason = f"the lost documents cannot be listed: {error}"
    return found


def lost_documents(points: list[PointResult], compared: dict) -> list[Lost]:
    """For every paired 0/1 comparison of a task that is not judged, the documents the point lost."""
    by_id = {p.point["id"]: p for p in points}
    out = []
    for (point_id, task, metric), result in compared.items():
        dense = dense_point(points, by_id[point_id])  # a --models run: the point's own model's dense
        if dense is None or not isinstance(result, Comparison) or result.losses is None:
            continue
        if not is_judged(dense.results, task):
            out.append(_lost(dense, by_id[point_id], task, metric))
    return out


def _cell(value: Any) -> str:
    text = " ⏎ ".join(value) if isinstance(value, list) else str(value)
    text = text.replace("\n", " ⏎ ").replace("|", "\\|")
    return text if len(text) <= CELL_CHARACTERS else text[: CELL_CHARACTERS - 1] + "…"


def lost_section(found: list[Lost]) -> str:
    """report.md's "What was lost, by example" (empty when no point lost a document)."""
    blocks = []
    for lost in found:
        title = f"### {lost.point} · {lost.task} — {lost.metric.split(',')[0]}"
        if lost.reason is not None:
            blocks.append(f"{title}\n\n{lost.reason}")
            continue
        if not lost.documents:
            continue
        lines = [title, "", f"{len(lost.documents)} documents lost; {len(lost.shown())} of them:", "",
                 "| document | question | gold | dense | point |", "|---|---|---|---|---|"]  # fmt: skip
        for (leaf, doc_id), dense, point in lost.shown():
            document = f"{leaf} #{doc_id}" if leaf != lost.task else f"#{doc_id}"
            cells = [document, *map(_cell, (dense.question, dense.gold, dense.answer, point.answer))]
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    if not blocks:
        return ""
    intro = (
        "## What was lost, by example\n\nDocuments dense got right and the point got wrong (0/1 metrics"
        f" of tasks that are not judged): {SHOWN} per point and metric drawn with seed {SEED}, in document"
        f" order; text cut to {CELL_CHARACTERS} characters, ⏎ a line break. All of them, whole: `lost` in"
        " report.json."
    )
    return intro + "\n\n" + "\n\n".join(blocks) + "\n"
