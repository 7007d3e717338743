"""Calibration tokens for Wanda, SparseGPT and GPTQ: ``nsamples`` random windows of ``seqlen`` tokens.

Two steps, split so that a missing data set fails before the model is loaded:

1. ``load_documents(spec)`` reads the text (no tokenizer needed): the paper's C4 shard, WikiText-2, or
   local files.  Unreachable C4/WikiText-2 raises ``CalibrationDataError`` naming the local alternative.
2. ``calibration_tokens(...)`` tokenizes lazily (with the tokenizer's default special tokens, as
   ``tokenizer(text)`` in the reference loaders) and draws the windows exactly as the SparseGPT/Wanda
   loaders that LLM-KICK used, so one seed draws the same windows from the same text: pick a random
   document, keep it if it has more than ``seqlen`` tokens, take a window at a random offset in
   [0, len − seqlen − 1].  A text file, or WikiText-2's train split joined with spaces as in those
   loaders, is one long document: no document is drawn, its windows are random offsets into one stream.

``random`` draws uniform token ids: only meant for tests and benchmarks, never for a real evaluation.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmkick_models.engine.spec import CalibrationSpec

log = logging.getLogger(__name__)

C4_DATASET = "allenai/c4"
C4_SHARD = "en/c4-train.00000-of-01024.json.gz"
WIKITEXT_DATASET = ("Salesforce/wikitext", "wikitext-2-raw-v1")
#: Files read from a calibration directory; a single file given directly may have any extension.
TEXT_SUFFIXES = (".txt", ".text", ".raw", ".tokens")
JSON_SUFFIXES = (".jsonl", ".json")

_LOCAL_ALTERNATIVE = (
    "pass local text instead, e.g. calibration=/path/to/wiki.train.raw (any text file), "
    'calibration=/path/to/docs.jsonl ({"text": ...} per line) or calibration=/path/to/directory'
)
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_sequence_length")


class CalibrationDataError(RuntimeError):
    """Calibration text cannot be read or holds too little to draw the requested windows."""


class _Column(Sequence[str]):
    """A lazy view of one string column of a ``datasets.Dataset`` (C4's shard holds ~356k documents)."""

    def __init__(self, dataset: Any, column: str) -> None:
        self._dataset = dataset
        self._column = column

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._dataset[int(index)][self._column]


def _load_hub_dataset(source: str, *args: Any, **kwargs: Any) -> Any:
    """``datasets.load_dataset`` with an error that says what to do offline."""
    try:
        import datasets

        return datasets.load_dataset(*args, **kwargs)
    except Exception as error:  # offline, no cache, hub down, auth: all end the same way for the user
        offline = any(os.environ.get(v) == "1" for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
        raise CalibrationDataError(
            f"calibration={source}: could not load {args[0]} from the Hugging Face Hub"
            f"{' (offline mode is set)' if offline else ''}: {type(error).__name__}: {error}. "
            f"Offline, {_LOCAL_ALTERNATIVE}."
        ) from error


def _read_json_documents(path: Path) -> list[str]:
    """Documents of a .jsonl file (one JSON object or string per line) or a .json list of them."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        records = json.loads(text)
        if isinstance(records, dict):
            records = [records]
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    documents = []
    for number, record in enumerate(records, start=1):
        if isinstance(record, str):
            documents.append(record)
        elif isinstance(record, dict) and isinstance(record.get("text"), str):
            documents.append(record["text"])
        else:
            raise CalibrationDataError(
                f"calibration={path}: record {number} is neither a string nor an object with a "
                f'"text" string field'
            )
    return documents


def _read_local(path: Path) -> list[str]:
    """Documents of a local file or directory (files sorted by path, so the order is reproducible)."""
    if path.is_file():
        if path.suffix in JSON_SUFFIXES:
            return _read_json_documents(path)
        return [path.read_text(encoding="utf-8", errors="replace")]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES + JSON_SUFFIXES)
    if not files:
        raise CalibrationDataError(
            f"calibration={path}: the directory holds no {'/'.join(TEXT_SUFFIXES + JSON_SUFFIXES)} files"
        )
    documents: list[str] = []
    for file in files:
        documents.extend(_read_local(file))
    return documents


def load_documents(spec: CalibrationSpec) -> Sequence[str] | None:
    """The calibration documents of ``spec.source`` (None for ``random``, which needs no text).

    Raises ``CalibrationDataError`` when the source cannot be read; call it before loading the model.
    """
    source = spec.source
    if source == "random":
        return None
    if source == "c4":
        dataset = _load_hub_dataset(source, C4_DATASET, data_files={"train": C4_SHARD}, split="train")
        return _Column(dataset, "text")
    if source == "wikitext2":
        dataset = _load_hub_dataset(source, *WIKITEXT_DATASET, split="train")
        # Joined with spaces, as the Wanda and SparseGPT loaders do.
        return [" ".join(dataset["text"])]
    path = Path(source)
    if not path.exists():
        raise CalibrationDataError(f"calibration={source}: no such file or directory")
    documents = [doc for doc in _read_local(path) if doc.strip()]
    if not documents:
        raise CalibrationDataError(f"calibration={source}: no text found")
    return documents


def model_context_length(config: Any) -> int | None:
    """The longest sequence the model's config allows, if it says."""
    for candidate in (getattr(config, "text_config", None), config):
        for key in _CONTEXT_KEYS:
            value = getattr(candidate, key, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


@dataclass(frozen=True)
class CalibrationSet:
    """The token windows the calibrated methods see, and how they were drawn (for the report)."""

    input_ids: torch.Tensor  # (nsamples, seqlen), int64, CPU
    source: str
    seed: int

    @property
    def nsamples(self) -> int:
        """Number of windows."""
        return int(self.input_ids.shape[0])

    @property
    def seqlen(self) -> int:
        """Tokens per window (after any cap at the model's context)."""
        return int(self.input_ids.shape[1])

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for the compression report."""
        return {
            "source": self.source,
            "nsamples": self.nsamples,
            "seqlen": self.seqlen,
            "seed": self.seed,
            "tokens": self.nsamples * self.seqlen,
        }


#: Long documents are tokenized in pieces of about this many characters, cut after a newline (or a space):
#: tokenizing a whole multi-megabyte text at once holds every token's offsets and masks in memory at once.
TOKENIZE_CHUNK_CHARS = 65536


def _special_tokens_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds by default before and after a text (e.g. Llama's BOS; none for GPT-2)."""
    probe = "calibration"
    plain = tokenizer(probe, add_special_tokens=False, verbose=False)["input_ids"]
    full = tokenizer(probe, verbose=False)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    raise CalibrationDataError(
        "the tokenizer's special tokens do not wrap the plain encoding of a text; cannot tokenize long "
        "calibration text in pieces"
    )


_SPACE_BETWEEN_WORDS = re.compile(r"(?<=\S) (?=\S)")


def _cut_before_word(text: str, start: int, end: int) -> int:
    """Where to end the piece text[start:end]: before the last single space between two non-spaces, so the
    next piece starts with " word".  Byte-level BPE pre-tokenizers (GPT-2's, Llama 3's) split there anyway
    and attach the space to the following word, so the pieces' ids join into the whole text's ids."""
    cuts = [match.start() for match in _SPACE_BETWEEN_WORDS.finditer(text, start + 1, end)]
    return cuts[-1] if cuts else end


def _tokenize(tokenizer: Any, text: str) -> torch.Tensor:
    """Token ids of ``text`` as the reference loaders get them (``tokenizer(text)``: with the tokenizer's
    default special tokens, e.g. a leading BOS), as a 1-D int64 tensor.

    A text longer than ``TOKENIZE_CHUNK_CHARS`` is tokenized piece by piece (cut before a word, see
    ``_cut_before_word``) without special tokens, and the default ones are put around the whole once.  For
    byte-level BPE tokenizers the result equals tokenizing the whole text; a SentencePiece tokenizer that
    adds a dummy prefix space to every call may differ at the piece boundaries.
    """
    if len(text) <= TOKENIZE_CHUNK_CHARS:
        # verbose=False: a document is meant to exceed the tokenizer's model_max_length here.
        return torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.long)
    before, after = _special_tokens_around(tokenizer)
    pieces: list[torch.Tensor] = [torch.tensor(before, dtype=torch.long)]
    start = 0
    while start < len(text):
        end = min(start + TOKENIZE_CHUNK_CHARS, len(text))
        if end < len(text):
            end = _cut_before_word(text, start, end)
        ids = tokenizer(text[start:end], add_special_tokens=False, verbose=False)["input_ids"]
        pieces.append(torch.tensor(ids, dtype=torch.long))
        start = end
    pieces.append(torch.tensor(after, dtype=torch.long))
    return torch.cat(pieces)


def _sample_windows(
    documents: Sequence[str], tokenizer: Any, nsamples: int, seqlen: int, seed: int, source: str
) -> torch.Tensor:
    """The reference loaders' draw (Wanda's ``lib/data.py``, SparseGPT's ``datautils.py``), so one seed
    gives the same windows: ``random.seed(seed)``; per window, for several documents (C4) draw
    ``randint(0, len(documents) - 1)`` until a document of more than ``seqlen`` tokens comes up, for one
    document (WikiText-2 joined, a text file) draw no document at all; then the start
    ``randint(0, len(ids) - seqlen - 1)``."""
    rng = random.Random(seed)
    tokenized: dict[int, torch.Tensor] = {}
    too_short: set[int] = set()
    longest = 0
    windows: list[torch.Tensor] = []
    while len(windows) < nsamples:
        if len(too_short) == len(documents):
            raise CalibrationDataError(
                f"calibration={source}: no document has more than seqlen={seqlen} tokens "
                f"(longest: {longest}); lower seqlen= or give longer text"
            )
        # The single-document loaders draw no document index; a draw would shift every later window.
        index = rng.randint(0, len(documents) - 1) if len(documents) > 1 else 0
        if index in too_short:
            continue
        ids = tokenized.get(index)
        if ids is None:
            ids = _tokenize(tokenizer, documents[index])
            longest = max(longest, len(ids))
            if len(ids) <= seqlen:
                too_short.add(index)
                continue
            tokenized[index] = ids
        start = rng.randint(0, len(ids) - seqlen - 1)
        windows.append(ids[start : start + seqlen])
    return torch.stack(windows)


def calibration_tokens(
    spec: CalibrationSpec,
    documents: Sequence[str] | None,
    tokenizer: Any,
    vocab_size: int,
    max_context: int | None = None,
) -> CalibrationSet:
    """Draw ``spec.nsamples`` windows of ``spec.seqlen`` tokens (capped at ``max_context``), seeded.

    ``documents`` comes from ``load_documents`` (None for ``random``); ``vocab_size`` bounds random ids.
    """
    seqlen = spec.seqlen
    if max_context is not None and seqlen > max_context:
        log.info("calibration seqlen=%d capped at the model's context of %d tokens", seqlen, max_context)
        seqlen = max_context
    if documents is None:
        generator = torch.Generator().manual_seed(spec.seed)
        input_ids = torch.randint(0, vocab_size, (spec.nsamples, seqlen), generator=generator)
    else:
        input_ids = _sample_windows(documents, tokenizer, spec.nsamples, seqlen, spec.seed, spec.source)
    return CalibrationSet(input_ids, spec.source, spec.seed)
