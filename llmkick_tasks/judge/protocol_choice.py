"""Which protocol judges a task: the task's kind (its YAML ``llmkick_judged``) and ``judge_protocol``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmkick_tasks.judge import release_protocols as release
from llmkick_tasks.judge.config import JudgeConfigError, JudgeSettings
from llmkick_tasks.judge.pairwise import InstructionProtocol, SummarizationProtocol
from llmkick_tasks.judge.single_answer import MTBenchProtocol
from llmkick_tasks.judge.templates import TemplateSet

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmkick_tasks.judge.protocols import JudgeProtocol


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
