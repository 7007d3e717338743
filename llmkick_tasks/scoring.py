"""Scoring of the LLM-KICK exact-match tasks: small, named, per-document functions.

Every function scores ONE model continuation (the generated text only, never the prompt) against the gold
answers of one document, so a task's score is a plain mean over documents and cannot depend on the batch
size or the order in which lm-eval ran the requests.

Conventions shared by the functions below:

* The model's *answer* is the first line of the continuation after leading whitespace
  (:func:`first_line`), as in LLM-KICK's TriviaQA script.
* An empty answer is always wrong, whatever the metric (LLM-KICK's lenient match counted it right,
  because the empty string is a substring of every alias).
* Aliases that normalize to the empty string are ignored (an alias "The" must not match everything).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


# Typographic quotes and accents that TriviaQA's official evaluation treats as punctuation, plus the
# double quotes it forgot; all become spaces, like ASCII punctuation.
UNICODE_QUOTES = "‘’‚‛“”„‟´`′″«»"
_PUNCTUATION = frozenset(string.punctuation + UNICODE_QUOTES)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# A sentence ends at . ! or ? followed by whitespace and an upper-case letter or digit ("Paris. It is").
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")

MMLU_LETTERS = ("A", "B", "C", "D")
# The single letter, optionally followed by the punctuation models put after an option letter.
_MMLU_LETTER = re.compile(r"\s*([ABCD])\s*[.):]?\s*")


def first_line(continuation: str) -> str:
    """The answer in a continuation: its first line once leading whitespace is dropped."""
    lines = continuation.strip().splitlines()
    return lines[0].strip() if lines else ""


def first_sentence(text: str) -> str:
    """``text`` up to the end of its first sentence (``"Paris. It is the capital."`` -> ``"Paris."``)."""
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


def normalize_answer(text: str) -> str:
    """TriviaQA's official answer normalization (SQuAD-style).

    Lower-case, underscores to spaces, punctuation (ASCII and typographic quotes) to spaces, drop the
    articles a/an/the, collapse whitespace.
    """
    text = text.lower().replace("_", " ")
    text = "".join(" " if char in _PUNCTUATION else char for char in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _normalized_aliases(aliases: Iterable[str]) -> list[str]:
    return [alias for alias in dict.fromkeys(normalize_answer(a) for a in aliases) if alias]


def exact_match(prediction: str, aliases: Iterable[str]) -> float:
    """1.0 iff the normalized prediction equals a normalized alias (an empty prediction never matches)."""
    predicted = normalize_answer(prediction)
    return float(bool(predicted) and predicted in _normalized_aliases(aliases))


def token_f1(prediction: str, aliases: Iterable[str]) -> float:
    """Bag-of-tokens F1 between the normalized prediction and the best-matching normalized alias."""
    predicted = normalize_answer(prediction).split()
    best = 0.0
    for alias in _normalized_aliases(aliases):
        gold = alias.split()
        common = sum((Counter(predicted) & Counter(gold)).values())
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def lenient_match(prediction: str, aliases: Iterable[str]) -> float:
    """LLM-KICK's TriviaQA "exact match": an alias inside the prediction or the prediction inside an alias.

    Containment is on normalized strings, as in the original script; unlike the original, an empty
    prediction is wrong (it is a substring of everything).
    """
    predicted = normalize_answer(prediction)
    if not predicted:
        return 0.0
    return float(any(alias in predicted or predicted in alias for alias in _normalized_aliases(aliases)))


def squash(text: str) -> str:
    """Lower-case and remove every whitespace character (LLM-KICK's FreebaseQA normalization)."""
    return "".join(text.lower().split())


def freebaseqa_contains(continuation: str, aliases: Iterable[str]) -> float:
    """LLM-KICK's FreebaseQA metric: some squashed alias is a substring of the squashed continuation.

    Only the generated continuation is searched.  The original searched the decoded prompt + answer, so an
    alias that appears in the question counted as correct whatever the model said.
    """
    generated = squash(continuation)
    return float(any(alias and alias in generated for alias in map(squash, aliases)))


def freebaseqa_exact_match(continuation: str, aliases: Iterable[str]) -> float:
    """Strict FreebaseQA match: the first line, or its first sentence, equals an alias once normalized.

    The first-sentence reading accepts ``"Paris. It is the capital of France."``; the whole-line reading
    keeps answers with inner full stops (``"J. R. R. Tolkien"``) intact.
    """
    line = first_line(continuation)
    return max(exact_match(line, aliases), exact_match(first_sentence(line), aliases))


def mmlu_predicted_letter(continuation: str) -> str | None:
    r"""The option letter a generative MMLU continuation names, or ``None`` when it is not one letter.

    Accepts ``"B"``, ``" B"``, ``"B."``, ``"B)"``, ``"B:"``; anything else (``"Bob"``, ``"\n"``, ``""``,
    ``"B. Paris"``) is not an answer, as in LLM-KICK's one-token protocol.
    """
    match = _MMLU_LETTER.fullmatch(continuation)
    return match.group(1) if match else None


def mmlu_letter_match(continuation: str, gold_index: int) -> float:
    """1.0 iff the continuation names the gold option (``gold_index`` 0-3 for A-D)."""
    return float(mmlu_predicted_letter(continuation) == MMLU_LETTERS[gold_index])


__all__ = [
    "MMLU_LETTERS",
    "exact_match",
    "first_line",
    "first_sentence",
    "freebaseqa_contains",
    "freebaseqa_exact_match",
    "lenient_match",
    "mmlu_letter_match",
    "mmlu_predicted_letter",
    "normalize_answer",
    "squash",
    "token_f1",
]
