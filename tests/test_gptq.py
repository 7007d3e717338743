"""GPTQ: equal to a textbook column-by-column OBS quantizer, better than RTN on every layer, act_order with
its inverse permutation, dampening retry, determinism, group-size checks, and the CLI report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from calibration_fixtures import calibration_set, compress_tiny, write_corpus
from task_fixtures import lm_eval_cli

from llmkick_models.arguments import build_spec
from llmkick_models.engine.calibration import CalibrationSet
from llmkick_models.engine.compress import compress_model
from llmkick_models.engine.hessian import HessianDampingWarning
from llmkick_models.engine.input_statistics import relative_reconstruction_error
from llmkick_models.engine.methods.gptq import gptq_quantize
from llmkick_models.engine.model_layout import decoder_linears
from llmkick_models.engine.quantizer import QuantizerConfig, fake_quantize, find_params, rtn_quantize
from llmkick_models.engine.spec import NMPattern
from tiny_models import build_model, build_tokenizer


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory):
    return calibration_set(str(write_corpus(tmp_path_factory.mktemp("gptq_corpus"))))


def _layer_problem(seed: int = 0, rows: int = 24, cols: int = 48, tokens: int = 256):
    """A weight and a correlated, full-rank Hessian of unequal feature scales (as real activations)."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(cols, cols, generator=generator) / math.sqrt(cols) + torch.eye(cols)
    X = (torch.randn(tokens, cols, generator=generator) * torch.linspace(0.2, 3, cols)) @ mixing
    return torch.randn(rows, cols, generator=generator), 2.0 / tokens * X.t() @ X


def _reference_gptq(
    W: torch.Tensor,
    H: torch.Tensor,
    config: QuantizerConfig,
    percdamp: float,
    blocksize: int = 128,
    act_order: bool = False,
) -> torch.Tensor:
    """Textbook GPTQ in float64: one column at a time, no lazy updates, the explicit inverse Hessian of the
    not-yet-quantized columns (Schur elimination).  Group grids with the reference's semantics: found at a
    group's first column on its columns as they stood when the current ``blocksize`` block began (every
    earlier column's update applied, none from this block's columns).  ``act_order``: columns by
    descending diag H, the result put back in the original order."""
    perm = torch.argsort(H.diagonal(), descending=True, stable=True) if act_order else None
    if perm is not None:
        W, H = W[:, perm], H[perm][:, perm]
    W = W.double().clone()
    H = H.double() + percdamp * H.diagonal().double().mean() * torch.eye(H.shape[0], dtype=torch.float64)
    Hinv = torch.linalg.inv(H)
    columns = W.shape[1]
    scale, zero = find_params(W, config)
    block_start = W.clone()
    for j in range(columns):
        if j % blocksize == 0:
            block_start = W.clone()
        if config.group_size is not None and j % config.group_size == 0:
            scale, zero = find_params(block_start[:, j : j + config.group_size], config)
        q = fake_quantize(W[:, j : j + 1], scale.double(), zero.double(), config.maxq).squeeze(1)
        err = (W[:, j] - q) / Hinv[j, j]
        W[:, j:] -= err.unsqueeze(1) * Hinv[j, j:].unsqueeze(0)  # column j becomes exactly q
        W[:, j] = q
        Hinv = Hinv - Hinv[:, j : j + 1] @ Hinv[j : j + 1, :] / Hinv[j, j]
    return W[:, torch.argsort(perm)] if perm is not None else W


@pytest.mark.parametrize("group_size", [None, 8, 16])
def test_gptq_equals_textbook_column_by_column_obs(group_size: int | None) -> None:
    W, H = _layer_problem(seed=1)
    # Asymmetric: the symmetric grid puts the most negative weight of a group exactly on a rounding tie
    # (−m/s = −7.5), which float round-off breaks either way; both results are valid, so not comparable.
    config = QuantizerConfig(4, False, group_size)
    # Blocks smaller and larger than the groups: lazy updates change nothing; the group grids follow the
    # block boundaries as in the reference.
    for blocksize in (5, 16, 128):
        expected = _reference_gptq(W, H, config, 0.01, blocksize)
        result = gptq_quantize(W, H, config, blocksize=blocksize, percdamp=0.01)
        mismatched = (result.Q.double() - expected).abs() > 1e-4
        assert int(mismatched.sum()) == 0, (blocksize, int(mismatched.sum()))


@pytest.mark.parametrize("blocksize", [5, 16, 128])
def test_a_narrower_last_group_is_found_as_the_reference_does(blocksize: int) -> None:
    """44 columns in groups of 16: the last group holds 12, found with the block's full-width groups in one
    call (or alone, mid-block at blocksize 5): the same grid as the reference's per-group search."""
    W, H = _layer_problem(seed=7, cols=44)
    config = QuantizerConfig(4, False, 16)
    expected = _reference_gptq(W, H, config, 0.01, blocksize)
    result = gptq_quantize(W, H, config, blocksize=blocksize, percdamp=0.01)
    mismatched = (result.Q.double() - expected).abs() > 1e-4
    assert int(mismatched.sum()) == 0, int(mismatched.sum())
    assert result.grid.scale.shape == (W.shape[0], 3)


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_gptq_groups_are_found_on_the_block_start_columns_as_the_reference(
    group_size: int, act_order: bool
) -> None:
    """The reference (IST-DASLab's fasterquant, GPTQ-for-LLaMa) finds a group's grid on W[:, j:j+g], which
    inside a block still holds the block-start values; group 64 < blocksize 128 is where that differs from
    a grid on the already-updated columns (the old behaviour, which this test rejects)."""
    W, H = _layer_problem(seed=4, rows=32, cols=256, tokens=1024)
    config = QuantizerConfig(4, False, group_size)
    expected = _reference_gptq(W, H, config, 0.01, 128, act_order)
    result = gptq_quantize(W, H, config, blocksize=128, percdamp=0.01, act_order=act_order)
    mismatched = (result.Q.double() - expected).abs() > 1e-4
    assert int(mismatched.sum()) == 0, int(mismatched.sum())
    if group_size < 128:
        # The grid on updated columns is a different (valid) quantizer: make sure the test can tell.
        updated = _reference_gptq(W, H, config, 0.01, 1, act_order)
        assert int(((updated - expected).abs() > 1e-4).sum()) > 0


@pytest.mark.parametrize("bits", [4, 3])
def test_gptq_beats_rtn_on_one_layer_with_the_same_hessian(bits: int) -> None:
    W, H = _layer_problem(seed=2)
    config = QuantizerConfig(bits, True, 16)
    rtn, _ = rtn_quantize(W, config)
    gptq = gptq_quantize(W, H, config).Q
    assert relative_reconstruction_error(W, gptq, H) < 0.8 * relative_reconstruction_error(W, rtn, H)


def test_act_order_uses_the_inverse_permutation_and_keeps_the_levels() -> None:
    W, H = _layer_problem(seed=3)
    config = QuantizerConfig(3, True, 16)
    plain = gptq_quantize(W, H, config)
    ordered = gptq_quantize(W, H, config, act_order=True)
    static = gptq_quantize(W, H, config, act_order=True, static_groups=True)
    assert not torch.equal(plain.Q, ordered.Q) and not torch.equal(ordered.Q, static.Q)
    # Undoing the permutation correctly puts every weight back in its column: each Q lies on its grid.
    for result in (ordered, static):
        torch.testing.assert_close(result.grid.dequantize(result.Q), result.Q)
        groups = result.grid.group_of_columns(W.shape[1])
        for g in groups.unique():
            assert max(len(torch.unique(row)) for row in result.Q[:, groups == g]) <= 2**3
        # And GPTQ still beats RTN: a mis-permuted result would be far worse.
        assert relative_reconstruction_error(W, result.Q, H) < relative_reconstruction_error(
            W, rtn_quantize(W, config)[0], H
        )
    assert ordered.grid.g_idx is not None and static.grid.g_idx is None
    assert torch.equal(static.grid.group_of_columns(48), torch.arange(48) // 16)


@pytest.mark.parametrize("bits", [4, 3])
def test_gptq_beats_rtn_on_every_layer_of_the_tiny_model(calibration, bits: int) -> None:
    _, gptq = compress_tiny("llama", calibration, "gptq", bits=bits, group_size=32)
    _, rtn = compress_tiny("llama", calibration, "rtn", bits=bits, group_size=32)
    for g, r in zip(gptq.layers, rtn.layers, strict=True):
        assert g.name == r.name and g.extra["bits"] == bits and g.extra["group_size"] == 32
        assert 0 < g.extra["recon_error"] < r.extra["recon_error"], g.name


def test_eight_bits_is_nearly_lossless_and_levels_are_bounded(calibration) -> None:
    model, report = compress_tiny("gpt2", calibration, "gptq", bits=8, group_size=-1, act_order=True)
    assert all(layer.extra["recon_error"] < 1e-4 for layer in report.layers)
    for target in decoder_linears(model):
        assert max(len(torch.unique(row)) for row in target.weight) <= 256, target.name


def test_gptq_is_deterministic(calibration) -> None:
    first, _ = compress_tiny("qwen2", calibration, "gptq", bits=4, group_size=32, act_order=True)
    again, _ = compress_tiny("qwen2", calibration, "gptq", bits=4, group_size=32, act_order=True)
    for a, b in zip(decoder_linears(first), decoder_linears(again), strict=True):
        assert torch.equal(a.weight, b.weight)


def test_rank_deficient_hessian_retries_dampening_and_reports_it() -> None:
    tiny = CalibrationSet(
        torch.randint(0, 384, (1, 16), generator=torch.Generator().manual_seed(0)), "random", 0
    )
    with pytest.warns(HessianDampingWarning, match="retrying"):
        _, report = compress_tiny("llama", tiny, "gptq", bits=4, group_size=32, percdamp=0.0)
    assert all(layer.extra["percdamp"] > 0 for layer in report.layers)


def test_group_size_that_does_not_divide_a_layer_is_refused_before_any_change(calibration) -> None:
    model = build_model("llama", build_tokenizer())
    before = [t.weight.clone() for t in decoder_linears(model)]
    spec = build_spec("gptq", bits=4, group_size=48, calibration="random")
    with pytest.raises(ValueError, match=r"group_size=48: layer model\.layers\.0\.self_attn\.q_proj has 64"):
        compress_model(model, spec, calibration=calibration)
    assert all(torch.equal(b, t.weight) for b, t in zip(before, decoder_linears(model), strict=True))


def test_lm_eval_cli_results_carry_the_per_layer_quantization_report(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    args = (
        f"pretrained={tiny_llama_dir},method=gptq,bits=4,group_size=32,calibration={corpus},"
        "nsamples=8,seqlen=32"
    )
    results, _ = lm_eval_cli(args, local_task_dir, tmp_path / "out")
    report = results["config"]["llmkick_compression"]
    assert report["spec"]["bits"] == 4 and report["spec"]["group_size"] == 32
    assert report["calibration"]["nsamples"] == 8
    assert len(report["layers"]) == 14
    for name, layer in report["layers"].items():
        assert layer["extra"]["bits"] == 4 and layer["extra"]["group_size"] == 32, name
        assert 0 < layer["extra"]["recon_error"] < 0.1, name


@pytest.mark.parametrize("act_order", [False, True])
def test_errors_from_the_column_loop_equal_the_hessian_quadratic_form(act_order: bool) -> None:
    """The loop's ‖Err‖² − λ‖ΔW‖² is tr(ΔW H ΔWᵀ): the reported error needs no second product with H for
    its numerator — per stacked matrix, with a dead input, and for SparseGPT's loop too."""
    from llmkick_models.engine.methods.sparsegpt import sparsegpt_rows

    W, H = _layer_problem(seed=5)
    H[3, :] = 0.0
    H[:, 3] = 0.0  # a dead input: its weights are dropped for free
    config = QuantizerConfig(4, True, 16)
    splits = [10, 14]
    H_given, W_given = H.clone(), W.clone()
    result = gptq_quantize(W, H, config, act_order=act_order, splits=splits)
    pruned = sparsegpt_rows(W, H, 0.5, None, 16, 0.01, "layer", splits=splits)
    assert torch.equal(H, H_given) and torch.equal(W, W_given)  # the dead input is handled on copies
    # Joint 2:4 + 4-bit with groups inside a block: the group grid must be found on a copy of the block's
    # columns (masking the block in place dropped pruned weights without their OBS update).
    joint = sparsegpt_rows(W, H, 0.5, NMPattern(2, 4), 48, 0.01, "layer", config, splits=splits)
    cases = ((result.Q, result.errors), (pruned.W_hat, pruned.errors), (joint.W_hat, joint.errors))
    for Q, errors in cases:
        assert len(errors) == 2
        for rows, error in zip((slice(0, 10), slice(10, 24)), errors, strict=True):
            assert error == pytest.approx(relative_reconstruction_error(W[rows], Q[rows], H), rel=1e-4)


@pytest.mark.parametrize(("group_size", "act_order"), [(None, False), (64, False), (24, True)])
def test_two_level_lazy_update_equals_updating_every_column_at_once(
    monkeypatch: pytest.MonkeyPatch, group_size: int | None, act_order: bool
) -> None:
    """Inner windows of 5, 16 or a whole block give the result of a one-column window (every later column
    of the block updated at each column) up to round-off, with a mask kept at zero."""
    from llmkick_models.engine import column_loop

    W, H = _layer_problem(seed=6, rows=40, cols=200, tokens=512)
    mask = torch.rand(W.shape, generator=torch.Generator().manual_seed(1)) < 0.3
    config = QuantizerConfig(4, False, group_size)
    results = {}
    for inner in (1, 5, 16, 1000):
        monkeypatch.setattr(column_loop, "INNER_BLOCK", inner)
        results[inner] = gptq_quantize(
            W, H, config, blocksize=64, act_order=act_order, mask=mask, splits=[16, 24]
        )
    for inner in (5, 16, 1000):
        mismatched = (results[inner].Q - results[1].Q).abs() > 1e-4
        assert int(mismatched.sum()) == 0, (inner, int(mismatched.sum()))
        assert bool((results[inner].Q[mask] == 0).all())
        torch.testing.assert_close(results[inner].errors, results[1].errors, rtol=1e-4, atol=0)
