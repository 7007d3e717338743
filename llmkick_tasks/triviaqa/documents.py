"""TriviaQA rc documents from rows in ``mandarjoshi/trivia_qa``'s column layout.

The rows come from the Hub, or from a data dir's release files read into the same layout
(:mod:`llmkick_tasks.triviaqa.release`), so one set of functions builds the documents of both.  Document
schema::

    {"question_id": str, "question": str, "answer": str, "aliases": list[str], "evidence": str}

``answer`` is the canonical answer (``answer.value``), ``aliases`` the value, every alias and every
normalized alias.  ``evidence`` (open book only; empty for closed book) is the first entity page's
``wiki_context`` followed by the first search result's ``search_context``, cut to a budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import datasets

from llmkick_tasks.data_dir import to_dataset
from llmkick_tasks.run_metadata import EVIDENCE_TOKENS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping


CHARS_PER_TOKEN = 4  # fallback when no tokenizer is known: English averages about 4 characters per token
# The evidence cut when no tokenizer is known (a task built without a model): the default token budget at
# 4 characters per token, i.e. LLM-KICK's own 3,072 characters.
EVIDENCE_CHARACTERS = EVIDENCE_TOKENS.default * CHARS_PER_TOKEN

FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "aliases": datasets.Sequence(datasets.Value("string")),
        "evidence": datasets.Value("string"),
    }
)


class RawDoc:
    """A TriviaQA question with its first evidence texts, before the evidence is cut to budget."""

    def __init__(
        self,
        question_id: str,
        question: str,
        answer: str,
        aliases: list[str],
        wiki_context: str = "",
        search_context: str = "",
    ) -> None:
        self.question_id = question_id
        self.question = question
        self.answer = answer
        self.aliases = aliases
        self.wiki_context = wiki_context
        self.search_context = search_context

    def to_doc(self, evidence: str = "") -> dict[str, Any]:
        """The task document (schema above)."""
        return {
            "question_id": self.question_id,
            "question": self.question,
            "answer": self.answer,
            "aliases": self.aliases,
            "evidence": evidence,
        }

    @property
    def evidence(self) -> str:
        """The uncut evidence: the first Wikipedia context, then the first search-result context."""
        return "\n\n".join(text for text in (self.wiki_context, self.search_context) if text)


def _aliases(answer: Mapping[str, Any]) -> list[str]:
    names = [answer.get("value") or ""]
    for key in ("aliases", "normalized_aliases"):
        names.extend(answer.get(key) or [])
    return [name.strip() for name in dict.fromkeys(names) if name and name.strip()]


def _first(sequence: Mapping[str, list[str]] | None, key: str) -> str:
    values = (sequence or {}).get(key) or []
    return values[0].strip() if values else ""


def hub_raw_doc(row: Mapping[str, Any], with_evidence: bool) -> RawDoc:
    """The question of one row in ``mandarjoshi/trivia_qa``'s layout, with its first evidence texts when
    asked.
    """
    doc = RawDoc(
        row["question_id"],
        row["question"].strip(),
        row["answer"]["value"].strip(),
        _aliases(row["answer"]),
    )
    if with_evidence:
        doc.wiki_context = _first(row["entity_pages"], "wiki_context")
        doc.search_context = _first(row["search_results"], "search_context")
    return doc


def open_book(rows: Iterable[Mapping[str, Any]], cut: Callable[[RawDoc], str]) -> datasets.Dataset:
    """Open-book documents of ``rows``, the evidence of each question cut by ``cut``."""
    docs = []
    for row in rows:
        raw = hub_raw_doc(row, True)
        docs.append(raw.to_doc(cut(raw)))
    return to_dataset(docs, FEATURES)


def process_closed_book(rows: datasets.Dataset) -> datasets.Dataset:
    """``process_docs`` of ``llmkick_triviaqa_closed``: ``rc.nocontext`` rows to question documents."""
    return to_dataset([hub_raw_doc(row, False).to_doc() for row in rows], FEATURES)


def process_open_book(rows: datasets.Dataset) -> datasets.Dataset:
    """``process_docs`` of ``llmkick_triviaqa_open`` without a model: ``rc`` rows to documents whose
    evidence is cut to :data:`EVIDENCE_CHARACTERS` characters.
    """
    return open_book(rows, lambda raw: raw.evidence[:EVIDENCE_CHARACTERS].rstrip())
