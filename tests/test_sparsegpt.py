"""SparseGPT and the shared Hessian algebra: exactness, OBS updates, dampening retry, no silent fallback."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from calibration_fixtures import calibration_set, compress_tiny, write_corpus

from llmkick_models.engine.calibration import CalibrationSet
from llmkick_models.engine.hessian import (
    HessianDampingWarning,
    HessianError,
    damped_inverse_cholesky,
    lower_triangular_inverse,
)
from llmkick_models.engine.input_statistics import InputStatistics, relative_reconstruction_error
from llmkick_models.engine.masks import count_nm_violations
from llmkick_models.engine.methods.sparsegpt import sparsegpt_prune
from llmkick_models.engine.model_layout import decoder_linears
from llmkick_models.engine.spec import NMPattern
from tiny_models import ARCHITECTURES, build_model, build_tokenizer


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory):
    return calibration_set(str(write_corpus(tmp_path_factory.mktemp("sparsegpt_corpus"))))


def _layer_problem(seed: int = 0, rows: int = 24, cols: int = 32, tokens: int = 256):
    """A weight and a correlated, full-rank Hessian (features mixed, as real activations are)."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(cols, cols, generator=generator) / math.sqrt(cols) + torch.eye(cols)
    X = torch.randn(tokens, cols, generator=generator) @ mixing
    W = torch.randn(rows, cols, generator=generator)
    return W, 2.0 / tokens * X.t() @ X, X


def test_subsampled_statistics_keep_few_tokens_and_measure_the_error_directly() -> None:
    """Fewer sampled tokens than columns: the tokens are kept and the error is ‖ΔW Xᵀ‖² / ‖W Xᵀ‖² on them;
    more: they are folded into the running Gram matrix (bounded memory), and the error comes from it."""
    generator = torch.Generator().manual_seed(1)
    W = torch.randn(5, 40, generator=generator)
    W_hat = W.masked_fill(torch.rand(5, 40, generator=generator) < 0.5, 0.0)
    for batches, kept in ((2, True), (20, False)):
        X = torch.randn(batches * 8, 40, generator=generator)
        stats = InputStatistics(40, torch.device("cpu"), hessian_stride=3)
        for batch in X.split(8):
            stats.add(batch)
        sampled = X[::3].double()
        assert stats.hessian_tokens == sampled.shape[0] and (sampled.shape[0] < 40) == kept
        if kept:
            assert torch.equal(stats.samples, X[::3])
        direct = float(
            ((W - W_hat).double() @ sampled.t()).square().sum() / (W.double() @ sampled.t()).square().sum()
        )
        assert stats.relative_error(W, W_hat) == pytest.approx(direct, rel=1e-4)
        torch.testing.assert_close(
            stats.hessian.double(), 2 / sampled.shape[0] * sampled.t() @ sampled, rtol=1e-5, atol=1e-5
        )


def test_wide_hessian_is_accumulated_on_three_blocks_and_read_symmetric() -> None:
    """From GRAM_SPLIT_MIN_COLUMNS on, updates skip the lower-left block; every read sees the full running
    Hessian (that block the mirror of the upper-right one), also when tokens keep coming after a read."""
    from llmkick_models.engine.input_statistics import GRAM_SPLIT_MIN_COLUMNS

    columns = GRAM_SPLIT_MIN_COLUMNS + 45
    generator = torch.Generator().manual_seed(2)
    X = torch.randn(3, 64, columns, generator=generator) * torch.linspace(0.1, 2, columns)
    stats = InputStatistics(columns, torch.device("cpu"))
    for count, batch in enumerate(X, start=1):
        stats.add(batch)
        seen = X[:count].reshape(-1, columns).double()
        H = stats.hessian
        half = columns // 2
        assert torch.equal(H[half:, :half], H[:half, half:].t())  # the skipped block is the mirror
        torch.testing.assert_close(H.double(), 2 / seen.shape[0] * seen.t() @ seen, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("columns", [255, 256, 383, 576, 1000])
def test_split_gram_update_equals_the_full_product(columns: int) -> None:
    """The Gram update on row slabs (blocks below the diagonal mirrored on read) gives the running Hessian
    of every token, for column counts below, at and past the split and with uneven slabs; the lower-left
    quarter is exactly the mirror (columns // 2 is a slab boundary)."""
    from llmkick_models.engine.input_statistics import _gram_edges

    edges = _gram_edges(columns)
    assert edges[0] == 0 and edges[-1] == columns and (len(edges) == 2 or columns // 2 in edges)
    generator = torch.Generator().manual_seed(columns)
    X = torch.randn(2, 96, columns, generator=generator) * torch.linspace(0.1, 2, columns)
    stats = InputStatistics(columns, torch.device("cpu"))
    for batch in X:
        stats.add(batch)
    seen = X.reshape(-1, columns).double()
    H = stats.hessian
    half = columns // 2
    if len(edges) > 2:
        assert torch.equal(H[half:, :half], H[:half, half:].t())
    torch.testing.assert_close(H.double(), 2 / seen.shape[0] * seen.t() @ seen, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("columns", [40, 256, 301, 576])
def test_quadratic_form_on_the_upper_triangle_equals_the_direct_one(columns: int) -> None:
    """The errors' denominators w H wᵀ per row, computed from H's diagonal blocks and upper blocks only."""
    from llmkick_models.engine.input_statistics import quadratic_form_rows

    generator = torch.Generator().manual_seed(columns)
    X = torch.randn(512, columns, generator=generator) * torch.linspace(0.1, 2, columns)
    H = 2 / 512 * X.t() @ X
    H = (H + H.t()) / 2
    W = torch.randn(30, columns, generator=generator)
    expected = ((W.double() @ H.double()) * W.double()).sum(dim=1)
    torch.testing.assert_close(quadratic_form_rows(W, H).double(), expected, rtol=1e-5, atol=0)


# --- the shared Hessian module -------------------------------------------------------------------------


def test_running_hessian_equals_direct_computation() -> None:
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(size, 7, 12, generator=generator) * 3 for size in (1, 4, 2, 5)]
    X = torch.cat([b.reshape(-1, 12) for b in batches]).double()
    for stride in (1, 3):
        stats = InputStatistics(12, torch.device("cpu"), hessian_stride=stride)
        for batch in batches:
            stats.add(batch)
        assert stats.tokens == X.shape[0]
        torch.testing.assert_close(stats.feature_sq_mean.double(), X.square().mean(0), rtol=1e-5, atol=1e-6)
        sampled = X[::stride]  # every stride-th token, counted across batch boundaries
        assert stats.hessian_tokens == sampled.shape[0]
        torch.testing.assert_close(
            stats.hessian.double(), 2 / sampled.shape[0] * sampled.t() @ sampled, rtol=1e-5, atol=1e-5
        )


def test_reconstruction_error_from_hessian_equals_direct_computation() -> None:
    W, H, X = _layer_problem()
    W_hat = W.clone()
    W_hat[W_hat.abs() < 0.5] = 0
    direct = float(((W - W_hat) @ X.t()).square().sum() / (W @ X.t()).square().sum())
    assert relative_reconstruction_error(W, W_hat, H) == pytest.approx(direct, rel=1e-4)
    assert relative_reconstruction_error(W, W, H) == 0.0


def test_rank_deficient_hessian_retries_with_more_dampening_and_warns() -> None:
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(8, 48, generator=generator)  # 8 tokens, 48 features: rank 8
    H = 2 / 8 * X.t() @ X
    with pytest.warns(HessianDampingWarning, match=r"layer\.x.*percdamp=0 .*retrying with percdamp=0\.0001"):
        Hinv, damp = damped_inverse_cholesky(H, 0.0, "layer.x")
    assert damp == pytest.approx(1e-4)
    damped = H + damp * H.diagonal().mean() * torch.eye(48)
    # The factor is the real one (Hinvᵀ Hinv = (H + λI)⁻¹), not an identity stand-in.
    torch.testing.assert_close((Hinv.t() @ Hinv) @ damped, torch.eye(48), atol=2e-2, rtol=0)
    assert torch.equal(Hinv, torch.triu(Hinv)) and not torch.allclose(Hinv, torch.eye(48))


def test_default_dampening_factors_without_warning() -> None:
    _, H, _ = _layer_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Hinv, damp = damped_inverse_cholesky(H, 0.01, "layer.x")
    assert damp == 0.01
    expected = torch.linalg.inv(H + 0.01 * H.diagonal().mean() * torch.eye(H.shape[0]))
    torch.testing.assert_close(Hinv.t() @ Hinv, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("columns", [1, 5, 64, 65, 200, 256])
def test_damped_inverse_factor_is_the_reference_routes_factor(columns: int) -> None:
    """One Cholesky of the reversed H and a triangular inverse give the factor the reference computes as
    Cholesky → inverse → Cholesky (here in float64), entry by entry, across the halving's block sizes."""
    _, H, _ = _layer_problem(seed=columns, cols=columns, tokens=4 * columns + 8)
    Hinv, _ = damped_inverse_cholesky(H, 0.01, "layer.x")
    damped = H.double() + 0.01 * H.diagonal().double().mean() * torch.eye(columns, dtype=torch.float64)
    expected = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)), upper=True)
    assert torch.equal(Hinv, torch.triu(Hinv))
    torch.testing.assert_close(Hinv.double(), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize(("size", "base"), [(1, 64), (7, 2), (100, 8), (130, 64)])
def test_lower_triangular_inverse_by_halving(size: int, base: int) -> None:
    generator = torch.Generator().manual_seed(size)
    L = torch.randn(size, size, generator=generator, dtype=torch.float64).tril() / math.sqrt(size)
    L.diagonal().copy_(1.0 + torch.rand(size, generator=generator, dtype=torch.float64))
    inverse = lower_triangular_inverse(L, base=base)
    assert torch.equal(inverse, torch.tril(inverse))
    torch.testing.assert_close(inverse @ L, torch.eye(size, dtype=torch.float64), rtol=0, atol=1e-10)


def test_unfactorisable_hessians_raise_instead_of_falling_back_to_identity() -> None:
    with pytest.raises(HessianError, match="NaN or inf"):
        damped_inverse_cholesky(torch.full((4, 4), float("nan")), 0.01, "layer.nan")
    negative = -torch.eye(4)  # mean(diag) < 0: no dampening of this form can help
    with pytest.warns(HessianDampingWarning), pytest.raises(HessianError, match=r"layer\.neg.*not positive"):
        damped_inverse_cholesky(negative, 0.01, "layer.neg", max_attempts=3)


# --- the SparseGPT algorithm on one layer -----------------------------------------------------------------


def _reference_obs_nm(W: torch.Tensor, H: torch.Tensor, pattern: NMPattern, percdamp: float) -> torch.Tensor:
    """Textbook OBS pruning, column by column, float64, with the explicit inverse and Schur complements.

    No Cholesky, no blocks: after fixing column j, it is eliminated from the inverse Hessian of the
    remaining columns, Hinv ← Hinv − Hinv[:, j] Hinv[j, :] / Hinv[j, j].  The saliency of column c is
    w_c² / [Hinv]_cc at the moment c is fixed (SPEC: the squared diagonal of the Cholesky factor).
    """
    W = W.double().clone()
    H = H.double() + percdamp * H.diagonal().double().mean() * torch.eye(H.shape[0], dtype=torch.float64)
    rows, cols = W.shape

    def eliminate(Hinv: torch.Tensor, j: int) -> torch.Tensor:
        return Hinv - Hinv[:, j : j + 1] @ Hinv[j : j + 1, :] / Hinv[j, j]

    Hinv = torch.linalg.inv(H)
    diagonal_when_fixed = torch.empty(cols, dtype=torch.float64)
    for j in range(cols):
        diagonal_when_fixed[j] = Hinv[j, j]
        Hinv = eliminate(Hinv, j)

    Hinv = torch.linalg.inv(H)
    mask = torch.zeros_like(W, dtype=torch.bool)
    for j in range(cols):
        if j % pattern.group == 0:
            group = list(range(j, j + pattern.group))
            saliency = W[:, group].square() / diagonal_when_fixed[group].unsqueeze(0)
            for r in range(rows):
                for k in sorted(range(pattern.group), key=lambda k: float(saliency[r, k]))[: pattern.pruned]:
                    mask[r, j + k] = True
        err = torch.where(mask[:, j], W[:, j], 0.0) / Hinv[j, j]
        W[:, j] = torch.where(mask[:, j], 0.0, W[:, j])
        W[:, j + 1 :] -= err.unsqueeze(1) * Hinv[j, j + 1 :].unsqueeze(0)  # fixed columns stay fixed
        Hinv = eliminate(Hinv, j)
    return W


@pytest.mark.parametrize("pattern", [NMPattern(2, 4), NMPattern(4, 8)])
def test_sparsegpt_equals_textbook_obs(pattern: NMPattern) -> None:
    W, H, _ = _layer_problem(seed=1)
    expected = _reference_obs_nm(W, H, pattern, percdamp=0.01)
    for blocksize in (8, 16, 128):  # lazy batch updates must not change the result
        W_hat, damp, dead = sparsegpt_prune(W, H, 0.5, pattern, blocksize, 0.01, "layer")
        assert (damp, dead) == (0.01, 0)
        assert torch.equal(W_hat == 0, expected == 0)
        torch.testing.assert_close(W_hat.double(), expected, rtol=1e-4, atol=1e-4)


def test_sparsegpt_beats_pruning_without_updates_on_one_layer() -> None:
    W, H, _ = _layer_problem(seed=2)
    W_hat, _, _ = sparsegpt_prune(W, H, 0.5, None, 8, 0.01, "layer")
    assert int((W_hat == 0).sum()) == W.numel() // 2
    masked_only = torch.where(W_hat == 0, 0.0, W)  # same mask, no OBS updates
    assert relative_reconstruction_error(W, W_hat, H) < 0.7 * relative_reconstruction_error(W, masked_only, H)


def test_dead_inputs_are_zeroed_and_counted() -> None:
    W, H, _ = _layer_problem(seed=3, cols=16)
    H[3, :] = 0
    H[:, 3] = 0
    W_hat, _, dead = sparsegpt_prune(W, H, 0.25, None, 128, 0.01, "layer")
    assert dead == 1 and torch.all(W_hat[:, 3] == 0)
    assert int((W_hat == 0).sum()) == math.floor(0.25 * W.numel())  # the dead column counts as pruned


# --- SparseGPT on whole models ------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_zero_sparsity_leaves_weights_unchanged(calibration, arch: str) -> None:
    dense = build_model(arch, build_tokenizer())
    model, report = compress_tiny(arch, calibration, "sparsegpt", sparsity=0.0)
    for before, after in zip(decoder_linears(dense), decoder_linears(model), strict=True):
        assert torch.equal(before.weight, after.weight), after.name
    assert all(layer.extra["recon_error"] == 0.0 for layer in report.layers)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_exact_unstructured_sparsity_per_matrix(calibration, arch: str) -> None:
    model, report = compress_tiny(arch, calibration, "sparsegpt", sparsity=0.3, blocksize=48)
    for target, layer in zip(decoder_linears(model), report.layers, strict=True):
        rows, cols = target.shape
        assert int((target.weight == 0).sum()) == math.floor(0.3 * rows * cols), target.name
        assert "dead_inputs" not in layer.extra and 0 < layer.extra["recon_error"] < 1


@pytest.mark.parametrize(("arch", "pattern"), [(a, "2:4") for a in ARCHITECTURES] + [("llama", "4:8")])
def test_exact_nm_pattern(calibration, arch: str, pattern: str) -> None:
    model, report = compress_tiny(arch, calibration, "sparsegpt", pattern=pattern)
    nm = NMPattern(*map(int, pattern.split(":")))
    for target in decoder_linears(model):
        rows, cols = target.shape
        assert count_nm_violations(target.weight, nm) == 0
        assert torch.all((target.weight.reshape(rows, cols // nm.group, nm.group) == 0).sum(-1) == nm.pruned)
    assert report.overall_sparsity == 0.5


def test_rank_deficient_calibration_triggers_the_dampening_retry() -> None:
    # 1 sample of 16 random tokens: every layer sees 16 tokens for 64-128 input features (rank <= 16).
    tiny = CalibrationSet(
        torch.randint(0, 384, (1, 16), generator=torch.Generator().manual_seed(0)), "random", 0
    )
    dense = build_model("llama", build_tokenizer())
    with pytest.warns(HessianDampingWarning, match="retrying"):
        model, report = compress_tiny("llama", tiny, "sparsegpt", sparsity=0.5, percdamp=0.0)
    assert report.overall_sparsity == 0.5
    assert all(layer.extra["percdamp"] > 0 for layer in report.layers)  # the retry is on record
    # Not an identity fallback (which would be magnitude pruning without updates): kept weights moved.
    for before, after in zip(decoder_linears(dense), decoder_linears(model), strict=True):
        kept = after.weight != 0
        assert not torch.equal(before.weight[kept], after.weight[kept]), after.name


def test_sparsegpt_is_deterministic(calibration) -> None:
    first, _ = compress_tiny("gpt_neox", calibration, "sparsegpt", sparsity=0.5)
    again, _ = compress_tiny("gpt_neox", calibration, "sparsegpt", sparsity=0.5)
    for a, b in zip(decoder_linears(first), decoder_linears(again), strict=True):
        assert torch.equal(a.weight, b.weight)


@pytest.mark.parametrize(
    ("pattern", "bits", "group_size"),
    [(None, None, None), (NMPattern(2, 4), None, None), (None, 4, 24), (NMPattern(2, 4), 3, 20)],
)
def test_two_level_lazy_update_equals_updating_every_column_at_once(
    monkeypatch: pytest.MonkeyPatch, pattern: NMPattern | None, bits: int | None, group_size: int | None
) -> None:
    """The inner windows only reorder the sums: the same masks and (up to round-off) the same weights and
    grids as an inner window of one column (every later column of the block updated at each column) or
    of a whole block.  Group grids that straddle windows (24, 20) must see current columns."""
    from llmkick_models.engine import column_loop
    from llmkick_models.engine.methods.sparsegpt import sparsegpt_rows
    from llmkick_models.engine.quantizer import QuantizerConfig

    W, H, _ = _layer_problem(seed=3, rows=40, cols=200, tokens=512)
    # Asymmetric: a symmetric grid puts a group's most negative weight exactly on a rounding tie, which
    # round-off breaks either way (see test_gptq), so those results would not be comparable.
    quantizer = QuantizerConfig(bits, False, group_size) if bits is not None else None
    results = {}
    for inner in (1, 5, 16, 1000):
        monkeypatch.setattr(column_loop, "INNER_BLOCK", inner)
        results[inner] = sparsegpt_rows(W, H, 0.5, pattern, 64, 0.01, "layer", quantizer, [16, 24])
    for inner in (5, 16, 1000):
        assert torch.equal(results[inner].W_hat == 0, results[1].W_hat == 0), inner
        torch.testing.assert_close(results[inner].W_hat, results[1].W_hat, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(results[inner].errors, results[1].errors, rtol=1e-4, atol=0)
        if quantizer is not None:
            torch.testing.assert_close(results[inner].grid.scale, results[1].grid.scale, rtol=1e-5, atol=0)
