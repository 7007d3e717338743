"""Strict parsers for judge replies.

A parser either returns the scores it is sure of, or a reason why it is not; it never guesses and never
substitutes a default.  Callers count failures as ``judge_unparsed`` and leave them out of every mean.

Scores are read as the judge gives them, on [0, 10]: the prompts ask for 1-10, but a judge facing an
assistant that wrote nothing answers 0 (GPT-4 did so throughout LLM-KICK's released judgments, and the
paper's means include those zeros), so a 0 is a score, not a failure.  A number outside [0, 10] makes the
whole reply unparsable (it is not clipped).  Accepted layouts:

* pair of scores (Assistant 1 first): a line holding only the two numbers, ``8 7``, ``8, 7``, ``(8, 7)``,
  ``8/10 7/10``, optionally after a label (``Scores: 8 7``) and markdown emphasis; or labelled lines
  ``Assistant 1: 8`` / ``Assistant 2: 7`` (also on one line), or ``8.5/10 for Assistant 1, 9/10 for
  Assistant 2`` (GPT-4's instruction reviews); or a tuple at the end of a line that names the
  scores (``My final scores are (8, 7).``).  Prose may precede the scores.
* four dimensions (summarization): the first four score-pair lines, in the template's order, or labelled
  by dimension (``Coherence: 8 7``) in any order.
* single rating (MT-Bench): ``[[7]]`` (also ``Rating: [[7]]``), or a line ``Rating: 7`` / ``Rating: 7/10``.

Each layout a judge prompt asks for also has a reply regex here (:data:`PAIR_REPLY`,
:data:`TUPLE_REPLY`, :func:`dimensions_reply`, :data:`RATING_REPLY`): the language a constrained judge
(``judge_reply_format=regex``) may answer in.  The scores come first, as whole numbers 1-10, then at most
one bounded line of explanation without a digit (so it can never add or change a score).  Every string
such a regex matches in full parses, with the parser next to it, to the scores it starts with; the tests
enumerate both directions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


SCORE_MIN = 0.0
SCORE_MAX = 10.0

_NUMBER = r"(\d{1,3}(?:\.\d+)?)(?:\s*/\s*10)?"
# A whole line that is a score pair, optionally labelled ("Coherence:", "Scores -").
_PAIR_LINE = re.compile(
    rf"^(?:(?P<label>[A-Za-z][A-Za-z ()'_-]*?)\s*[:=\-–]\s*)?"
    rf"\(?\s*{_NUMBER}\s*(?:[,;]\s*|\s+)(?:and\s+)?{_NUMBER}\s*\)?\s*\.?$"
)
_LABELLED = re.compile(
    rf"\bassistant\s*(?P<who>[12])\b\s*(?:'s)?\s*(?:score|rating)?\s*(?::|=|-|–|\bis\b)\s*\**\s*{_NUMBER}",
    re.IGNORECASE,
)
# "8.5/10 for Assistant 1": the score before the assistant it belongs to.
_SCORE_FOR = re.compile(rf"{_NUMBER}\s+(?:points?\s+)?for\s+assistant\s*(?P<who>[12])\b", re.IGNORECASE)
_TUPLE_AT_END = re.compile(rf"\(\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\)\s*\.?$")
_SCORE_WORDS = re.compile(r"\b(scores?|ratings?|verdict|final)\b", re.IGNORECASE)
_BRACKET_RATING = re.compile(r"\[\[\s*(\d{1,3}(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]")
_RATING_LINE = re.compile(
    rf"^\s*(?:overall\s+)?rating\s*[:=]\s*\**\s*{_NUMBER}\s*\**\s*\.?\s*$", re.IGNORECASE
)
_DECORATION = "*_`#>"

# Constrained replies (see the module docstring): plain regex syntax that vLLM's structured-output backends
# and Python's ``re`` read alike.  The explanation holds no digit and no newline, and is bounded: a small
# judge given a free tail rambles until max_tokens.
_SCORE_REPLY = r"([1-9]|10)"
_EXPLANATION_REPLY = r"(\n\n[^0-9\n]{1,300})?"
#: One line ``s1 s2`` (Assistant 1 first), then an optional explanation: read by :func:`parse_pair`.
PAIR_REPLY = rf"{_SCORE_REPLY} {_SCORE_REPLY}{_EXPLANATION_REPLY}"
#: One line ``(s1, s2)``, a Python tuple, then an optional explanation: read by :func:`parse_pair`.
TUPLE_REPLY = rf"\({_SCORE_REPLY}, {_SCORE_REPLY}\){_EXPLANATION_REPLY}"
#: ``Rating: [[n]]``, then an optional explanation: read by :func:`parse_rating`.
RATING_REPLY = rf"Rating: \[\[{_SCORE_REPLY}\]\]{_EXPLANATION_REPLY}"


def dimensions_reply(count: int) -> str:
    """``count`` lines ``s1 s2`` (one per dimension, in order), then an optional explanation: read by
    :func:`parse_dimensions`.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    pair = rf"{_SCORE_REPLY} {_SCORE_REPLY}"
    return "\n".join([pair] * count) + _EXPLANATION_REPLY


@dataclass(frozen=True)
class Parsed:
    """Scores read from a reply, or the reason none could be read."""

    scores: tuple[float, ...] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the reply gave usable scores."""
        return self.scores is not None


def _fail(reason: str) -> Parsed:
    return Parsed(None, reason)


def _clean(line: str) -> str:
    """A line without surrounding whitespace, markdown emphasis/heading marks and a list bullet."""
    line = line.strip().strip(_DECORATION).strip()
    if line[:2] in ("- ", "* ", "• "):
        line = line[2:].strip().strip(_DECORATION).strip()
    return line


def _in_range(values: Sequence[float]) -> bool:
    return all(SCORE_MIN <= value <= SCORE_MAX for value in values)


def _pair_lines(reply: str) -> list[tuple[str | None, tuple[float, float]]]:
    """All lines that consist of a score pair, in order, with their label (lower-case) if any."""
    found = []
    for raw in reply.splitlines():
        match = _PAIR_LINE.match(_clean(raw))
        if match:
            label = match.group("label")
            found.append((label.strip().lower() if label else None, (float(match[2]), float(match[3]))))
    return found


def parse_pair(reply: str, *, prefer: str = "first") -> Parsed:
    """Scores (Assistant 1, Assistant 2) from a pairwise judge reply.

    Args:
        reply: the judge's text.
        prefer: which score line counts when several appear, ``"first"`` (protocol: the reply starts with
            the scores) or ``"last"`` (math: the verdict follows the judge's own solution).
    """
    if prefer not in ("first", "last"):
        raise ValueError(f"prefer must be 'first' or 'last', got {prefer!r}")
    lines = _pair_lines(reply)
    if lines:
        _, pair = lines[0] if prefer == "first" else lines[-1]
        return Parsed(pair) if _in_range(pair) else _fail(f"score out of range [0, 10]: {pair}")

    labelled: dict[str, set[float]] = {"1": set(), "2": set()}
    for match in _LABELLED.finditer(reply):
        labelled[match["who"]].add(float(match[2]))
    for match in _SCORE_FOR.finditer(reply):
        labelled[match["who"]].add(float(match[1]))
    if labelled["1"] and labelled["2"]:
        if len(labelled["1"]) > 1 or len(labelled["2"]) > 1:
            return _fail("conflicting labelled scores for one assistant")
        pair = (labelled["1"].pop(), labelled["2"].pop())
        return Parsed(pair) if _in_range(pair) else _fail(f"score out of range [0, 10]: {pair}")

    tuples = []
    for raw in reply.splitlines():
        line = _clean(raw)
        match = _TUPLE_AT_END.search(line)
        if match and _SCORE_WORDS.search(line[: match.start()]):
            tuples.append((float(match[1]), float(match[2])))
    if tuples:
        pair = tuples[0] if prefer == "first" else tuples[-1]
        return Parsed(pair) if _in_range(pair) else _fail(f"score out of range [0, 10]: {pair}")
    return _fail("no pair of scores found")


def parse_dimensions(reply: str, dimensions: Sequence[str]) -> Parsed:
    """Per-dimension score pairs, flattened ``(d1_a1, d1_a2, d2_a1, d2_a2, ...)`` in ``dimensions`` order."""
    lines = _pair_lines(reply)
    if len(lines) < len(dimensions):
        return _fail(f"{len(lines)} score lines found, {len(dimensions)} needed")
    wanted = [d.lower() for d in dimensions]
    by_label: dict[str, tuple[float, float]] = {}
    for label, pair in lines:
        if label is None:
            continue
        names = [d for d in wanted if label.startswith(d[:5]) or d in label]
        if len(names) == 1 and names[0] not in by_label:
            by_label[names[0]] = pair
    if len(by_label) == len(wanted):
        pairs = [by_label[d] for d in wanted]  # every dimension labelled: order does not matter
    else:
        pairs = [pair for _, pair in lines[: len(wanted)]]
        labels = [label for label, _ in lines[: len(wanted)]]
        for position, label in enumerate(labels):
            if (
                label is not None
                and any(d[:5] in label for d in wanted)
                and wanted[position][:5] not in label
            ):
                return _fail(
                    f"score line {position + 1} is labelled {label!r}, expected {wanted[position]!r}"
                )
    flat = tuple(score for pair in pairs for score in pair)
    return Parsed(flat) if _in_range(flat) else _fail(f"score out of range [0, 10]: {pairs}")


def parse_rating(reply: str) -> Parsed:
    """A rating on [0, 10]: ``[[n]]`` anywhere, else a ``Rating: n`` line; several different ones fail."""
    values = {float(v) for v in _BRACKET_RATING.findall(reply)}
    if not values:
        values = {float(m[1]) for m in map(_RATING_LINE.match, map(_clean, reply.splitlines())) if m}
    if not values:
        return _fail("no rating found (expected [[n]])")
    if len(values) > 1:
        return _fail(f"conflicting ratings {sorted(values)}")
    (value,) = values
    return Parsed((value,)) if _in_range([value]) else _fail(f"rating out of range [0, 10]: {value}")
