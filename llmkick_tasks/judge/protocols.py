"""Judging protocols: which judge requests a document needs, how replies become scores and metrics.

* :class:`SummarizationProtocol` - pairwise, four dimensions (coherence, consistency, fluency, relevance),
  Assistant 1 = reference summary, Assistant 2 = the evaluated model; metrics overall and per length bin.
* :class:`InstructionProtocol` - pairwise Vicuna-80 against reference answers, judge prompt by category
  (general / coding / math); metrics overall and per category.
* :class:`MTBenchProtocol` - single-answer grading 1-10 of both turns of MT-Bench, reference-guided for
  math, reasoning and coding; metrics overall, per turn and per category.

With ``judge_swap`` a pairwise protocol also judges the reversed order and averages the two, which cancels
the judge's position bias to first order.  A document counts in the means only when every one of its
judge replies parsed; otherwise it adds its failed replies to ``judge_unparsed`` and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from llmkick_tasks.judge.client import ChatRequest
from llmkick_tasks.judge.config import JudgeSettings
from llmkick_tasks.judge.parsing import Parsed, parse_dimensions, parse_pair, parse_rating
from llmkick_tasks.judge.templates import TemplateSet

UNPARSED = "judge_unparsed"
# Model answers that are empty or whitespace: judged like any other (as in the paper), and counted.
EMPTY = "empty_answers"
REFERENCE_FIRST = "reference_first"  # Assistant 1 = reference, Assistant 2 = model (LLM-KICK's order)
MODEL_FIRST = "model_first"


class JsonRecord(dict):
    """A dict whose ``str()`` is JSON: lm-eval writes responses into its samples files with ``str()``."""

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)


def count(items: Sequence[float]) -> float:
    """Aggregation for counters such as ``judge_unparsed``: the total, not the mean."""
    return float(sum(items))


def metric_suffix(name: str) -> str:
    """``common-sense`` -> ``common_sense``: a group name usable in a metric name."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


@dataclass(frozen=True)
class MetricSpec:
    """One entry of the task's ``metric_list``."""

    name: str
    higher_is_better: bool = True
    aggregation: str = "mean"  # or "count"

    def config(self) -> dict[str, Any]:
        """The ``metric_list`` entry lm-eval expects."""
        aggregation: Any = count if self.aggregation == "count" else "mean"
        return {"metric": self.name, "aggregation": aggregation, "higher_is_better": self.higher_is_better}


@dataclass(frozen=True)
class JudgeCall:
    """One judge request of a document, with what it judges."""

    label: str  # reference_first / model_first / turn1 / turn2
    template: str
    request: ChatRequest


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def empty_answers(response: Any) -> int:
    """How many of the model's answers in ``response`` are empty or whitespace-only."""
    if isinstance(response, Mapping) and "turns" in response:
        return sum(not str(turn).strip() for turn in turns_of(response))
    return int(not str(response if response is not None else "").strip())


COUNTERS = (
    MetricSpec(UNPARSED, higher_is_better=False, aggregation="count"),
    MetricSpec(EMPTY, higher_is_better=False, aggregation="count"),
)


def counters(record: Mapping[str, Any]) -> dict[str, float]:
    """The counter metrics of a judged record (every document reports them)."""
    return {UNPARSED: float(record["unparsed"]), EMPTY: float(record.get(EMPTY, 0))}


class JudgeProtocol(ABC):
    """How one judged task talks to the judge."""

    TEMPLATES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: JudgeSettings, templates: TemplateSet) -> None:
        self.settings = settings
        self.templates = templates
        self.preflight()

    def preflight(self) -> None:
        """Render every judge prompt this protocol may send once, with placeholder values.

        Runs when the protocol is built: before the data is loaded, the model generates or any request is
        paid for (and before the model is loaded, via :mod:`.preflight`).  A missing, malformed,
        undefined-variable or sandbox-blocked template raises :class:`TemplateError` naming the file.
        """
        self.templates.check(self.TEMPLATES)
        for doc, response, reference in self.preflight_cases():
            self.calls(doc, response, reference)

    def preflight_cases(self) -> list[tuple[dict[str, Any], Any, str | None]]:
        """(document, response, reference) placeholders that reach every template of the protocol."""
        return []

    def describe(self) -> dict[str, Any]:
        """For the results: the protocol, the sha256 of every template file used, the judge sampling."""
        files = {}
        for name in self.TEMPLATES:
            for path in self.templates.files(name):
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        sampling = {"temperature": self.settings.temperature, "max_tokens": self.settings.max_tokens}
        return {"protocol": self.settings.protocol, "files": files, "sampling": sampling}

    def judge_request(self, template: str, **variables: str) -> ChatRequest:
        """A judge request from template ``template``."""
        messages = self.templates.messages(template, **variables)
        return ChatRequest.build(
            self.settings.model,
            messages,
            self.settings.temperature,
            self.settings.max_tokens,
            protocol=self.settings.protocol,
        )

    def reference_request(self, prompt: str) -> ChatRequest:
        """A request to the reference model answering ``prompt`` (the prompt the evaluated model saw)."""
        return ChatRequest.build(
            self.settings.reference_model,
            [{"role": "user", "content": prompt}],
            self.settings.reference_temperature,
            self.settings.reference_max_tokens,
            protocol="reference",  # the reference answer does not depend on the judging protocol
        )

    def needs_reference(self, doc: Mapping[str, Any]) -> bool:
        """True when the judge prompt of ``doc`` needs a reference answer (generated if ``doc`` lacks one)."""
        return False

    @abstractmethod
    def metric_specs(self) -> list[MetricSpec]:
        """Every metric :meth:`metrics` may return."""

    @abstractmethod
    def calls(self, doc: Mapping[str, Any], response: Any, reference: str | None) -> list[JudgeCall]:
        """The judge requests for one document."""

    @abstractmethod
    def parse(self, doc: Mapping[str, Any], call: JudgeCall, reply: str) -> Parsed:
        """Scores from the reply to ``call``."""

    @abstractmethod
    def combine(
        self, doc: Mapping[str, Any], calls: Sequence[JudgeCall], parsed: Sequence[Parsed]
    ) -> dict | None:
        """The document's scores from all parsed replies (``None`` if any failed)."""

    @classmethod
    @abstractmethod
    def metrics(cls, doc: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, float]:
        """lm-eval ``process_results``: per-document metric values from a judged record (class-level)."""

    def record(
        self,
        doc: Mapping[str, Any],
        response: Any,
        reference: str | None,
        reference_source: str | None,
        calls: Sequence[JudgeCall],
        replies: Sequence[str],
    ) -> dict[str, Any]:
        """The judged record of one document (lm-eval logs it as the filtered response)."""
        parsed = [self.parse(doc, call, reply) for call, reply in zip(calls, replies, strict=True)]
        return JsonRecord(
            {
                "response": response,
                "reference": reference,
                "reference_source": reference_source,
                "judgments": [
                    {
                        "label": call.label,
                        "template": call.template,
                        "reply": reply,
                        "scores": list(p.scores) if p.ok else None,
                        "error": p.error,
                    }
                    for call, reply, p in zip(calls, replies, parsed, strict=True)
                ],
                "scores": self.combine(doc, calls, parsed) if all(p.ok for p in parsed) else None,
                "unparsed": sum(not p.ok for p in parsed),
                EMPTY: empty_answers(response),
            }
        )


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

    def metric_specs(self) -> list[MetricSpec]:
        """Per dimension: overall, per group and the difference to the reference; then counters."""
        specs = []
        for dim in self.DIMENSIONS:
            specs.append(MetricSpec(dim))
            specs.extend(MetricSpec(f"{dim}_{metric_suffix(group)}") for group in self.GROUPS)
            specs.append(MetricSpec(f"{dim}_delta"))
        if self.WIN_RATE:
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
        return "last" if self.template_for(doc) == "instruction_math" else "first"

    def variables(self, doc: Mapping[str, Any], answer_1: str, answer_2: str) -> dict[str, str]:
        """The question and the two answers."""
        return {"question": doc["question"], "answer_1": answer_1, "answer_2": answer_2}


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

    def metric_specs(self) -> list[MetricSpec]:
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


def turns_of(response: Any) -> list[str]:
    """The model's answers of a two-turn response record (``{"turns": [a1, a2], ...}``)."""
    if isinstance(response, Mapping) and isinstance(response.get("turns"), Sequence):
        turns = [str(t) for t in response["turns"]]
        if len(turns) == 2:
            return turns
    raise TypeError(
        f"expected a two-turn response record {{'turns': [a1, a2]}}, got {type(response).__name__}"
    )


def describe_judge(settings: JudgeSettings, protocol: JudgeProtocol) -> dict[str, Any]:
    """What the results record about the judge: settings (no key), protocol, file sha256s, the sampling sent.

    The sampling is the protocol's (``paper`` / ``fastchat`` use their release files' unless given), so the
    settings' own temperature / max_tokens are left out rather than recorded next to different values.
    """
    described = {k: v for k, v in settings.describe().items() if k not in ("temperature", "max_tokens")}
    return {**described, **protocol.describe()}


# The value of ``llmkick_judged`` in a judged task's YAML metadata: which protocol judges it.
PROTOCOL_CLASSES: dict[str, type[JudgeProtocol]] = {
    "summarization": SummarizationProtocol,
    "instruction": InstructionProtocol,
    "mtbench": MTBenchProtocol,
}


# judge_protocol values each kind of task accepts (the first is the default).
PROTOCOLS_BY_KIND = {
    "summarization": ("llmkick", "paper"),
    "instruction": ("llmkick", "paper"),
    "mtbench": ("llmkick", "fastchat"),
}


def make_protocol(
    kind: str | type[JudgeProtocol],
    settings: JudgeSettings,
    metadata: Mapping[str, Any] | None = None,
    task: str = "this task",
) -> JudgeProtocol:
    """The protocol judging a task of ``kind`` (a :data:`PROTOCOL_CLASSES` name or class) under
    ``settings.protocol``, with every judge prompt rendered once (see :meth:`JudgeProtocol.preflight`).

    ``metadata`` locates the release files of the ``paper`` / ``fastchat`` protocols (the data dir).
    """
    from llmkick_tasks.judge import release_protocols as release  # imports this module
    from llmkick_tasks.judge.config import JudgeConfigError

    if not isinstance(kind, str):
        kind = next(name for name, cls in PROTOCOL_CLASSES.items() if issubclass(kind, cls))
    allowed = PROTOCOLS_BY_KIND[kind]
    if settings.protocol not in allowed:
        raise JudgeConfigError(
            f"{task}: judge_protocol={settings.protocol!r} does not apply to this task; it accepts "
            f"{', '.join(allowed)} (paper: summarization and Vicuna-80; fastchat: MT-Bench)"
        )
    templates = TemplateSet(settings.templates_dir)
    if settings.protocol == "paper":
        cls = (
            release.PaperSummarizationProtocol
            if kind == "summarization"
            else release.PaperInstructionProtocol
        )
        return cls(settings, templates, metadata)
    if settings.protocol == "fastchat":
        return release.FastChatMTBenchProtocol(settings, templates, metadata)
    return PROTOCOL_CLASSES[kind](settings, templates)
