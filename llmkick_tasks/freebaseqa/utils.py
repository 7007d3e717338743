"""FreebaseQA for lm-eval: the functions the task YAMLs name; the loader is :mod:`.loader`.

Document schema (every format, every source)::

    {"question_id": str, "question": str, "answers": list[str]}   # answers: all aliases, first = canonical
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmkick_tasks import scoring
from llmkick_tasks.freebaseqa.loader import load_freebaseqa

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


__all__ = ["load_freebaseqa", "process_results", "score"]


def score(continuation: str, answers: Iterable[str]) -> dict[str, float]:
    """FreebaseQA metrics of one continuation: the paper's ``contains`` and a strict ``exact_match``."""
    aliases = list(answers)
    return {
        "contains": scoring.freebaseqa_contains(continuation, aliases),
        "exact_match": scoring.freebaseqa_exact_match(continuation, aliases),
    }


def process_results(doc: Mapping[str, Any], results: list[str]) -> dict[str, float]:
    """lm-eval ``process_results``: score the generated continuation (never the prompt)."""
    return score(results[0], doc["answers"])
