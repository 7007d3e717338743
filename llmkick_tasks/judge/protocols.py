"""Judging protocols: which judge requests a document needs, how replies become scores and metrics.

This module holds what every protocol shares (:class:`JudgeProtocol`, metric specs, counters); the
protocols themselves live in ``pairwise.py`` and ``single_answer.py``, and ``protocol_choice.py`` picks one
for a task and a ``judge_protocol``:

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
from typing import TYPE_CHECKING, Any, ClassVar

from llmkick_tasks.judge.client import ChatRequest
from llmkick_tasks.judge.knobs import REPLY_REGEX

if TYPE_CHECKING:
    from llmkick_tasks.judge.config import JudgeSettings
    from llmkick_tasks.judge.parsing import Parsed
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


def turns_of(response: Any) -> list[str]:
    """The model's answers of a two-turn response record (``{"turns": [a1, a2], ...}``)."""
    if isinstance(response, Mapping) and isinstance(response.get("turns"), Sequence):
        turns = [str(t) for t in response["turns"]]
        if len(turns) == 2:
            return turns
    raise TypeError(
        f"expected a two-turn response record {{'turns': [a1, a2]}}, got {type(response).__name__}"
    )


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

    @abstractmethod
    def reply_regex(self, template: str) -> str:
        """The full-match regex of a reply to ``template`` that :meth:`parse` reads (from :mod:`.parsing`)."""

    def constraint(self, template: str) -> str | None:
        """The reply regex a request of ``template`` carries: only with ``judge_reply_format=regex``."""
        return self.reply_regex(template) if self.settings.reply_format == REPLY_REGEX else None

    def judge_request(self, template: str, **variables: str) -> ChatRequest:
        """A judge request from template ``template``."""
        messages = self.templates.messages(template, **variables)
        return ChatRequest.build(
            self.settings.model,
            messages,
            self.settings.temperature,
            self.settings.max_tokens,
            protocol=self.settings.protocol,
            reply_regex=self.constraint(template),
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

    @classmethod
    @abstractmethod
    def metric_specs(cls) -> list[MetricSpec]:
        """Every metric :meth:`metrics` may return (class-level: a task declares them before any judge)."""

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


def describe_judge(settings: JudgeSettings, protocol: JudgeProtocol) -> dict[str, Any]:
    """What the results record about the judge: settings (no key), protocol, file sha256s, the sampling sent.

    The sampling is the protocol's (``paper`` / ``fastchat`` use their release files' unless given), so the
    settings' own temperature / max_tokens are left out rather than recorded next to different values.
    """
    described = {k: v for k, v in settings.describe().items() if k not in ("temperature", "max_tokens")}
    return {**described, **protocol.describe()}
