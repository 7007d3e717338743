"""Pairwise judging: a reference (Assistant 1) against the evaluated model (Assistant 2), LLM-KICK's way.

:class:`SummarizationProtocol` scores four dimensions per story, overall and per length bin;
:class:`InstructionProtocol` scores Vicuna-80 answers with the judge prompt of their category.  With
``judge_swap`` the reversed order is judged too and the two averaged (first-order position-bias cancel).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from llmkick_tasks.judge.parsing import (
    PAIR_REPLY,
    TUPLE_REPLY,
    Parsed,
    dimensions_reply,
    parse_dimensions,
    parse_pair,
)
from llmkick_tasks.judge.protocols import (
    COUNTERS,
    MODEL_FIRST,
    REFERENCE_FIRST,
    JudgeCall,
    JudgeProtocol,
    MetricSpec,
    _mean,
    counters,
    metric_suffix,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


class PairwiseProtocol(JudgeProtocol):
    """Assistant 1 vs Assistant 2 on one or more dimensions; the model is Assistant 2 (and 1 when swapped)."""

    DIMENSIONS: ClassVar[tuple[str, ...]] = ("score",)
    GROUP_FIELD: ClassVar[str] = ""
    GROUPS: ClassVar[tuple[str, ...]] = ()
    WIN_RATE: ClassVar[bool] = False

    @abstractmethod
    def template_for(self, doc: Mapping[str, Any]) -> str:
        """Template name for ``doc``."""

    @abstractmethod
    def variables(self, doc: Mapping[str, Any], answer_1: str, answer_2: str) -> dict[str, str]:
        """Template variables for ``doc`` with the two answers in display order."""

    def needs_reference(self, doc: Mapping[str, Any]) -> bool:
        """Pairwise judging always compares with a reference answer."""
        return True

    def calls(self, doc: Mapping[str, Any], response: Any, reference: str | None) -> list[JudgeCall]:
        """LLM-KICK's order (reference first), plus the reversed order with ``judge_swap``."""
        if reference is None:
            raise ValueError("pairwise judging needs a reference answer")
        template = self.template_for(doc)
        orders = [(REFERENCE_FIRST, reference, str(response))]
        if self.settings.swap:
            orders.append((MODEL_FIRST, str(response), reference))
        return [
            JudgeCall(label, template, self.judge_request(template, **self.variables(doc, first, second)))
            for label, first, second in orders
        ]

    def parse(self, doc: Mapping[str, Any], call: JudgeCall, reply: str) -> Parsed:
        """Score pairs, one per dimension."""
        if len(self.DIMENSIONS) == 1:
            return parse_pair(reply, prefer=self.prefer(doc))
        return parse_dimensions(reply, self.DIMENSIONS)

    def prefer(self, doc: Mapping[str, Any]) -> str:
        """Which score line wins when a reply holds several (see :func:`parse_pair`)."""
        return "first"

    def reply_regex(self, template: str) -> str:
        """One ``s1 s2`` line per dimension (:func:`parse_pair` / :func:`parse_dimensions` read it)."""
        return PAIR_REPLY if len(self.DIMENSIONS) == 1 else dimensions_reply(len(self.DIMENSIONS))

    def combine(self, doc: Mapping[str, Any], calls: Sequence[JudgeCall], parsed: Sequence[Parsed]) -> dict:
        """Model and reference score per dimension, averaged over the judged orders."""
        model: dict[str, list[float]] = {d: [] for d in self.DIMENSIONS}
        reference: dict[str, list[float]] = {d: [] for d in self.DIMENSIONS}
        for call, result in zip(calls, parsed, strict=True):
            assert result.scores is not None
            for i, dim in enumerate(self.DIMENSIONS):
                first, second = result.scores[2 * i], result.scores[2 * i + 1]
                model_score, reference_score = (
                    (second, first) if call.label == REFERENCE_FIRST else (first, second)
                )
                model[dim].append(model_score)
                reference[dim].append(reference_score)
        return {
            "model": {d: _mean(v) for d, v in model.items()},
            "reference": {d: _mean(v) for d, v in reference.items()},
        }

    @classmethod
    def metric_specs(cls) -> list[MetricSpec]:
        """Per dimension: overall, per group and the difference to the reference; then counters."""
        specs = []
        for dim in cls.DIMENSIONS:
            specs.append(MetricSpec(dim))
            specs.extend(MetricSpec(f"{dim}_{metric_suffix(group)}") for group in cls.GROUPS)
            specs.append(MetricSpec(f"{dim}_delta"))
        if cls.WIN_RATE:
            specs.append(MetricSpec("win_rate"))
        specs.extend(COUNTERS)
        return specs

    @classmethod
    def metrics(cls, doc: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, float]:
        """Model scores (overall and in the document's group), model - reference, win rate, counters."""
        out = counters(record)
        scores = record["scores"]
        if scores is None:
            return out
        group = metric_suffix(doc[cls.GROUP_FIELD]) if cls.GROUP_FIELD else None
        known_group = group in {metric_suffix(g) for g in cls.GROUPS}
        for dim in cls.DIMENSIONS:
            model, reference = scores["model"][dim], scores["reference"][dim]
            out[dim] = model
            if known_group:
                out[f"{dim}_{group}"] = model
            out[f"{dim}_delta"] = model - reference
        if cls.WIN_RATE:
            model, reference = scores["model"][cls.DIMENSIONS[0]], scores["reference"][cls.DIMENSIONS[0]]
            out["win_rate"] = 1.0 if model > reference else 0.5 if model == reference else 0.0
        return out


class SummarizationProtocol(PairwiseProtocol):
    """LLM-KICK in-context summarization."""

    DIMENSIONS = ("coherence", "consistency", "fluency", "relevance")
    GROUP_FIELD = "bin"
    GROUPS = ("small", "mid", "large")
    TEMPLATES = ("summarization_pairwise",)

    def template_for(self, doc: Mapping[str, Any]) -> str:
        """One template for all stories."""
        return "summarization_pairwise"

    def preflight_cases(self) -> list[tuple[dict[str, Any], Any, str | None]]:
        """One story per bin."""
        return [
            ({"article": "<article>", "bin": b, "story_id": "x"}, "<summary>", "<reference>")
            for b in self.GROUPS
        ]

    def variables(self, doc: Mapping[str, Any], answer_1: str, answer_2: str) -> dict[str, str]:
        """The article (never the highlights) and the two summaries."""
        return {"article": doc["article"], "answer_1": answer_1, "answer_2": answer_2}


VICUNA_CATEGORIES = (
    "generic", "knowledge", "roleplay", "common-sense", "fermi", "counterfactual",
    "coding", "math", "writing",
)  # fmt: skip


class InstructionProtocol(PairwiseProtocol):
    """Vicuna-80 pairwise against reference answers; judge prompt chosen by category."""

    GROUP_FIELD = "category"
    GROUPS = VICUNA_CATEGORIES
    WIN_RATE = True
    TEMPLATES = ("instruction_general", "instruction_coding", "instruction_math")
    # The prompt that asks for the judge's own solution first and the scores as a tuple at the end.
    MATH_TEMPLATE: ClassVar[str] = "instruction_math"

    def template_for(self, doc: Mapping[str, Any]) -> str:
        """``instruction_coding`` / ``instruction_math`` for those categories, else the general one."""
        category = str(doc.get("category", "")).lower()
        return {"coding": "instruction_coding", "math": "instruction_math"}.get(
            category, "instruction_general"
        )

    def preflight_cases(self) -> list[tuple[dict[str, Any], Any, str | None]]:
        """One question per judge prompt (general, coding, math)."""
        return [
            ({"question": "<question>", "category": c, "question_id": 0}, "<answer>", "<reference>")
            for c in ("generic", "coding", "math")
        ]

    def prefer(self, doc: Mapping[str, Any]) -> str:
        """The math judge solves the problem first and gives its verdict last."""
        return "last" if self.template_for(doc) == self.MATH_TEMPLATE else "first"

    def reply_regex(self, template: str) -> str:
        """The math prompt's ``(s1, s2)`` tuple, else an ``s1 s2`` line."""
        return TUPLE_REPLY if template == self.MATH_TEMPLATE else super().reply_regex(template)

    def variables(self, doc: Mapping[str, Any], answer_1: str, answer_2: str) -> dict[str, str]:
        """The question and the two answers."""
        return {"question": doc["question"], "answer_1": answer_1, "answer_2": answer_2}
