r"""Chat prompts for the judged tasks when lm-eval's global ``--apply_chat_template`` is not given.

lm-eval has one switch for the whole run: ``--apply_chat_template`` wraps EVERY task's prompt in the chat
template, including the exact-match tasks, which must keep the paper's raw prompts.  So the judged tasks
(chat benchmarks by nature) format their own prompts when the switch is off:

* with the model's tokenizer, when it has a chat template: ``tokenizer.apply_chat_template``, exactly as
  lm-eval's ``HFLM.apply_chat_template`` renders it (text, generation prompt appended);
* otherwise a plain transcript (:func:`render_transcript`), with a warning once per run that names the
  ``chat_template`` knob::

      User: {question}

      Assistant: {answer}

      User: {follow-up}

      Assistant:

  and generation also stops at ``"\nUser:"``, where a base model would start inventing the next turn.

``--metadata '{"chat_template": ...}'`` chooses instead: ``auto`` (the default) is the choice above,
``vicuna_v1.1`` FastChat's Vicuna conversation (:mod:`.conversation`, what LLM-KICK generated with, for
Vicuna checkpoints that ship no chat template), ``plain`` the transcript without the warning.

When ``--apply_chat_template`` IS given, lm-eval's own path is used unchanged, unless ``chat_template``
names a format other than ``auto``: the knob is specific to the judged tasks, the flag is run-wide.

The tokenizer comes from the model args (``tokenizer=`` / ``pretrained=`` / ``model=``, as the TriviaQA
evidence budget finds it), else from the running model object.  The running model is known through
:func:`install`, which the pre-flight hook applies to ``lm_eval.evaluator``: it records the ``lm`` that
``evaluate`` runs, which MT-Bench also needs to generate its second turn after the first.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmkick_tasks.judge.conversation import CONVERSATIONS, Conversation
from llmkick_tasks.judge.knobs import CHAT_PLAIN, CHAT_TEMPLATE, CHAT_VICUNA
from llmkick_tasks.model_tokenizer import load_tokenizer, name_of

if TYPE_CHECKING:
    from types import ModuleType


log = logging.getLogger(__name__)

TRANSCRIPT_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
TRANSCRIPT_SEPARATOR = "\n\n"
TRANSCRIPT_STOP = "\nUser:"
INSTALLED_FLAG = "_llmkick_tracks_model"
# Model args that lm-eval's HFLM forwards to apply_chat_template (its `chat_template_args`).
TEMPLATE_ARGS = ("enable_thinking",)

Message = Mapping[str, str]

_running_model: contextvars.ContextVar[Any] = contextvars.ContextVar("llmkick_running_model", default=None)
# Warnings already shown in the current `evaluate` call (None outside one: then every warning is shown).
_run_warnings: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "llmkick_run_warnings", default=None
)


def running_model() -> Any:
    """The lm-eval model that the current ``evaluate`` call runs, or ``None`` outside one."""
    return _running_model.get()


def install(evaluator: ModuleType) -> None:
    """Wrap ``evaluator.evaluate`` so tasks can reach the model it runs (see :func:`running_model`).

    ``simple_evaluate`` calls ``evaluate`` through the module global, so the CLI and the Python API both
    go through the wrapper.
    """
    original = getattr(evaluator, "evaluate", None)
    if original is None or getattr(original, INSTALLED_FLAG, False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def evaluate(*args: Any, **kwargs: Any) -> Any:
        try:
            lm = signature.bind(*args, **kwargs).arguments.get("lm")
        except TypeError:  # let lm-eval report its own argument errors
            lm = None
        token, warnings_token = _running_model.set(lm), _run_warnings.set(set())
        try:
            return original(*args, **kwargs)
        finally:
            _run_warnings.reset(warnings_token)
            _running_model.reset(token)

    setattr(evaluate, INSTALLED_FLAG, True)
    evaluator.evaluate = evaluate


def warn_once_per_run(key: str, message: str) -> None:
    """Log ``message`` as a warning, once per ``evaluate`` call for ``key`` (every time outside one)."""
    shown = _run_warnings.get()
    if shown is not None:
        if key in shown:
            return
        shown.add(key)
    log.warning(message)


def render_transcript(messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    """``Role: content`` blocks separated by blank lines, then ``Assistant:`` for the model to continue.

    With ``add_generation_prompt=False`` the last (assistant) message is left open, to be continued.
    """
    # Stripped: a model's answer after "Assistant:" usually starts with a space of its own.
    blocks = [
        f"{TRANSCRIPT_ROLES.get(m['role'], m['role'].title())}: {m['content'].strip()}" for m in messages
    ]
    if add_generation_prompt:
        blocks.append(f"{TRANSCRIPT_ROLES['assistant']}:")
    return TRANSCRIPT_SEPARATOR.join(blocks)


def _fold_system(messages: Sequence[Message]) -> list[dict[str, str]]:
    """The messages without system turns, their text put before the first user message."""
    system = TRANSCRIPT_SEPARATOR.join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system:
        first_user = next((m for m in rest if m["role"] == "user"), None)
        if first_user is None:
            rest.insert(0, {"role": "user", "content": system})
        else:
            first_user["content"] = system + TRANSCRIPT_SEPARATOR + first_user["content"]
    return rest


class ChatFormat:
    """Renders chat messages to the prompt text the evaluated model continues.

    Callable like lm-eval's ``lm.apply_chat_template(messages, add_generation_prompt=True)``, so lm-eval's
    prompt building (system instruction, description) and MT-Bench's second turn use it unchanged.
    """

    def __init__(
        self,
        tokenizer: Any = None,
        template_args: Mapping[str, Any] | None = None,
        why_transcript: str = "no chat template known",
    ) -> None:
        """``tokenizer``: one with a chat template, or ``None`` for the transcript format (chosen because
        of ``why_transcript``, which :meth:`describe` says).
        """
        if tokenizer is not None and not has_chat_template(tokenizer):
            raise ValueError("the tokenizer has no chat template; pass None for the transcript format")
        self.tokenizer = tokenizer
        self.template_args = dict(template_args or {})
        self.why_transcript = why_transcript

    @property
    def uses_template(self) -> bool:
        """True when the tokenizer's chat template renders the prompts."""
        return self.tokenizer is not None

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        """Extra stop strings for generation: the transcript's next user turn."""
        return () if self.uses_template else (TRANSCRIPT_STOP,)

    @property
    def name(self) -> str:
        """Short identifier (lm-eval's request-cache key part)."""
        if not self.uses_template:
            return "llmkick-transcript"
        return f"llmkick-template-{name_of(self.tokenizer) or type(self.tokenizer).__name__}"

    def describe(self) -> str:
        """One line for the log and the results' task metadata."""
        if not self.uses_template:
            return f"transcript (User:/Assistant: turns, stop at {TRANSCRIPT_STOP!r}), {self.why_transcript}"
        return f"chat template of the tokenizer {name_of(self.tokenizer) or type(self.tokenizer).__name__}"

    def __call__(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages``."""
        if not self.uses_template:
            return render_transcript(messages, add_generation_prompt)
        import jinja2

        def render(chat: Sequence[Message]) -> str:
            return self.tokenizer.apply_chat_template(
                [dict(m) for m in chat],
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=not add_generation_prompt,
                **self.template_args,
            )

        try:
            return render(messages)
        except jinja2.exceptions.TemplateError:
            if not any(m["role"] == "system" for m in messages):
                raise
            # Templates without a system role (e.g. Gemma's) raise; keep the system text in the user turn
            # rather than dropping it as lm-eval does.
            return render(_fold_system(messages))


def has_chat_template(tokenizer: Any) -> bool:
    """True when ``tokenizer`` carries a chat template (a string, or a dict of named templates)."""
    return bool(getattr(tokenizer, "chat_template", None))


#: A judged prompt format: a tokenizer's template or the transcript, or a named conversation.
PromptFormat = ChatFormat | Conversation

NO_TEMPLATE_WARNING = (
    "llmkick judged tasks: {model} has no chat template, so the judged prompts are a plain "
    "User:/Assistant: transcript. For Vicuna checkpoints (LLM-KICK's models ship none) use the conversation "
    'LLM-KICK generated with: --metadata \'{{"{knob}": "{vicuna}"}}\'; "{knob}": "{plain}" keeps the '
    "transcript without this warning."
)


def chosen_format(metadata: Mapping[str, Any]) -> str:
    """The ``chat_template`` knob's value (``auto`` unless given); :class:`~llmkick_tasks.knobs.KnobError`
    if it is not allowed (checked before the model loads, see :mod:`llmkick_tasks.run_metadata`).
    """
    return CHAT_TEMPLATE.read(metadata)


def chat_format_for(metadata: Mapping[str, Any], lm: Any = None) -> PromptFormat:
    """The format for the model of a run, as the ``chat_template`` knob chooses.

    ``auto``: the tokenizer's chat template if it has one, else the transcript (and a warning once per
    run).  The tokenizer is the one the model args name (``tokenizer`` / ``pretrained`` / ``model``);
    without one (a model object passed from Python) the running model's own ``tokenizer`` attribute.
    """
    chosen = chosen_format(metadata)
    if chosen in CONVERSATIONS:
        return CONVERSATIONS[chosen]
    if chosen == CHAT_PLAIN:
        return ChatFormat(None, why_transcript=f"{CHAT_TEMPLATE.name}={CHAT_PLAIN}")
    tokenizer = load_tokenizer(metadata, "llmkick judged tasks (chat format)")
    if tokenizer is None and lm is not None:
        tokenizer = getattr(lm, "tokenizer", None)
    template_args = {key: metadata[key] for key in TEMPLATE_ARGS if metadata.get(key) is not None}
    if has_chat_template(tokenizer):
        return ChatFormat(tokenizer, template_args)
    model = f"the tokenizer {name_of(tokenizer)!r}" if name_of(tokenizer) else "the model"
    warn_once_per_run(
        "no-chat-template",
        NO_TEMPLATE_WARNING.format(
            model=model, knob=CHAT_TEMPLATE.name, vicuna=CHAT_VICUNA, plain=CHAT_PLAIN
        ),
    )
    return ChatFormat(None, template_args)
