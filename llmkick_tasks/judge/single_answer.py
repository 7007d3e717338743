"""Single-answer grading: MT-Bench's two turns, each scored 1-10 on its own, reference-guided for math,
reasoning and coding; metrics overall, per turn and per category.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmkick_tasks.judge.parsing import RATING_REPLY, Parsed, parse_rating
from llmkick_tasks.judge.protocols import (
    COUNTERS,
    JudgeCall,
    JudgeProtocol,
    MetricSpec,
    counters,
    metric_suffix,
    turns_of,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


MTBENCH_CATEGORIES = (
    "writing",
    "roleplay",
    "reasoning",
    "math",
    "coding",
    "extraction",
    "stem",
    "humanities",
)
# Categories whose questions have one right answer: the judge sees a reference answer (as in MT-Bench).
MTBENCH_REFERENCE_CATEGORIES = ("math", "reasoning", "coding")


class MTBenchProtocol(JudgeProtocol):
    """MT-Bench single-answer grading of both turns."""

    TEMPLATES = (
        "mtbench_single",
        "mtbench_single_reference",
        "mtbench_single_turn2",
        "mtbench_single_turn2_reference",
    )

    def preflight_cases(self) -> list[tuple[dict[str, Any], Any, str | None]]:
        """A conversation without and one with reference answers."""
        base = {"question_id": 0, "turn_1": "<question 1>", "turn_2": "<question 2>"}
        answers = {"turns": ["<answer 1>", "<answer 2>"]}
        return [
            ({**base, "category": "writing", "reference_1": None, "reference_2": None}, answers, None),
            ({**base, "category": "math", "reference_1": "<ref 1>", "reference_2": "<ref 2>"}, answers, None),
        ]

    def _uses_reference(self, doc: Mapping[str, Any]) -> bool:
        return (
            str(doc.get("category")) in MTBENCH_REFERENCE_CATEGORIES
            and bool(doc.get("reference_1"))
            and bool(doc.get("reference_2"))
        )

    def calls(self, doc: Mapping[str, Any], response: Any, reference: str | None) -> list[JudgeCall]:
        """One request per turn; the turn-2 judge sees the whole conversation."""
        answers = turns_of(response)
        variables = {
            "question_1": doc["turn_1"],
            "question_2": doc["turn_2"],
            "answer_1": answers[0],
            "answer_2": answers[1],
        }
        suffix = ""
        if self._uses_reference(doc):
            variables |= {"reference_1": doc["reference_1"], "reference_2": doc["reference_2"]}
            suffix = "_reference"
        first, second = f"mtbench_single{suffix}", f"mtbench_single_turn2{suffix}"
        return [
            JudgeCall("turn1", first, self.judge_request(first, **variables)),
            JudgeCall("turn2", second, self.judge_request(second, **variables)),
        ]

    def parse(self, doc: Mapping[str, Any], call: JudgeCall, reply: str) -> Parsed:
        """A ``[[rating]]``."""
        return parse_rating(reply)

    def reply_regex(self, template: str) -> str:
        """``Rating: [[n]]`` (what every MT-Bench judge prompt ends with) first."""
        return RATING_REPLY

    def combine(self, doc: Mapping[str, Any], calls: Sequence[JudgeCall], parsed: Sequence[Parsed]) -> dict:
        """Rating per turn."""
        return {call.label: result.scores[0] for call, result in zip(calls, parsed, strict=True)}  # type: ignore[index]

    def record(
        self,
        doc: Mapping[str, Any],
        response: Any,
        reference: str | None,
        reference_source: str | None,
        calls: Sequence[JudgeCall],
        replies: Sequence[str],
    ) -> dict[str, Any]:
        """As the base record, plus per-turn ratings (kept even when the other turn failed to parse)."""
        record = super().record(doc, response, reference, reference_source, calls, replies)
        record["turn_scores"] = {
            judgment["label"]: judgment["scores"][0] for judgment in record["judgments"] if judgment["scores"]
        }
        return record

    @classmethod
    def metric_specs(cls) -> list[MetricSpec]:
        """Overall, per turn, per category; then counters."""
        return [
            MetricSpec("score"),
            MetricSpec("score_turn1"),
            MetricSpec("score_turn2"),
            *(MetricSpec(f"score_{metric_suffix(c)}") for c in MTBENCH_CATEGORIES),
            *COUNTERS,
        ]

    @classmethod
    def metrics(cls, doc: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, float]:
        """``score`` (mean of both turns) only when both parsed; a parsed turn always counts for its turn."""
        out = counters(record)
        turns = record.get("turn_scores") or {}
        if "turn1" in turns:
            out["score_turn1"] = turns["turn1"]
        if "turn2" in turns:
            out["score_turn2"] = turns["turn2"]
        if "turn1" in turns and "turn2" in turns:
            both = (turns["turn1"] + turns["turn2"]) / 2
            out["score"] = both
            category = metric_suffix(doc.get("category", ""))
            if category in {metric_suffix(c) for c in MTBENCH_CATEGORIES}:
                out[f"score_{category}"] = both
        return out
