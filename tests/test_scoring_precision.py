"""compressed-hf scores log-probabilities in float32 (or wider) whatever the model's dtype.

lm-eval's HFLM takes the log-softmax, and sums the continuation's log-probs, in the logits' dtype unless
``softmax_dtype`` is given; in bfloat16 a long window's log-likelihood then comes back rounded to a coarse
step.  The tiny model here is saved in bfloat16 with a sharpened LM head, so that a WikiText-2-style window
of ~250 tokens has a log-likelihood in the thousands, where bfloat16's spacing is 8 to 32 nats.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from lm_eval.api.instance import Instance

from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_tasks.wikitext2.windows import joined_text, release_rows, token_windows
from tiny_models import CORPUS, build_model, build_tokenizer

SEQLEN = 240


@pytest.fixture(scope="module")
def bf16_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama saved in bfloat16 whose logits spread over tens of nats (large negative log-probs)."""
    folder = tmp_path_factory.mktemp("bf16_llama")
    tokenizer = build_tokenizer()
    model = build_model("llama", tokenizer, seed=3)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # random init gives near-uniform logits; sharpen them
    model.to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _windows(folder: Path) -> list[str]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    text = joined_text(release_rows(CORPUS))
    windows = token_windows(tokenizer, text, SEQLEN, windows=3)
    assert len(windows) == 3 and all(w["round_trip"] for w in windows)
    return [w["text"] for w in windows]


def _reference(folder: Path, texts: list[str]) -> list[float]:
    """Each window's log-likelihood from transformers directly: the same bfloat16 weights and forward pass,
    logits upcast to float32 before the log-softmax, the token log-probs summed in float64."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    prefix = tokenizer.bos_token_id
    scores = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([[prefix, *ids[:-1]]])).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        scores.append(float(logprobs[torch.arange(len(ids)), torch.tensor(ids)].double().sum()))
    return scores


def _score(lm: CompressedHFLM, texts: list[str]) -> tuple[list[float], list[float]]:
    """Each window through ``loglikelihood`` (empty context, as ``llmkick_wikitext2_ppl`` asks) and
    ``loglikelihood_rolling`` (as the per-article task does)."""
    single = lm.loglikelihood(
        [Instance("loglikelihood", {}, ("", text), i) for i, text in enumerate(texts)], disable_tqdm=True
    )
    rolling = lm.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (text,), i) for i, text in enumerate(texts)], disable_tqdm=True
    )
    return [ll for ll, _ in single], list(rolling)


def test_bfloat16_windows_are_scored_in_float32(bf16_model_dir: Path) -> None:
    texts = _windows(bf16_model_dir)
    expected = _reference(bf16_model_dir, texts)
    # The test can fail: rounding each reference to bfloat16 moves at least one by more than the tolerance.
    assert max(abs(float(torch.tensor(e).bfloat16()) - e) / abs(e) for e in expected) > 1e-3
    lm = CompressedHFLM(pretrained=str(bf16_model_dir), device="cpu", dtype="bfloat16", max_length=256)
    assert lm.model.dtype == torch.bfloat16
    single, rolling = _score(lm, texts)
    assert single == pytest.approx(expected, rel=1e-3)
    assert rolling == pytest.approx(expected, rel=1e-3)
    scoring = lm.get_model_info()["llmkick_scoring"]
    assert scoring == {"softmax_dtype": "float32", "softmax_dtype_from": "default", "logits": "chunked"}


def test_an_explicit_softmax_dtype_is_used_and_recorded(bf16_model_dir: Path) -> None:
    texts = _windows(bf16_model_dir)[:1]
    lm = CompressedHFLM(
        pretrained=str(bf16_model_dir),
        device="cpu",
        dtype="bfloat16",
        softmax_dtype="bfloat16",
        max_length=256,
    )
    assert lm.softmax_dtype == torch.bfloat16
    single, _ = _score(lm, texts)
    assert float(torch.tensor(single[0]).bfloat16()) == single[0]  # the user's dtype, rounding and all
    scoring = lm.get_model_info()["llmkick_scoring"]
    assert scoring == {"softmax_dtype": "bfloat16", "softmax_dtype_from": "model_args", "logits": "chunked"}


def test_a_float64_model_is_not_scored_narrower(tiny_llama_dir: Path) -> None:
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", dtype="float64")
    assert lm.softmax_dtype == torch.float64
    assert lm.get_model_info()["llmkick_scoring"]["softmax_dtype"] == "float64"
