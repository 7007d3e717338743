"""Each llmkick metric on hand-written cases (llmkick_tasks.scoring and the per-task score functions)."""

from __future__ import annotations

import pytest

from llmkick_tasks import scoring
from llmkick_tasks.freebaseqa import utils as freebaseqa
from llmkick_tasks.mmlu import utils as mmlu
from llmkick_tasks.triviaqa import utils as triviaqa


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Beatles", "beatles"),
        ("  A  Tale of   Two Cities ", "tale of two cities"),
        ("an apple", "apple"),
        ("Theatre", "theatre"),  # "the" only as a word
        ("Campbell-Bannerman", "campbell bannerman"),  # punctuation becomes a space, as in TriviaQA
        ("Guns N’ Roses", "guns n roses"),
        ("“Sunset Boulevard”", "sunset boulevard"),
        ("it´s `quoted`", "it s quoted"),
        ("snake_case", "snake case"),
        ("U.S.A.", "u s"),  # "a" is an article once the dots are gone
        ("...", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, normalized: str) -> None:
    assert scoring.normalize_answer(text) == normalized


@pytest.mark.parametrize(
    ("continuation", "answer"),
    [
        (" Paris", "Paris"),
        ("\n\n  Paris\nQ: next question", "Paris"),  # leading blank lines do not hide the answer
        ("Paris\r\nmore", "Paris"),
        ("I think\nParis", "I think"),  # an answer on a later line is not the answer
        ("", ""),
        ("   \n  ", ""),
    ],
)
def test_first_line(continuation: str, answer: str) -> None:
    assert scoring.first_line(continuation) == answer


def test_first_sentence() -> None:
    assert scoring.first_sentence("Paris. It is the capital.") == "Paris."
    assert scoring.first_sentence("J. R. R. Tolkien") == "J."  # why strict EM also tries the whole line
    assert scoring.first_sentence("no full stop") == "no full stop"


class TestExactMatch:
    def test_aliases_articles_punctuation_case(self) -> None:
        aliases = ["The Beatles", "Beatles, The"]
        assert scoring.exact_match("beatles", aliases) == 1.0
        assert scoring.exact_match("The Beatles!", aliases) == 1.0
        assert scoring.exact_match("the beatles band", aliases) == 0.0

    def test_unicode_quotes(self) -> None:
        assert scoring.exact_match("Guns N' Roses", ["Guns N’ Roses"]) == 1.0
        assert scoring.exact_match('"Hamlet"', ["“Hamlet”"]) == 1.0

    def test_empty_prediction_is_wrong_even_against_an_empty_alias(self) -> None:
        assert scoring.exact_match("", ["Paris"]) == 0.0
        assert scoring.exact_match("the", ["The", "Paris"]) == 0.0  # both normalize to ""
        assert scoring.exact_match("", []) == 0.0


class TestTokenF1:
    def test_max_over_aliases(self) -> None:
        aliases = ["Sunset Boulevard", "Sunset Blvd"]
        assert scoring.token_f1("It was Sunset Boulevard", aliases) == pytest.approx(2 / 3)
        assert scoring.token_f1("Sunset Blvd", aliases) == 1.0

    def test_partial_and_disjoint(self) -> None:
        assert scoring.token_f1("Campbell", ["Henry Campbell-Bannerman"]) == pytest.approx(0.5)
        assert scoring.token_f1("Balfour", ["Henry Campbell-Bannerman"]) == 0.0

    def test_repeated_tokens_count_once_per_occurrence(self) -> None:
        # pred [new, new, york], gold [new, york]: common 2 -> P 2/3, R 1 -> F1 0.8
        assert scoring.token_f1("new new york", ["New York"]) == pytest.approx(0.8)

    def test_empty_prediction(self) -> None:
        assert scoring.token_f1("", ["Paris"]) == 0.0
        assert scoring.token_f1("the", ["Paris"]) == 0.0


class TestLenientMatch:
    def test_alias_in_prediction_and_prediction_in_alias(self) -> None:
        assert scoring.lenient_match("It was Sunset Boulevard", ["Sunset Boulevard"]) == 1.0
        assert scoring.lenient_match("Campbell", ["Henry Campbell-Bannerman"]) == 1.0
        assert scoring.lenient_match("Balfour", ["Henry Campbell-Bannerman"]) == 0.0

    def test_empty_prediction_is_wrong(self) -> None:
        # The original: normalize("") in normalize(alias) is True, so an empty answer scored 1.
        assert scoring.lenient_match("", ["Paris"]) == 0.0
        assert scoring.lenient_match(" . ", ["Paris"]) == 0.0
        assert scoring.lenient_match("The", ["The Who"]) == 0.0  # normalizes to ""

    def test_empty_alias_matches_nothing(self) -> None:
        assert scoring.lenient_match("Paris", ["The", "London"]) == 0.0


class TestFreebaseQAContains:
    def test_squashing(self) -> None:
        assert scoring.squash(" Neil  Arm\nstrong ") == "neilarmstrong"
        assert scoring.freebaseqa_contains(" NeilArmstrong was first", ["Neil Armstrong"]) == 1.0
        assert scoring.freebaseqa_contains(" neil armstrong", ["NeilArmstrong"]) == 1.0

    def test_any_alias(self) -> None:
        assert scoring.freebaseqa_contains(" it is the Bard", ["William Shakespeare", "the Bard"]) == 1.0

    def test_answer_on_a_later_line_counts(self) -> None:
        assert scoring.freebaseqa_contains(" a painter\nLeonardo da Vinci", ["Leonardo da Vinci"]) == 1.0

    def test_empty(self) -> None:
        assert scoring.freebaseqa_contains("", ["Mali"]) == 0.0
        assert scoring.freebaseqa_contains(" Mali", ["", "  "]) == 0.0

    def test_alias_in_question_does_not_leak(self) -> None:
        # The original decoded prompt + answer: "...features Hamlet, Prince of Denmark? ... Macbeth"
        # contains "hamlet".  Only the continuation is scored now.
        question = "Which Shakespeare play features Hamlet, Prince of Denmark?"
        assert freebaseqa.process_results({"question": question, "answers": ["Hamlet"]}, [" Macbeth"]) == {
            "contains": 0.0,
            "exact_match": 0.0,
        }
        # and the same alias in the continuation is found
        assert freebaseqa.score(" Hamlet", ["Hamlet"]) == {"contains": 1.0, "exact_match": 1.0}


class TestFreebaseQAExactMatch:
    @pytest.mark.parametrize(
        ("continuation", "expected"),
        [
            (" Paris", 1.0),
            (" Paris.", 1.0),
            (" Paris. It is the capital of France.", 1.0),  # first sentence
            (" the city of Paris", 0.0),
            ("\nParis", 1.0),  # leading whitespace is not an answer
            (" I do not know\nParis", 0.0),  # answer on a later line
            ("", 0.0),
        ],
    )
    def test_first_line_or_first_sentence(self, continuation: str, expected: float) -> None:
        assert scoring.freebaseqa_exact_match(continuation, ["Paris"]) == expected

    def test_inner_full_stops_keep_the_whole_line(self) -> None:
        assert scoring.freebaseqa_exact_match(" J. R. R. Tolkien", ["J. R. R. Tolkien"]) == 1.0


class TestMMLULetters:
    @pytest.mark.parametrize(
        ("continuation", "letter"),
        [("B", "B"), (" B", "B"), ("B.", "B"), (" C)", "C"), ("D:", "D"), (" A\n", "A")],
    )
    def test_letters(self, continuation: str, letter: str) -> None:
        assert scoring.mmlu_predicted_letter(continuation) == letter

    @pytest.mark.parametrize("continuation", ["", "\n", " b", "Bob", "E", "B. Paris", "AB", " (A"])
    def test_not_letters(self, continuation: str) -> None:
        assert scoring.mmlu_predicted_letter(continuation) is None

    def test_match_and_process_results(self) -> None:
        assert scoring.mmlu_letter_match(" C", 2) == 1.0
        assert scoring.mmlu_letter_match(" C", 1) == 0.0
        assert mmlu.process_generative({"answer": 1}, [" B"]) == {"acc": 1.0, "letter_rate": 1.0}
        assert mmlu.process_generative({"answer": 1}, [" A"]) == {"acc": 0.0, "letter_rate": 1.0}
        assert mmlu.process_generative({"answer": 1}, ["\n"]) == {"acc": 0.0, "letter_rate": 0.0}


def test_triviaqa_scores_the_first_line_only() -> None:
    aliases = ["Sunset Boulevard"]
    assert triviaqa.score(" Sunset Boulevard\nQ: Who wrote it?\nA: Andrew", aliases) == {
        "exact_match": 1.0,
        "f1": 1.0,
        "lenient_match": 1.0,
    }
    assert triviaqa.score(" I am not sure.\nSunset Boulevard", aliases) == {
        "exact_match": 0.0,
        "f1": 0.0,
        "lenient_match": 0.0,
    }
    assert triviaqa.process_results({"aliases": aliases}, ["\n"]) == {
        "exact_match": 0.0,
        "f1": 0.0,
        "lenient_match": 0.0,
    }
