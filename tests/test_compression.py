"""Magnitude pruning on tiny models of every architecture: exact sparsity, exact N:M, nothing else touched."""

from __future__ import annotations

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from llmkick_models.arguments import build_spec
from llmkick_models.engine.compress import compress_model
from llmkick_models.engine.model_layout import decoder_linears
from tiny_models import ARCHITECTURES, build_model, build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def _target_param_names(model: torch.nn.Module) -> set[str]:
    return {f"{t.name}.weight" for t in decoder_linears(model)}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_unstructured_magnitude_is_exact_and_local(arch: str, tokenizer) -> None:
    model = build_model(arch, tokenizer)
    before = _snapshot(model)
    report = compress_model(model, build_spec("magnitude", 0.5))
    after = model.state_dict()
    targets = _target_param_names(model)
    for name, tensor in after.items():
        if name not in targets:  # embeddings, lm_head, norms, biases: untouched
            assert torch.equal(tensor, before[name]), name
    for target in decoder_linears(model):
        weight, original = target.weight, before[f"{target.name}.weight"]
        original = original.t() if isinstance(target.module, Conv1D) else original
        pruned = weight == 0
        assert int(pruned.sum()) == int(0.5 * weight.numel()), target.name
        assert torch.equal(weight[~pruned], original[~pruned])  # survivors keep their values
        assert original[pruned].abs().max() <= original[~pruned].abs().min()  # smallest |W| went
    assert report.overall_sparsity == pytest.approx(0.5)
    assert len(report.layers) == len(decoder_linears(model))


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("pattern", ["2:4", "4:8", "1:2"])
def test_nm_magnitude_pattern_holds_in_every_group(arch: str, pattern: str, tokenizer) -> None:
    model = build_model(arch, tokenizer)
    spec = build_spec("magnitude", pattern=pattern)
    report = compress_model(model, spec)
    n, m = spec.pattern.pruned, spec.pattern.group
    for target in decoder_linears(model):
        rows, cols = target.shape
        # Groups run along the INPUT dimension, also for GPT-2's transposed Conv1D weights.
        zeros = (target.weight.reshape(rows, cols // m, m) == 0).sum(-1)
        assert (zeros == n).all(), target.name
    assert all(layer.nm_violations == 0 for layer in report.layers)
    assert report.overall_sparsity == pytest.approx(n / m)


def test_tied_embeddings_stay_tied_and_dense(tokenizer) -> None:
    model = build_model("qwen2", tokenizer)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    embedding = model.model.embed_tokens.weight.detach().clone()
    compress_model(model, build_spec("magnitude", 0.7))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(model.model.embed_tokens.weight, embedding)


def test_report_matches_weights(tokenizer) -> None:
    model = build_model("llama", tokenizer)
    report = compress_model(model, build_spec("magnitude", 0.3))
    by_name = {layer.name: layer for layer in report.layers}
    for target in decoder_linears(model):
        assert by_name[target.name].zeros == int((target.weight == 0).sum())
    data = report.to_dict()
    assert data["spec"] == {"method": "magnitude", "sparsity": 0.3, "pattern": "unstructured"}
    assert data["compressed_linears"] == 14


def test_zero_sparsity_changes_nothing(tokenizer) -> None:
    model = build_model("llama", tokenizer)
    before = _snapshot(model)
    compress_model(model, build_spec("magnitude", 0.0))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_incompatible_width_refused_before_any_weight_changes(tokenizer) -> None:
    model = build_model("llama", tokenizer)
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"pattern=3:7.*input columns"):
        compress_model(model, build_spec("magnitude", pattern="3:7"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_zero_count_in_chunks_equals_the_plain_count(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """The report's zero count, row chunk by row chunk: -0.0 is a zero, NaN is not, any chunk size."""
    from llmkick_models.engine import report

    monkeypatch.setattr(report, "ZERO_COUNT_CHUNK", chunk)
    generator = torch.Generator().manual_seed(0)
    for shape in [(13, 29), (4, 3, 5), (11,)]:
        W = torch.randn(shape, generator=generator)
        W[W.abs() < 0.5] = 0.0
        W.view(-1)[0], W.view(-1)[1] = -0.0, float("nan")
        assert report.count_zeros(W) == W.numel() - int(torch.count_nonzero(W))
