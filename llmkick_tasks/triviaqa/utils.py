"""TriviaQA rc for lm-eval: the functions and classes the task YAMLs name.

Documents: :mod:`.documents`; release files in the Hub's layout: :mod:`.release`; the open-book evidence
budget: :mod:`.evidence`; the task classes: :mod:`.task`.  Document schema (both sources)::

    {"question_id": str, "question": str, "answer": str, "aliases": list[str], "evidence": str}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmkick_tasks import scoring
from llmkick_tasks.triviaqa.documents import process_closed_book, process_open_book
from llmkick_tasks.triviaqa.task import TriviaQAOpenTask, TriviaQATask

if TYPE_CHECKING:
    from collections.abc import Mapping


__all__ = [
    "TriviaQAOpenTask",
    "TriviaQATask",
    "process_closed_book",
    "process_open_book",
    "process_results",
    "score",
]


def score(continuation: str, aliases: list[str]) -> dict[str, float]:
    """TriviaQA metrics of one continuation; the answer is its first line."""
    answer = scoring.first_line(continuation)
    return {
        "exact_match": scoring.exact_match(answer, aliases),
        "f1": scoring.token_f1(answer, aliases),
        "lenient_match": scoring.lenient_match(answer, aliases),
    }


def process_results(doc: Mapping[str, Any], results: list[str]) -> dict[str, float]:
    """lm-eval ``process_results``: score the generated continuation against the aliases."""
    return score(results[0], doc["aliases"])
