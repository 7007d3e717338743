"""compressed-hf scores loglikelihood requests from the final hidden states, the LM head a chunk at a time.

The scores must equal lm-eval's full-logits path (``$LLMKICK_SCORING=full-logits``) on every tiny
architecture, on architectures that transform the head's output (Gemma's soft-capping, Cohere's and
Granite's scaling), and the LM head must never see more positions than the logits budget allows, nor the
model's body more rows of a batch than the same budget holds of their estimated activations.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_models.logits_budget import BUDGET_ENV, SCORING_ENV, body_row_bytes, chunk_positions
from tiny_models import ARCHITECTURES, build_tokenizer

#: Tiny configs of architectures whose forward pass transforms the LM head's output.
TRANSFORMING = {
    "gemma3_softcap": lambda vocab: transformers.Gemma3TextConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, sliding_window=16, final_logit_softcapping=5.0,
        max_position_embeddings=256, bos_token_id=vocab - 1, eos_token_id=0, pad_token_id=0,
    ),
    "cohere": lambda vocab: transformers.CohereConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, logit_scale=0.25, max_position_embeddings=256, bos_token_id=vocab - 1,
        eos_token_id=0, pad_token_id=0,
    ),
    "granite": lambda vocab: transformers.GraniteConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, logits_scaling=3.0, max_position_embeddings=256, bos_token_id=vocab - 1,
        eos_token_id=0, pad_token_id=0,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def transforming_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A saved tiny model per transforming architecture, its head sharpened so the transforms matter."""
    folders = {}
    tokenizer = build_tokenizer()
    for name, config in TRANSFORMING.items():
        torch.manual_seed(1)
        model = transformers.AutoModelForCausalLM.from_config(config(len(tokenizer)), dtype=torch.float32)
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(30.0)  # logits of tens: soft-capping at 5 bites
        folders[name] = tmp_path_factory.mktemp(name)
        model.save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    return folders


def _requests(lm: CompressedHFLM) -> list[Any]:
    """A mix of what lm-eval asks: perplexity windows (empty context), multi-token continuations, one-token
    choices sharing a context (grouped by lm-eval), a request longer than the model's window (cut from the
    left), and continuations that are the model's own greedy choice (so the greedy flag is sometimes true)."""
    generator = torch.Generator().manual_seed(0)

    def tokens(count: int) -> list[int]:
        return torch.randint(1, 380, (count,), generator=generator).tolist()

    requests: list[Any] = [(None, [lm.prefix_token_id], tokens(40 + i)) for i in range(3)]
    requests += [((f"c{i}", f"x{i}"), tokens(3 + 2 * i), tokens(1 + 3 * i)) for i in range(5)]
    shared = tokens(9)
    requests += [(("choice", str(token)), shared, [token]) for token in (11, 12, 13, 14)]
    requests.append((("long", "x"), tokens(60), tokens(10)))  # > max_length=48: cut from the left
    for i in range(3):
        context = tokens(5 + i)
        with torch.no_grad():
            best = int(lm.model(torch.tensor([context])).logits[0, -1].argmax())
        requests.append(((f"greedy{i}", "x"), context, [best]))
    return requests


def _use(lm: CompressedHFLM, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """Switch ``lm`` to ``method`` (its probe runs now, before any spy is attached)."""
    monkeypatch.setenv(SCORING_ENV, method)
    lm._scoring = None
    lm._resolve_scoring()


def _head_positions(lm: CompressedHFLM) -> list[int]:
    """Positions per LM-head call (every dimension of its input but the hidden one), recorded from now on."""
    seen: list[int] = []
    lm.model.get_output_embeddings().register_forward_pre_hook(
        lambda _module, args: seen.append(args[0].shape[:-1].numel())
    )
    return seen


def _assert_chunked_equals_full(
    lm: CompressedHFLM,
    monkeypatch: pytest.MonkeyPatch,
    chunk: int = 7,
    extra: list[Any] | None = None,
    sub_batches: bool = True,
) -> None:
    """Chunked and full-logits scores agree within 1e-6 relative, greedy flags exactly, the LM head never
    sees more than ``chunk`` positions (7 by default: windows and batches span several chunks), and the
    body runs on sub-batches of lm-eval's batches (``sub_batches``: their activations are beyond so small a
    budget)."""
    requests = _requests(lm) + (extra or [])
    # The reference is lm-eval's own full-logits path on the same batches (a batch cut changes the padded
    # lengths, and with them the rounding of the forward pass, by ~1e-5 of a log-prob on a real model).
    monkeypatch.setenv(BUDGET_ENV, str(10**6))
    _use(lm, monkeypatch, "full-logits")
    full = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    per_position = chunk_positions(lm._vocab(), lm.model.dtype, lm.softmax_dtype, 2**30) / 2**30
    monkeypatch.setenv(BUDGET_ENV, str((chunk + 0.5) / per_position / 2**20))
    _use(lm, monkeypatch, "chunked")
    assert lm.get_model_info()["llmkick_scoring"]["logits"] == "chunked"
    seen = _head_positions(lm)
    bodies = _body_rows(lm)
    chunked = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    assert seen and max(seen) == chunk
    # the reference ran lm-eval's whole batches; a budget this small runs the body on fewer rows at a time
    assert (max(bodies) < lm.batch_size_per_gpu) == sub_batches
    assert [ll for ll, _ in chunked] == pytest.approx([ll for ll, _ in full], rel=1e-6)
    assert [greedy for _, greedy in chunked] == [greedy for _, greedy in full]
    assert any(greedy for _, greedy in full) and not all(greedy for _, greedy in full)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_chunked_scores_equal_the_full_logits(
    arch: str, tiny_model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = CompressedHFLM(pretrained=str(tiny_model_dirs[arch]), device="cpu", batch_size=4, max_length=48)
    _assert_chunked_equals_full(lm, monkeypatch)


@pytest.mark.parametrize("name", sorted(TRANSFORMING))
def test_head_transforms_are_applied_per_chunk(
    name: str, transforming_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = CompressedHFLM(pretrained=str(transforming_dirs[name]), device="cpu", batch_size=4, max_length=48)
    _assert_chunked_equals_full(lm, monkeypatch)


def test_a_bfloat16_model_is_scored_the_same(tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lm = CompressedHFLM(
        pretrained=str(tiny_llama_dir), device="cpu", batch_size=4, max_length=48, dtype="bfloat16"
    )
    assert lm.softmax_dtype == torch.float32
    _assert_chunked_equals_full(lm, monkeypatch)


def _body_rows(lm: CompressedHFLM) -> list[int]:
    """Rows per forward pass of the model's body, recorded from now on."""
    seen: list[int] = []
    lm.model.base_model.register_forward_pre_hook(
        lambda _module, args, kwargs: seen.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    return seen


def _windows(lm: CompressedHFLM) -> list[Any]:
    """Six perplexity-style requests: 40-token windows (lm-eval's batches of 4 and 2 at ``batch_size=4``)."""
    return [(None, [lm.prefix_token_id], list(range(5 + i, 45 + i))) for i in range(6)]


def test_the_budget_bounds_the_chunk_and_the_body_runs_one_window_at_a_time(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", batch_size=4)
    # 0.05 MiB: ~17 positions of a 384-entry vocabulary, less than one 40-token window (the full-logits
    # path would cut the batch to one sequence), and less than one window's activations
    monkeypatch.setenv(BUDGET_ENV, "0.05")
    _use(lm, monkeypatch, "chunked")
    assert body_row_bytes(lm.model.config, torch.float32, 40) > 0.05 * 2**20
    bodies = _body_rows(lm)
    heads = _head_positions(lm)
    lm._loglikelihood_tokens(_windows(lm), disable_tqdm=True)
    assert bodies == [1] * 6  # lm-eval's batches of 4 and 2, one row per forward pass
    chunk = chunk_positions(lm._vocab(), torch.float32, torch.float32, int(0.05 * 2**20))
    assert 1 < chunk < 40 and max(heads) == chunk
    # each window in as many chunks as its positions need (a short last one is padded)
    assert len(heads) == 6 * math.ceil(40 / chunk)


def test_a_batch_beyond_the_budget_runs_in_sub_batches_with_the_same_scores(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", batch_size=4)
    requests = _windows(lm)
    _use(lm, monkeypatch, "chunked")
    whole_bodies = _body_rows(lm)
    whole = lm._loglikelihood_tokens(requests, disable_tqdm=True)  # the default budget holds a batch of 4
    assert whole_bodies == [4, 2]
    # a budget of two and a half windows' activations: sub-batches of two rows, each padded to its batch
    monkeypatch.setenv(BUDGET_ENV, str(2.5 * body_row_bytes(lm.model.config, torch.float32, 40) / 2**20))
    bodies = _body_rows(lm)
    heads = _head_positions(lm)
    split = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    assert bodies == [2, 2, 2]
    assert heads == [80, 80, 80]  # each sub-batch scored on its own (the budget holds its 80 positions)
    assert [ll for ll, _ in split] == pytest.approx([ll for ll, _ in whole], rel=1e-6)
    assert [greedy for _, greedy in split] == [greedy for _, greedy in whole]


def test_an_unknown_head_transform_falls_back_to_the_full_logits(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", batch_size=4)
    forward = lm.model.forward

    def shifted(*args: Any, **kwargs: Any) -> Any:  # an architecture that adds a bias to its logits
        output = forward(*args, **kwargs)
        output.logits = output.logits + torch.linspace(0, 1, output.logits.shape[-1])
        return output

    monkeypatch.setattr(lm.model, "forward", shifted)
    requests = _requests(lm)
    with caplog.at_level(logging.WARNING):
        scores = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    scoring = lm.get_model_info()["llmkick_scoring"]
    assert scoring["logits"] == "full"
    assert (
        "transforms the LM head's output in a way this scorer does not know" in scoring["full_logits_reason"]
    )
    assert "llmkick: loglikelihood falls back to lm-eval's full logits (batches cut to the logits budget): " \
           "its forward pass transforms" in caplog.text  # fmt: skip
    _use(lm, monkeypatch, "full-logits")
    assert lm._loglikelihood_tokens(requests, disable_tqdm=True) == scores


def test_a_model_without_a_separate_body_falls_back(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", batch_size=4)
    monkeypatch.setattr(lm.model, "base_model_prefix", "no_such_module")  # base_model is then the model
    lm._loglikelihood_tokens(_requests(lm)[:3], disable_tqdm=True)
    reason = lm.get_model_info()["llmkick_scoring"]["full_logits_reason"]
    assert reason == "LlamaForCausalLM has no separate body and LM head (base_model / get_output_embeddings)"


def test_a_continuation_longer_than_the_window_is_refused(tiny_llama_dir: Path) -> None:
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", max_length=16)
    with pytest.raises(ValueError, match=r"17-token continuation: .* at most max_length=16"):
        lm._loglikelihood_tokens([(None, [lm.prefix_token_id], list(range(5, 22)))], disable_tqdm=True)


def test_a_sequence_to_sequence_model_is_not_split(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu")
    monkeypatch.setattr(
        lm, "backend", "seq2seq"
    )  # its scored logits come from the decoder, not a body + head
    assert lm._resolve_scoring() == {"logits": "full", "full_logits_reason": "a seq2seq model"}


def test_the_scoring_switch_is_checked_before_loading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(SCORING_ENV, "fast")
    with pytest.raises(ValueError, match=r"\$LLMKICK_SCORING='fast': allowed chunked or full-logits"):
        CompressedHFLM(pretrained=str(tmp_path / "no-such-model"))


def test_the_results_name_the_scoring_method(tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu")
    assert lm.get_model_info()["llmkick_scoring"]["logits"] == "chunked"
    monkeypatch.setenv(SCORING_ENV, "full-logits")
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu")
    scoring = lm.get_model_info()["llmkick_scoring"]
    assert scoring["logits"] == "full" and scoring["full_logits_reason"] == "$LLMKICK_SCORING=full-logits"


@pytest.mark.slow
def test_gemma3_270m_chunked_scores_equal_the_full_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the real Gemma-3-270m (262k vocabulary): ``$LLMKICK_GEMMA3_DIR`` names a converted HF folder
    (``scripts/demo.sh`` makes one from PyPI)."""
    folder = os.environ.get("LLMKICK_GEMMA3_DIR")
    if not folder or not Path(folder, "config.json").is_file():
        pytest.skip("set $LLMKICK_GEMMA3_DIR to a Gemma-3-270m HF folder (scripts/demo.sh converts one)")
    lm = CompressedHFLM(pretrained=folder, device="cpu", batch_size=4, max_length=512)
    generator = torch.Generator().manual_seed(1)
    windows = [(None, [lm.prefix_token_id], torch.randint(3, 262_000, (512,), generator=generator).tolist())
               for _ in range(2)]  # fmt: skip
    # a 100-position chunk's budget holds the activations of 8 windows of 512 tokens: no sub-batches
    _assert_chunked_equals_full(lm, monkeypatch, chunk=100, extra=windows, sub_batches=False)
