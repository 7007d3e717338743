"""Named conversation formats for the judged tasks' prompts (``--metadata '{"chat_template": ...}'``).

LLM-KICK generated its judged answers with FastChat's conversation template for Vicuna (``vicuna_v1.1``):
Vicuna checkpoints ship no tokenizer chat template, so it is written here from the template's definition.
A two-separator conversation renders as the system message, ``sep``, then each turn as ``ROLE: text``
followed by ``sep`` after a user turn and ``sep2`` after an assistant turn, and an open ``ASSISTANT:`` for
the model to continue.  For ``vicuna_v1.1``, two turns::

    {system} USER: {question 1} ASSISTANT: {answer 1}</s>USER: {question 2} ASSISTANT:

The prompt has no BOS text: the tokenizer adds it when lm-eval encodes the prompt, as in FastChat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llmkick_tasks.judge.knobs import CHAT_TEMPLATE, CHAT_VICUNA

Message = Mapping[str, str]


@dataclass(frozen=True)
class Conversation:
    """A two-separator conversation format, callable like :class:`~llmkick_tasks.judge.chat.ChatFormat`.

    ``key`` is the ``chat_template`` value that selects it; a system message in the messages (lm-eval's
    ``--system_instruction`` / task description) replaces ``system_message``, as FastChat's
    ``set_system_message`` does.
    """

    key: str
    system_message: str
    user: str
    assistant: str
    sep: str
    sep2: str

    @property
    def uses_template(self) -> bool:
        """False: no tokenizer template is involved."""
        return False

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        """The end of an assistant turn (``sep2``); for Vicuna it is the EOS token, which stops it anyway."""
        return (self.sep2,)

    @property
    def name(self) -> str:
        """Short identifier (lm-eval's request-cache key part)."""
        return f"llmkick-conversation-{self.key}"

    def describe(self) -> str:
        """One line for the log and the results' task metadata."""
        return (
            f"{self.key} conversation ({CHAT_TEMPLATE.name}={self.key}): system message, "
            f"{self.user}:/{self.assistant}: turns, {self.sep2!r} after each answer"
        )

    def __call__(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages``.

        With ``add_generation_prompt=False`` the last (assistant) message is left open, to be continued.
        """
        system = [m["content"] for m in messages if m["role"] == "system"]
        text = "\n\n".join(system) if system else self.system_message
        turns = [m for m in messages if m["role"] != "system"]
        prompt = text + self.sep
        for index, message in enumerate(turns):
            role, after = self._role(message["role"])
            # FastChat stored the model's answers stripped; the questions are used as they are.
            content = message["content"].strip() if role == self.assistant else message["content"]
            is_open = not add_generation_prompt and index == len(turns) - 1
            if not content:
                prompt += f"{role}:"  # FastChat renders an empty message as an open role, no separator
            else:
                prompt += f"{role}: {content}" + ("" if is_open else after)
        if add_generation_prompt:
            prompt += f"{self.assistant}:"
        return prompt

    def _role(self, role: str) -> tuple[str, str]:
        """The role's name in the prompt and the separator after its turns."""
        if role == "user":
            return self.user, self.sep
        if role == "assistant":
            return self.assistant, self.sep2
        raise ValueError(f"{self.key} conversation: no role {role!r} (allowed: system, user, assistant)")


VICUNA_V1_1 = Conversation(
    key=CHAT_VICUNA,
    system_message=(
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    ),
    user="USER",
    assistant="ASSISTANT",
    sep=" ",
    sep2="</s>",
)

#: The conversations by their ``chat_template`` value.
CONVERSATIONS = {conversation.key: conversation for conversation in (VICUNA_V1_1,)}
