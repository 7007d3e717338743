"""WikiText-2 test perplexity as compression papers report it: the test split joined into one text,
tokenized once with the evaluated model's tokenizer, cut into non-overlapping windows of ``seqlen`` tokens.

Each window becomes one lm-eval document scored as a ``loglikelihood`` request with an empty context: the
harness then feeds ``[prefix token] + window[:-1]`` (BOS, or EOS for models without one) and scores every
token of the window.  The window text is the decoded token slice; it is checked to re-tokenize to exactly
the same tokens, so what lm-eval scores is the slice itself.  A window that does not round-trip is kept,
counted in a warning, and weighted by the number of tokens lm-eval will actually score, so the perplexity is
always exp(-sum log p / tokens scored).

Knobs (task metadata or ``--metadata``): ``wikitext2_seqlen`` (default 2048, capped at the model's context),
``wikitext2_windows`` (first N windows only; default all).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import datasets

from llmkick_tasks.model_tokenizer import context_length, load_tokenizer
from llmkick_tasks.run_metadata import WIKITEXT2_SEQLEN, WIKITEXT2_WINDOWS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


log = logging.getLogger(__name__)

FEATURES = datasets.Features(
    {
        "window": datasets.Value("int64"),
        "text": datasets.Value("string"),
        "tokens": datasets.Value("int64"),
        "round_trip": datasets.Value("bool"),
    }
)


def joined_text(rows: Sequence[str]) -> str:
    r"""The test split as one text, the way the reference scripts join the Hub's rows (``"\n\n".join``)."""
    return "\n\n".join(rows)


def release_rows(lines: Sequence[str]) -> list[str]:
    """Release-file lines as the Hub's ``wikitext`` rows: a text line keeps its newline, a blank one is ''."""
    return [line + "\n" if line.strip() else "" for line in lines]


def resolve_seqlen(metadata: Mapping[str, Any], tokenizer: Any) -> int:
    """``wikitext2_seqlen`` (default 2048), capped at the model's context length (``max_length=`` first)."""
    asked = WIKITEXT2_SEQLEN.read(metadata)  # >= 2: a window scores >= 1 token
    limit = metadata.get("max_length") or context_length(metadata, tokenizer)
    if limit and asked > int(limit):
        log.info("WikiText-2 windows: seqlen %d capped at the model's context %d", asked, int(limit))
        return int(limit)
    return asked


def token_windows(tokenizer: Any, text: str, seqlen: int, windows: int | None = None) -> list[dict[str, Any]]:
    """Documents for the non-overlapping ``seqlen``-token windows of ``text`` (the remainder is dropped)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    count = len(ids) // seqlen
    if count == 0:
        raise ValueError(f"WikiText-2 text has {len(ids)} tokens, fewer than one window of {seqlen}")
    if windows is not None:
        count = min(count, windows)
    documents, mismatched = [], 0
    for index in range(count):
        window = ids[index * seqlen : (index + 1) * seqlen]
        piece = tokenizer.decode(window, clean_up_tokenization_spaces=False)
        again = tokenizer(piece, add_special_tokens=False)["input_ids"]
        exact = again == window
        mismatched += not exact
        documents.append({"window": index, "text": piece, "tokens": len(again), "round_trip": exact})
    if mismatched:
        log.warning(
            "WikiText-2 windows: %d of %d windows re-tokenize differently; each is weighted by the tokens "
            "actually scored",
            mismatched,
            count,
        )
    return documents


class NoTokenizerError(ValueError):
    """The windows cannot be cut: the model args name no tokenizer that loads."""


def load_windows(rows: Sequence[str], metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The window documents for the model named in ``metadata`` (its tokenizer and context).

    Raises :class:`NoTokenizerError` when the model args name no tokenizer that loads.
    """
    windows = WIKITEXT2_WINDOWS.read(metadata)
    tokenizer = load_tokenizer(metadata, "llmkick_wikitext2_ppl")
    if tokenizer is None:
        raise NoTokenizerError(
            "llmkick_wikitext2_ppl cuts token windows with the evaluated model's tokenizer, but the model "
            "args name none that loads (pretrained= or tokenizer=; or --metadata '{\"tokenizer\": ...}'); "
            "use llmkick_wikitext2_ppl_articles, which needs no tokenizer"
        )
    return token_windows(tokenizer, joined_text(rows), resolve_seqlen(metadata, tokenizer), windows)


def window_metrics(doc: Mapping[str, Any], results: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    """Per-window (log-likelihood, weight) pairs; lm-eval aggregates them as ratios of sums."""
    loglikelihood = float(results[0][0])
    words = len(re.split(r"\s+", doc["text"].strip())) if doc["text"].strip() else 0
    size = len(doc["text"].encode("utf-8"))
    return {
        "token_perplexity": (loglikelihood, doc["tokens"]),
        "word_perplexity": (loglikelihood, words),
        "bits_per_byte": (loglikelihood, size),
    }
