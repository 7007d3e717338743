"""Judge reply parsers on real-looking replies: what parses, what is refused, never a silent default."""

from __future__ import annotations

import pytest

from llmkick_tasks.judge.parsing import parse_dimensions, parse_pair, parse_rating

DIMS = ("coherence", "consistency", "fluency", "relevance")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("8 7\n\nAssistant 1 gives a thorough answer, Assistant 2 misses a step.", (8.0, 7.0)),
        ("8, 7\nBoth answers are helpful.", (8.0, 7.0)),
        ("8,7", (8.0, 7.0)),
        ("(8, 7)\nExplanation follows.", (8.0, 7.0)),
        ("**8 7**\n\nThe first answer is better structured.", (8.0, 7.0)),
        ("Scores: 9 6\nAssistant 2 ignored the word limit.", (9.0, 6.0)),
        ("8/10 7/10", (8.0, 7.0)),
        ("7.5 6.5\nHalf points are fine.", (7.5, 6.5)),
        ("Assistant 1: 8\nAssistant 2: 7\n\nAssistant 1 is more precise.", (8.0, 7.0)),
        ("Assistant 1: 8, Assistant 2: 7", (8.0, 7.0)),
        ("Assistant 1 score: 9\nAssistant 2 score: 4", (9.0, 4.0)),
        (
            "Let me compare the two answers carefully.\n"
            "Assistant 1 lists five strategies; Assistant 2 three.\n"
            "\n8 6\n\nAssistant 1 is more complete.",
            (8.0, 6.0),
        ),
        ("After checking both solutions, my final scores are (9, 3).", (9.0, 3.0)),
        ("1 10", (1.0, 10.0)),
        # A judge facing an empty answer gives 0 (LLM-KICK's GPT-4 judgments): a score, not a failure.
        ("10 0\nAssistant 2 did not write anything.", (10.0, 0.0)),
        ("0 5\nAssistant 1 refused.", (0.0, 5.0)),
        # GPT-4's instruction reviews in this layout.
        ("8.5/10 for Assistant 1, 9/10 for Assistant 2\n\nBoth are good.", (8.5, 9.0)),
        ("I give 7 for Assistant 2 and 9 for Assistant 1.", (9.0, 7.0)),
    ],
)
def test_parse_pair_accepts(reply: str, expected: tuple[float, float]) -> None:
    parsed = parse_pair(reply)
    assert parsed.ok, parsed.error
    assert parsed.scores == expected


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("Both assistants did a good job.", "no pair"),
        ("8\nAssistant 2 did not answer.", "no pair"),  # one score only: missing line
        ("Assistant 1: 8\nThe other answer was off topic.", "no pair"),  # Assistant 2 missing
        ("11 7", "out of range"),
        ("11 7", "out of range [0, 10]"),
        ("8/10 for Assistant 1, 12/10 for Assistant 2", "out of range"),
        ("8/10 for Assistant 1, 9/10 for Assistant 2, no wait, 7 for Assistant 2", "conflicting"),
        ("8 -3", "no pair"),
        ("Assistant 1: 8\nAssistant 2: 7\nOn reflection, Assistant 1: 6", "conflicting"),
        # A tuple in the middle of the judge's reasoning is not a verdict.
        ("The endpoints are (2, 3) and (10, 4), so the length is 10.", "no pair"),
        ("", "no pair"),
    ],
)
def test_parse_pair_refuses(reply: str, reason: str) -> None:
    parsed = parse_pair(reply)
    assert not parsed.ok
    assert parsed.scores is None
    assert reason in parsed.error


def test_math_verdict_is_the_last_score_line() -> None:
    reply = (
        "Solving: the distance between (2, -2) and (10, 4) is sqrt(64 + 36) = 10.\n"
        "Intermediate vector:\n(8, 6)\n"
        "Assistant 1 computes 10, correct. Assistant 2 computes 8, wrong.\n"
        "(9, 2)"
    )
    assert parse_pair(reply, prefer="last").scores == (9.0, 2.0)
    assert parse_pair(reply, prefer="first").scores == (8.0, 6.0)
    with pytest.raises(ValueError):
        parse_pair(reply, prefer="middle")


def test_parse_dimensions_in_order() -> None:
    reply = "9 7\n8 7\n9 8\n8 6\n\nAssistant 2 omits the main event."
    assert parse_dimensions(reply, DIMS).scores == (9, 7, 8, 7, 9, 8, 8, 6)


def test_parse_dimensions_keeps_zero_scores() -> None:
    """LLM-KICK's GPT-4 answered ``10 0`` on every dimension when a compressed model wrote nothing."""
    assert parse_dimensions("10 0\n10 0\n10 0\n10 0", DIMS).scores == (10, 0) * 4


def test_parse_dimensions_labelled_any_order_and_prose_first() -> None:
    reply = (
        "Here are my grades.\n"
        "Relevance: 8 6\nCoherence: 9 7\nFluency: 9 8\nConsistency: 8 7\n"
        "Summary 2 is shorter but misses the outcome."
    )
    assert parse_dimensions(reply, DIMS).scores == (9, 7, 8, 7, 9, 8, 8, 6)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("9 7\n8 7\n9 8\n\nThe summaries are close.", "3 score lines"),  # a missing line
        ("9 7\n8 7\n9 8\n8 12", "out of range"),
        ("Fluency: 9 7\nCoherence: 8 7\n9 8\n8 6", "labelled 'fluency'"),  # partly labelled, wrong order
        ("Both summaries are excellent.", "0 score lines"),
    ],
)
def test_parse_dimensions_refuses(reply: str, reason: str) -> None:
    parsed = parse_dimensions(reply, DIMS)
    assert not parsed.ok
    assert reason in parsed.error


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The answer is accurate and well organized.\n\nRating: [[8]]", 8.0),
        ("Rating: [[7.5]]", 7.5),
        ("[[10]]", 10.0),
        ("Concise but correct.\nRating: 6", 6.0),
        ("Rating: 6/10", 6.0),
        ("The rating [[4]] is justified; again: [[4]]", 4.0),
        ("The assistant wrote nothing.\nRating: [[0]]", 0.0),
    ],
)
def test_parse_rating_accepts(reply: str, expected: float) -> None:
    assert parse_rating(reply).scores == (expected,)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("A decent answer overall.", "no rating"),
        ("Rating: [[10.5]]", "out of range"),
        ("Rating: [[11]]", "out of range"),
        ("First I thought [[3]], but now [[7]].", "conflicting"),
        ("I would give it 7 out of 10.", "no rating"),
    ],
)
def test_parse_rating_refuses(reply: str, reason: str) -> None:
    parsed = parse_rating(reply)
    assert not parsed.ok
    assert reason in parsed.error
