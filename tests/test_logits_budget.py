"""On lm-eval's full-logits path (``$LLMKICK_SCORING=full-logits``, or a model that cannot be split at its
head) compressed-hf cuts loglikelihood batches to a logits memory budget; scores do not change."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_models.logits_budget import (
    BUDGET_ENV,
    SCORING_ENV,
    body_budget_bytes,
    body_row_bytes,
    body_rows,
    bounded_batch_size,
    budget_bytes,
    bytes_per_logit,
    chunk_positions,
)


def test_batch_is_cut_to_the_budget() -> None:
    gemma_window = 2048 * 262_144 * 8  # one 2048-token window of a 262k vocabulary, float32 logits + softmax
    assert bounded_batch_size(16, 2048, 262_144, 8, budget=2 * gemma_window) == 2
    assert bounded_batch_size(16, 2048, 262_144, 8, budget=2**30) == 1  # never below one sequence
    assert bounded_batch_size(4, 10, 100, 8, budget=2**30) == 4  # small requests keep the asked batch
    assert bytes_per_logit(torch.float32, None) == 12 and bytes_per_logit(torch.float32, torch.float32) == 12
    # bfloat16 logits, their float32 copy, its log-softmax and the previous batch's log-softmax
    assert bytes_per_logit(torch.bfloat16, torch.float32) == 2 + 3 * 4


def test_the_chunk_is_cut_to_the_budget() -> None:
    # float32: the logits and their log-softmax; bfloat16: the logits, their float32 copy, its log-softmax
    assert chunk_positions(262_144, torch.float32, torch.float32, budget=256 * 2**20) == 128
    assert chunk_positions(262_144, torch.bfloat16, torch.float32, budget=10 * 262_144 * 5) == 5
    assert chunk_positions(262_144, torch.float32, torch.float32, budget=1) == 1  # never below one position


def test_the_body_rows_are_cut_to_the_budget() -> None:
    # Gemma-3-270m's shape: per token 3 x 2048 (MLP) + 4 x 640 + (4 + 2 x 1) x 256 (q, k, v) + 4 x 2048 scores
    gemma = SimpleNamespace(hidden_size=640, intermediate_size=2048, num_attention_heads=4,
                            num_key_value_heads=1, head_dim=256)  # fmt: skip
    per_token = 3 * 2048 + 4 * 640 + 6 * 256 + 4 * 2048
    assert body_row_bytes(gemma, torch.float32, 2048) == per_token * 2048 * 4
    assert body_row_bytes(gemma, torch.bfloat16, 2048) == per_token * 2048 * 2
    assert (
        body_rows(per_token * 2048 * 4, 256 * 2**20) == 1
        and body_rows(per_token * 2048 * 2, 256 * 2**20) == 3
    )
    assert body_rows(10**12, 1) == 1  # never below one row
    # no attention heads (attention-free), no MLP width (GPT-2: 4 x hidden), no hidden size: no estimate
    assert (
        body_row_bytes(SimpleNamespace(hidden_size=64), torch.float32, 10) == (4 * 64 * 3 + 4 * 64) * 10 * 4
    )
    assert body_row_bytes(SimpleNamespace(d_model=64), torch.float32, 10) is None


def test_a_config_without_a_hidden_size_runs_whole_batches_with_a_warning(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import llmkick_models.compressed_hf as compressed_hf

    monkeypatch.setattr(compressed_hf, "body_row_bytes", lambda config, dtype, length: None)
    monkeypatch.setenv(BUDGET_ENV, "0.01")  # far below a row's activations, were they estimated
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", batch_size=4)
    bodies: list[int] = []
    lm.model.base_model.register_forward_pre_hook(
        lambda _module, args, kwargs: bodies.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    with caplog.at_level(logging.WARNING):
        lm._loglikelihood_tokens(
            [(None, [lm.prefix_token_id], list(range(5 + i, 25 + i))) for i in range(6)], disable_tqdm=True
        )
    assert bodies[-2:] == [4, 2]  # after the split's probe: lm-eval's batches
    assert ("llmkick: the model's config names no hidden_size: its body runs on lm-eval's whole batches, "
            "their activations not bounded by the logits budget") in caplog.text  # fmt: skip


def test_budget_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    assert budget_bytes() == 256 * 2**20
    monkeypatch.setenv(BUDGET_ENV, "64")
    assert budget_bytes() == 64 * 2**20
    for bad in ("0", "lots"):
        monkeypatch.setenv(BUDGET_ENV, bad)
        with pytest.raises(ValueError, match=f"{BUDGET_ENV}='{bad}'"):
            budget_bytes()


def test_bad_budget_fails_before_the_model_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(BUDGET_ENV, "-1")
    with pytest.raises(ValueError, match=BUDGET_ENV):
        CompressedHFLM(pretrained=str(tmp_path / "no-such-model"))


def _six_40_token_requests(lm: CompressedHFLM) -> list:
    return [(("", ""), [lm.prefix_token_id], list(range(5 + i, 45 + i))) for i in range(6)]


def _batch_sizes(lm: CompressedHFLM, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch size of every full-logits forward pass of ``lm`` from now on, appended as they run."""
    seen: list[int] = []
    original = lm._model_call

    def spy(inps: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        seen.append(inps.shape[0])
        return original(inps, *args, **kwargs)

    monkeypatch.setattr(lm, "_model_call", spy)
    return seen


def test_cut_batches_give_the_same_scores(tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCORING_ENV, "full-logits")
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", batch_size=4)
    requests = _six_40_token_requests(lm)
    seen = _batch_sizes(lm, monkeypatch)
    full = lm._loglikelihood_tokens(requests)
    assert max(seen) == 4
    seen.clear()
    # One 40-token sequence of the tiny vocabulary's logits costs ~180 KB: a 0.3 MiB budget fits one.
    monkeypatch.setenv(BUDGET_ENV, "0.3")
    cut = lm._loglikelihood_tokens(requests)
    assert seen == [1] * 6 and lm.batch_size == 4  # the asked batch size is restored afterwards
    assert [ll for ll, _ in cut] == pytest.approx([ll for ll, _ in full], rel=1e-5)


def test_a_16_bit_model_is_budgeted_for_its_float32_log_softmax(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SCORING_ENV, "full-logits")
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", batch_size=4, dtype="bfloat16")
    assert lm.softmax_dtype == torch.float32
    requests = _six_40_token_requests(lm)
    seen = _batch_sizes(lm, monkeypatch)
    per_sequence = 40 * lm.model.config.vocab_size * (2 + 3 * 4)  # 40 tokens, bf16 logits + 3 float32
    monkeypatch.setenv(BUDGET_ENV, str(2.5 * per_sequence / 2**20))  # room for two such sequences
    lm._loglikelihood_tokens(requests)
    assert seen == [2, 2, 2]


def test_the_body_budget_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU keeps the default (host memory is what is protected); a GPU gets half its free memory, so
    lm-eval's batches are not cut into small sub-batches there; an explicit budget wins everywhere."""
    monkeypatch.delenv("LLMKICK_LOGITS_BUDGET_MB", raising=False)
    free = 40 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 80 * 2**30))
    assert body_budget_bytes("cpu") == budget_bytes() == 256 * 2**20
    assert body_budget_bytes(torch.device("cuda", 0)) == free // 2
    free = 100 * 2**20  # a nearly full GPU still gets the default, not less
    assert body_budget_bytes("cuda:0") == 256 * 2**20
    monkeypatch.setenv("LLMKICK_LOGITS_BUDGET_MB", "64")
    assert body_budget_bytes("cuda:0") == body_budget_bytes("cpu") == 64 * 2**20
