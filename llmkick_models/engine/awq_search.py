"""AWQ's two searches (Lin et al. 2023, arXiv 2306.00978), on the output error computed from the Hessian.

For a group of linears reading one input x (stacked by rows into W) with per-input mean magnitude a_j =
mean |x_j|, AWQ scales input channel j by s_j = a_j^α (normalised by sqrt(max s · min s), as the
reference), quantizes W·diag(s) and divides by s again; the inputs are divided by s where they are made
(the op before, see ``awq_folding``), so only the rounding changes.  ``search_scales`` tries α in {0, 1/n,
…, (n−1)/n} and keeps the one with the smallest output error of the group

    Σ_members ‖W X − Ŵ(α) X‖² = tr(ΔW H ΔWᵀ),     ΔW = Q(W·diag(s))·diag(1/s) − W,   H ∝ Σ x xᵀ,

over every calibration token, from the Hessian the driver accumulated (no activations are kept or re-run).
α = 0 (s = 1) is plain round-to-nearest, so the chosen error is never above RTN's on the same grid.

``search_clip`` is the reference's weight clipping: for each output row and quantization group, shrink
the clamp range max|w| by the ratios 1, 0.95, …, 0.55 and keep the one whose quantized group gives the
smallest error of that group's share of the output, Δw_g H_gg Δw_gᵀ (H_gg: the group's diagonal block).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmkick_models.engine.input_statistics import quadratic_form_rows
from llmkick_models.engine.quantizer import QuantizerConfig, rtn_quantize

#: The reference's clip grid: ratios 1 − i/20 for i < 0.5 · 20.
CLIP_GRID, CLIP_MAX_SHRINK = 20, 0.5


@dataclass
class ScaleChoice:
    """The α kept for a group, its scales and the output error (tr ΔW H ΔWᵀ) of every α tried."""

    alpha: float
    scales: torch.Tensor  # (columns,), fp32
    errors: list[float]


def awq_scales(abs_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = a^α clamped at 1e-4, divided by sqrt(max s · min s) (the reference's normalisation)."""
    s = abs_mean.float().pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def output_error(delta: torch.Tensor, H: torch.Tensor) -> float:
    """tr(ΔW H ΔWᵀ): the squared output error of ΔW over the tokens behind H (up to H's factor), from H's
    upper row slabs (``quadratic_form_rows``: about 0.6 of the product ΔW·H)."""
    return float(quadratic_form_rows(delta, H).sum())


def search_scales(
    W: torch.Tensor, abs_mean: torch.Tensor, H: torch.Tensor, config: QuantizerConfig, grid: int
) -> ScaleChoice:
    """The α in {0, 1/grid, …, (grid−1)/grid} whose scaled round-to-nearest gives W (rows, columns) the
    smallest output error tr(ΔW H ΔWᵀ); ties keep the smaller α."""
    W = W.float()
    errors: list[float] = []
    best: ScaleChoice | None = None
    for step in range(grid):
        alpha = step / grid
        s = awq_scales(abs_mean, alpha)
        Q, _ = rtn_quantize(W * s, config)
        errors.append(output_error(Q / s - W, H))
        if best is None or errors[-1] < min(errors[:-1]):  # strictly better: ties keep the smaller α
            best = ScaleChoice(alpha, s, errors)
    assert best is not None
    return best


def _group_blocks(H: torch.Tensor, size: int) -> torch.Tensor:
    """H's diagonal blocks of ``size`` columns, (groups, size, size)."""
    groups = H.shape[0] // size
    return torch.stack([H[g * size : (g + 1) * size, g * size : (g + 1) * size] for g in range(groups)])


def search_clip(
    W: torch.Tensor, H: torch.Tensor, config: QuantizerConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """W (rows, columns) clamped per output row and quantization group to ±ratio·max|w|, with the ratio
    of 1, 0.95, …, 0.55 that minimises Δw_g H_gg Δw_gᵀ of the group's rounding; returns (clamped W,
    ratios (rows, groups))."""
    W = W.float()
    rows, columns = W.shape
    size = config.group_size or columns
    blocks = _group_blocks(H.float(), size)
    segments = W.view(rows, columns // size, size)
    largest = segments.abs().amax(dim=-1, keepdim=True)
    best_error = torch.full(segments.shape[:2], float("inf"), device=W.device)
    best_ratio = torch.ones_like(best_error)
    for step in range(int(CLIP_MAX_SHRINK * CLIP_GRID)):
        ratio = 1 - step / CLIP_GRID
        bound = largest * ratio
        clipped = torch.maximum(torch.minimum(segments, bound), -bound)
        Q, _ = rtn_quantize(clipped.reshape(rows, columns), config)
        delta = Q.view_as(segments) - segments
        error = torch.einsum("rgi,gij,rgj->rg", delta, blocks, delta)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_ratio = torch.where(better, torch.full_like(best_ratio, ratio), best_ratio)
    bound = largest * best_ratio.unsqueeze(-1)
    clipped = torch.maximum(torch.minimum(segments, bound), -bound)
    return clipped.reshape(rows, columns), best_ratio
