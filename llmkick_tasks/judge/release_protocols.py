"""The published judge protocols, read at run time from their release files (never copied into llmkick).

* ``judge_protocol=paper`` - LLM-KICK's own judge for summarization and Vicuna-80: ``prompt.jsonl`` (per
  category: ``system_prompt``, ``prompt_template`` with ``{question}``, ``{answer_1}``, ``{answer_2}`` and
  ``{prompt}`` filled from ``defaults``) and ``reviewer.jsonl`` (per category: ``metadata.temperature``,
  ``metadata.max_tokens``).  Categories: the length bins ``small``/``mid``/``large`` (summarization);
  ``general``/``coding``/``math`` (instruction following).
* ``judge_protocol=fastchat`` - FastChat's MT-Bench single-answer grading, ``judge_prompts.jsonl``:
  ``single-v1`` / ``single-math-v1`` for the first turn, their ``-multi-turn`` forms for the second,
  reference answers for math, reasoning and coding, ``[[rating]]``, temperature 0 and 2048 tokens as
  FastChat's ``gen_judgment.py``.

Files come from the data dir in their release layouts (registered with :mod:`llmkick_tasks.data_dir`),
else from their canonical public locations (pinned, downloaded once into the ``datasets`` cache).  Each
request is the release's system prompt and its template filled in, byte for byte.  Templates use Python's
``{name}`` fields, rendered by a sandboxed formatter that allows only plain fields named by the protocol
(no attribute or index access, conversions or format specs), so a template cannot reach Python objects.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkick_tasks.data_dir import download_file, layout_error, resolve_data_dir
from llmkick_tasks.judge import data as _registers_layouts  # noqa: F401 - the layouts errors show
from llmkick_tasks.judge.client import ChatRequest
from llmkick_tasks.judge.pairwise import InstructionProtocol, SummarizationProtocol
from llmkick_tasks.judge.protocols import JudgeCall, turns_of
from llmkick_tasks.judge.single_answer import MTBenchProtocol
from llmkick_tasks.judge.templates import TemplateError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmkick_tasks.judge.config import JudgeSettings


_LLMKICK = "https://raw.githubusercontent.com/VITA-Group/llm-kick/37f2122db0a26d53a26dc35a73d4a24fffdf5c45"
_FASTCHAT = "https://raw.githubusercontent.com/lm-sys/FastChat/main/fastchat/llm_judge/data"

# (benchmark folder in the data dir, path inside it, canonical URL)
PAPER_SUMMARIZATION = (
    ("llmkick_judge", "in-context_summarization/json_utils/prompt.jsonl"),
    ("llmkick_judge", "in-context_summarization/json_utils/reviewer.jsonl"),
)
PAPER_INSTRUCTION = (
    ("llmkick_judge", "mt_conversation/table/prompt.jsonl"),
    ("llmkick_judge", "mt_conversation/table/reviewer.jsonl"),
)
FASTCHAT_MTBENCH = (("mt_bench", "judge_prompts.jsonl"),)
_RELEASE_PATHS = (
    "in-context_summarization/json_utils/prompt.jsonl",
    "in-context_summarization/json_utils/reviewer.jsonl",
    "mt_conversation/table/prompt.jsonl",
    "mt_conversation/table/reviewer.jsonl",
)
CANONICAL = {path: f"{_LLMKICK}/{path}" for path in _RELEASE_PATHS} | {
    "judge_prompts.jsonl": f"{_FASTCHAT}/judge_prompts.jsonl"
}


# FastChat's gen_judgment.py samples the judge greedily with a 2048-token budget.
FASTCHAT_TEMPERATURE = 0.0
FASTCHAT_MAX_TOKENS = 2048


@dataclass(frozen=True)
class ReleaseFile:
    """A protocol file as read: where from, its sha256 and its records."""

    where: str
    sha256: str
    records: list[dict[str, Any]]


def _read(folder: str, relative: str, metadata: Mapping[str, Any] | None) -> ReleaseFile:
    """A protocol file from the data dir (release layout) or its canonical URL; JSON lines checked."""
    data_dir = resolve_data_dir(metadata)
    if data_dir is not None:
        path = data_dir / folder / relative
        if not path.is_file():
            raise layout_error(folder, path, "judge protocol file missing")
        where = str(path)
    else:
        path = download_file(CANONICAL[relative])
        where = CANONICAL[relative]
    raw = Path(path).read_bytes()
    records = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise TemplateError(
                f"judge protocol file {where} line {number} is not JSON ({error.msg})"
            ) from None
        if not isinstance(record, dict):
            raise TemplateError(f"judge protocol file {where} line {number} is not a JSON object")
        records.append(record)
    return ReleaseFile(where, hashlib.sha256(raw).hexdigest(), records)


def render_fields(template: str, variables: Mapping[str, str], where: str) -> str:
    """``template`` with its ``{name}`` fields filled from ``variables`` (``{{``/``}}`` are literal braces).

    Only plain names are allowed: ``{x.attr}``, ``{x[0]}``, ``{x!r}``, ``{x:>9}`` and positional ``{}``
    are refused (the template is data, it must not reach Python objects); an unknown name is an error.
    """
    out = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise TemplateError(f"judge template in {where} is malformed: {error}") from None
    for literal, name, spec, conversion in parsed:
        out.append(literal)
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            field_text = (
                "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            )
            raise TemplateError(
                f"judge template in {where}: field {field_text} is not allowed (only plain {{name}} fields)"
            )
        if name not in variables:
            raise TemplateError(
                f"judge template in {where}: undefined field {{{name}}}; the protocol fills "
                f"{', '.join('{' + v + '}' for v in sorted(variables))}"
            )
        out.append(str(variables[name]))
    return "".join(out)


@dataclass(frozen=True)
class ReleasePrompt:
    """One judge prompt of a release file, with the sampling it is sent with."""

    name: str
    system: str
    template: str
    defaults: dict[str, str]
    temperature: float
    max_tokens: int
    where: str

    def messages(self, variables: Mapping[str, str]) -> list[dict[str, str]]:
        """System prompt and the filled template, as the release sent them."""
        user = render_fields(self.template, {**self.defaults, **variables}, f"{self.where} ({self.name})")
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


def _text(record: Mapping[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        which = record.get("category") or record.get("name")
        raise TemplateError(f"judge protocol file {where}: record {which!r} has no text field {key!r}")
    return value


def load_paper_prompts(
    files: Sequence[tuple[str, str]], categories: Sequence[str], settings: JudgeSettings, metadata: Any
) -> tuple[dict[str, ReleasePrompt], dict[str, str]]:
    """LLM-KICK's prompts by category, with the reviewer's sampling; and {file: sha256}."""
    prompt_file, reviewer_file = (_read(folder, relative, metadata) for folder, relative in files)
    prompts = {str(r.get("category")): r for r in prompt_file.records}
    reviewers = {str(r.get("category")): r for r in reviewer_file.records}
    out = {}
    for category in categories:
        if category not in prompts:
            raise TemplateError(
                f"judge protocol file {prompt_file.where}: no prompt for category {category!r}"
            )
        if category not in reviewers:
            raise TemplateError(
                f"judge protocol file {reviewer_file.where}: no reviewer for category {category!r}"
            )
        prompt, reviewer = prompts[category], reviewers[category]
        defaults = prompt.get("defaults") or {}
        if not isinstance(defaults, dict) or not all(isinstance(v, str) for v in defaults.values()):
            raise TemplateError(
                f"judge protocol file {prompt_file.where}: 'defaults' of {category!r} must map to text"
            )
        sampling = reviewer.get("metadata") or {}
        try:
            temperature = float(sampling["temperature"])
            max_tokens = int(sampling["max_tokens"])
        except (KeyError, TypeError, ValueError):
            raise TemplateError(
                f"judge protocol file {reviewer_file.where}: reviewer of {category!r} needs "
                f"metadata.temperature and metadata.max_tokens"
            ) from None
        out[category] = ReleasePrompt(
            name=category,
            system=_text(prompt, "system_prompt", prompt_file.where),
            template=_text(prompt, "prompt_template", prompt_file.where),
            defaults=dict(defaults),
            temperature=settings.temperature if "temperature" in settings.sampling_given else temperature,
            max_tokens=settings.max_tokens if "max_tokens" in settings.sampling_given else max_tokens,
            where=prompt_file.where,
        )
    return out, {prompt_file.where: prompt_file.sha256, reviewer_file.where: reviewer_file.sha256}


@dataclass
class ReleaseMixin:
    """What the release-file protocols share: prompts by name, file hashes, the request they build."""

    prompts: dict[str, ReleasePrompt] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def release_request(
        self, settings: JudgeSettings, name: str, variables: Mapping[str, str], reply_regex: str | None
    ) -> ChatRequest:
        """The request of prompt ``name`` filled with ``variables``; ``reply_regex``: its constraint."""
        prompt = self.prompts[name]
        return ChatRequest.build(
            settings.model, prompt.messages(variables), prompt.temperature, prompt.max_tokens,
            protocol=settings.protocol, reply_regex=reply_regex,
        )  # fmt: skip

    def describe_release(self) -> dict[str, Any]:
        """Protocol files (with sha256) and the sampling of each prompt, for the results."""
        sampling = {
            n: {"temperature": p.temperature, "max_tokens": p.max_tokens} for n, p in self.prompts.items()
        }
        return {"files": dict(self.files), "sampling": sampling}


class PaperSummarizationProtocol(SummarizationProtocol):
    """LLM-KICK's summarization judge: the bin's prompt, the story as ``{question}``, four ``s1 s2`` lines."""

    TEMPLATES = ()

    def __init__(
        self, settings: JudgeSettings, templates: Any, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self.release = ReleaseMixin(*load_paper_prompts(PAPER_SUMMARIZATION, self.GROUPS, settings, metadata))
        super().__init__(settings, templates)

    def template_for(self, doc: Mapping[str, Any]) -> str:
        """The bin's prompt (identical text in the release, but each bin has its own record)."""
        return str(doc["bin"])

    def variables(self, doc: Mapping[str, Any], answer_1: str, answer_2: str) -> dict[str, str]:
        """The story is the release's ``{question}``."""
        return {"question": doc["article"], "answer_1": answer_1, "answer_2": answer_2}

    def judge_request(self, template: str, **variables: str) -> ChatRequest:
        """The release prompt of ``template`` (a bin) filled in."""
        return self.release.release_request(self.settings, template, variables, self.constraint(template))

    def describe(self) -> dict[str, Any]:
        """Protocol, files and sampling."""
        return {"protocol": "paper", **self.release.describe_release()}


class PaperInstructionProtocol(InstructionProtocol):
    """LLM-KICK's Vicuna-80 judge: general / coding / math prompts; first line ``s1 s2``, math a tuple."""

    TEMPLATES = ()
    CATEGORIES = ("general", "coding", "math")
    MATH_TEMPLATE = "math"  # the release's math prompt asks for "a Python tuple" of the two scores

    def __init__(
        self, settings: JudgeSettings, templates: Any, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self.release = ReleaseMixin(
            *load_paper_prompts(PAPER_INSTRUCTION, self.CATEGORIES, settings, metadata)
        )
        super().__init__(settings, templates)

    def template_for(self, doc: Mapping[str, Any]) -> str:
        """``coding`` / ``math`` for those Vicuna categories, else ``general``."""
        category = str(doc.get("category", "")).lower()
        return category if category in ("coding", "math") else "general"

    def judge_request(self, template: str, **variables: str) -> ChatRequest:
        """The release prompt of ``template`` (a category) filled in."""
        return self.release.release_request(self.settings, template, variables, self.constraint(template))

    def describe(self) -> dict[str, Any]:
        """Protocol, files and sampling."""
        return {"protocol": "paper", **self.release.describe_release()}


FASTCHAT_PROMPTS = ("single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn")


class FastChatMTBenchProtocol(MTBenchProtocol):
    """FastChat's MT-Bench single-answer grading, from ``judge_prompts.jsonl``."""

    TEMPLATES = ()

    def __init__(
        self, settings: JudgeSettings, templates: Any, metadata: Mapping[str, Any] | None = None
    ) -> None:
        ((folder, relative),) = FASTCHAT_MTBENCH
        release = _read(folder, relative, metadata)
        by_name = {str(r.get("name")): r for r in release.records}
        prompts = {}
        for name in FASTCHAT_PROMPTS:
            if name not in by_name:
                raise TemplateError(f"judge protocol file {release.where}: no judge prompt named {name!r}")
            record = by_name[name]
            prompts[name] = ReleasePrompt(
                name=name,
                system=_text(record, "system_prompt", release.where),
                template=_text(record, "prompt_template", release.where),
                defaults={},
                temperature=settings.temperature
                if "temperature" in settings.sampling_given
                else FASTCHAT_TEMPERATURE,
                max_tokens=settings.max_tokens
                if "max_tokens" in settings.sampling_given
                else FASTCHAT_MAX_TOKENS,
                where=release.where,
            )
        self.release = ReleaseMixin(prompts, {release.where: release.sha256})
        super().__init__(settings, templates)

    def calls(self, doc: Mapping[str, Any], response: Any, reference: str | None) -> list[JudgeCall]:
        """Turn 1 with ``single[-math]-v1``, turn 2 with its multi-turn form (the whole conversation)."""
        answers = turns_of(response)
        math = self._uses_reference(doc)
        variables = {
            "question": doc["turn_1"], "answer": answers[0],
            "question_1": doc["turn_1"], "answer_1": answers[0],
            "question_2": doc["turn_2"], "answer_2": answers[1],
        }  # fmt: skip
        if math:
            variables |= {"ref_answer_1": doc["reference_1"], "ref_answer_2": doc["reference_2"]}
        first = "single-math-v1" if math else "single-v1"
        second = f"{first}-multi-turn"
        return [
            JudgeCall("turn1", first, self.release_request(first, variables)),
            JudgeCall("turn2", second, self.release_request(second, variables)),
        ]

    def release_request(self, name: str, variables: Mapping[str, str]) -> ChatRequest:
        """The request of judge prompt ``name``, constrained as ``judge_reply_format`` says."""
        return self.release.release_request(self.settings, name, variables, self.constraint(name))

    def describe(self) -> dict[str, Any]:
        """Protocol, file and sampling."""
        return {"protocol": "fastchat", **self.release.describe_release()}
