"""Small, deterministic calibration inputs for the calibrated-pruning tests (nothing downloads)."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from llmkick_models.arguments import build_spec
from llmkick_models.engine.calibration import CalibrationSet, calibration_tokens, load_documents
from llmkick_models.engine.compress import compress_model
from llmkick_models.engine.report import CompressionReport
from tiny_models import CORPUS, build_model, build_tokenizer

WORDS = sorted({word for sentence in CORPUS for word in sentence.split()})


def english_like_text(words: int, seed: int = 0) -> str:
    """Sentences of the tiny tokenizer's vocabulary in random order: real tokens, varied statistics."""
    rng = random.Random(seed)
    sentences, count = [], 0
    while count < words:
        length = rng.randint(5, 14)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(length)).capitalize() + ".")
        count += length
    return " ".join(sentences)


def write_corpus(directory: Path, words: int = 4000, seed: int = 0) -> Path:
    """A plain-text calibration file under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "calibration.txt"
    path.write_text(english_like_text(words, seed))
    return path


def calibration_set(source: str, nsamples: int = 16, seqlen: int = 64, seed: int = 0) -> CalibrationSet:
    """Windows drawn exactly as compressed-hf draws them, with the tiny tokenizer."""
    tokenizer = build_tokenizer()
    spec = build_spec(
        "wanda", 0.5, calibration=source, nsamples=nsamples, seqlen=seqlen, calibration_seed=seed
    )
    assert spec.calibration is not None
    return calibration_tokens(spec.calibration, load_documents(spec.calibration), tokenizer, len(tokenizer))


def compress_tiny(
    arch: str, calibration: CalibrationSet | None, method: str, model_seed: int = 0, **args: object
) -> tuple[torch.nn.Module, CompressionReport]:
    """Build the tiny ``arch`` model and compress it with ``method`` and ``args`` (model_args spelling)."""
    model = build_model(arch, build_tokenizer(), seed=model_seed)
    if calibration is not None and "calibration" not in args:
        args = {**args, "calibration": "random"}  # any valid source: the tokens come from ``calibration``
    spec = build_spec(method, **args)  # type: ignore[arg-type]
    return model, compress_model(model, spec, calibration=calibration)
