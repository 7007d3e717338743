"""Open-book TriviaQA evidence cut to a token budget of the evaluated model (:class:`EvidenceBudget`).

The documents are those of :mod:`llmkick_tasks.triviaqa.documents`; only the evidence cut differs from
the model-free ``process_open_book`` of the YAML, which it equals when no tokenizer is known.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llmkick_tasks.model_tokenizer import context_length, load_tokenizer
from llmkick_tasks.run_metadata import EVIDENCE_TOKENS
from llmkick_tasks.triviaqa.documents import CHARS_PER_TOKEN, open_book

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import datasets


log = logging.getLogger(__name__)

EVIDENCE_KEY = EVIDENCE_TOKENS.name  # metadata knob of llmkick_triviaqa_open (default in its YAML too)
# Room kept free of evidence besides the question prompt: generation (== max_gen_toks of
# the TriviaQA template YAML, checked by the tests) and a margin for BOS / chat-template tokens.
MAX_GEN_TOKS = 32
MARGIN_TOKENS = 16
OPEN_BOOK_QUESTION = "Based on these texts, answer these questions:\n\nQ: {question}\nA:"


class EvidenceBudget:
    """Cuts open-book evidence to a TOKEN budget that leaves room for the question and the answer.

    The budget of a document is ``min(evidence_tokens, max_length - question prompt - MAX_GEN_TOKS -
    MARGIN_TOKENS)``, counted with the model's own tokenizer: a knob in tokens means the same amount of
    text relative to the model's context whatever its tokenizer, where LLM-KICK's fixed 3,072 characters
    overflow a 2k-context model with a verbose tokenizer and waste a long-context one.

    lm-eval merges the model arguments into the task metadata, so the tokenizer is found from ``tokenizer`` /
    ``pretrained`` / ``model`` and the context length from ``max_length`` or the model config (with
    lm-eval's own rule, ``resolve_max_length``).  When no tokenizer can be loaded (an API model without
    ``tokenizer=``, a model object passed from Python) the cut falls back to ``CHARS_PER_TOKEN`` characters
    per token of ``evidence_tokens``; lm-eval's left truncation still protects the question in that case.
    """

    def __init__(self, evidence_tokens: int, tokenizer: Any = None, max_length: int | None = None) -> None:
        if isinstance(evidence_tokens, bool) or not isinstance(evidence_tokens, int) or evidence_tokens < 0:
            raise ValueError(f"{EVIDENCE_KEY} must be a non-negative integer, got {evidence_tokens!r}")
        self.evidence_tokens = evidence_tokens
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> EvidenceBudget:
        """The budget for the model named in the task metadata (model args + ``--metadata``)."""
        # Checked by the constructor (Python callers build budgets directly); absent: the knob's default.
        evidence_tokens = metadata.get(EVIDENCE_KEY, EVIDENCE_TOKENS.default)
        tokenizer, max_length = _load_tokenizer(metadata)
        if tokenizer is not None and metadata.get("max_length"):  # max_length=... wins, as in HFLM
            max_length = int(metadata["max_length"])
        return cls(evidence_tokens, tokenizer, max_length)

    def tokens_for(self, question: str) -> int:
        """Evidence tokens allowed for one question."""
        if self.tokenizer is None or self.max_length is None:
            return self.evidence_tokens
        prompt = "\n\n" + OPEN_BOOK_QUESTION.format(question=question)
        used = len(self.tokenizer(prompt, verbose=False)["input_ids"]) + MAX_GEN_TOKS + MARGIN_TOKENS
        return max(0, min(self.evidence_tokens, self.max_length - used))

    def cut(self, text: str, tokens: int) -> str:
        """The longest prefix of ``text`` that has at most ``tokens`` tokens (at a token boundary)."""
        if tokens <= 0 or not text:
            return ""
        if self.tokenizer is None:
            return text[: tokens * CHARS_PER_TOKEN].rstrip()
        # Tokenize a window, not the whole page (Wikipedia pages run to 100k characters); widen it only
        # when the window holds fewer tokens than allowed and the text goes on.
        window = tokens * 8
        while True:
            piece = text[:window]
            if getattr(self.tokenizer, "is_fast", False):
                offsets = self.tokenizer(
                    piece, add_special_tokens=False, return_offsets_mapping=True, verbose=False
                )["offset_mapping"]
                if len(offsets) > tokens:
                    return piece[: offsets[tokens - 1][1]].rstrip()
            else:
                ids = self.tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"]
                if len(ids) > tokens:
                    return self.tokenizer.decode(ids[:tokens]).rstrip()
            if window >= len(text):
                return text.rstrip()
            window *= 2

    def describe(self) -> str:
        """One line for the log."""
        if self.tokenizer is None:
            return f"no tokenizer known: evidence cut to {self.evidence_tokens * CHARS_PER_TOKEN} characters"
        name = getattr(self.tokenizer, "name_or_path", type(self.tokenizer).__name__)
        return f"evidence cut to <= {self.evidence_tokens} tokens of {name}, context {self.max_length}"


def _load_tokenizer(metadata: Mapping[str, Any]) -> tuple[Any, int | None]:
    """(tokenizer, context length) of the model named in ``metadata``, or ``(None, None)``.

    The tokenizer comes from ``tokenizer``, else ``pretrained``, else ``model``; the context length from
    the config of ``pretrained`` / ``model`` (see :mod:`llmkick_tasks.model_tokenizer`).
    """
    tokenizer = load_tokenizer(metadata, "TriviaQA open book")
    if tokenizer is None:
        return None, None
    return tokenizer, context_length(metadata, tokenizer)


def open_book_docs(rows: Iterable[Mapping[str, Any]], budget: EvidenceBudget) -> datasets.Dataset:
    """Open-book documents of ``rows`` (Hub layout), each question's evidence cut to ``budget``."""
    return open_book(rows, lambda raw: budget.cut(raw.evidence, budget.tokens_for(raw.question)))
