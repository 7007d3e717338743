"""SparseGPT (Frantar & Alistarh 2023): one-shot pruning with optimal-brain-surgeon weight updates.

For each linear, with H = (2/n) Σ x xᵀ over the calibration inputs:

1. dead inputs (H_jj = 0) get weight 0; H is dampened by λ = percdamp · mean(diag H);
2. Hinv = upper Cholesky factor of H⁻¹ (``llmkick_models.engine.hessian``), so row j of Hinv holds the OBS
   update direction of column j given that columns < j are already fixed;
3. columns are visited left to right in blocks of ``blocksize``.  The mask is chosen on the weights as
   updated so far, by the OBS saliency w² / Hinv_jj²: per block over rows × block columns (unstructured),
   or, at every column j with j % M == 0, the N lowest of the next M columns of each row (N:M);
4. at column j: pruned weights become 0, the error e = (w − ŵ) / Hinv_jj is spread over the remaining
   columns of the block, W[:, j+1:] −= e · Hinv[j, j+1:], and the block's errors are applied to all later
   columns at once when the block is done (lazy batch update).

The unstructured per-block counts use cumulative rounding so that each matrix ends up with exactly
floor(sparsity · rows · cols) zeros, the same count as magnitude pruning.

Joint sparse + quant (``bits=``): in the same column loop, ŵ = quant(mask(w)); the min-max grid contains
0 with an integer zero point, so pruned weights stay exactly 0 and an N:M pattern survives quantization.
Grids are per channel (found on W before the loop) or per group of ``group_size`` columns, found when the
loop reaches the group's first column, on a copy of the updated weights with the mask known so far applied
(the reference SparseGPT quantizes per channel only; groups are llmkick's extension).

Linears that read the same input (q/k/v, gate/up) are pruned together (``SparseGPT.compress_group`` ->
``sparsegpt_rows``): one damped inverse Hessian and one column loop over their stacked rows, with each
matrix's mask quota and lazy update kept per matrix, so every matrix comes out bit for bit as alone.  The
reconstruction error of each comes from the loop (``hessian.errors_from_column_loop``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from llmkick_models.engine.hessian import (
    LazyColumnBlock,
    damped_inverse_cholesky,
    errors_from_column_loop,
    inner_block,
    row_blocks,
    updated_columns,
    zero_dead_inputs,
)
from llmkick_models.engine.masks import lowest_mask
from llmkick_models.engine.methods.base import CompressionMethod, LayerJob
from llmkick_models.engine.options import (
    CALIBRATION_OPTIONS,
    HESSIAN,
    PRUNING,
    QUANTIZER,
    TRUE_SEQUENTIAL,
    CompressionArgumentError,
)
from llmkick_models.engine.quantizer import (
    QuantizedWeight,
    QuantizerConfig,
    fake_quantize_into,
    find_params,
    level_bounds,
    quantizer_config,
)
from llmkick_models.engine.spec import NMPattern


@dataclass
class SparseGPTResult:
    """What ``sparsegpt_rows`` produced for matrices stacked by rows (one shared input Hessian)."""

    W_hat: torch.Tensor  # (rows, columns) fp32
    damp: float  # the dampening that factorised
    dead: int  # inputs with H_jj = 0
    grid: QuantizedWeight | None  # joint quantization grid (all rows), or None
    errors: list[float]  # relative reconstruction error per stacked matrix


def sparsegpt_prune(
    W: torch.Tensor,
    H: torch.Tensor,
    sparsity: float,
    pattern: NMPattern | None,
    blocksize: int,
    percdamp: float,
    layer_name: str,
) -> tuple[torch.Tensor, float, int]:
    """Prune W (out, in) given its input Hessian H (in, in); returns (Ŵ in fp32, dampening used, dead inputs).

    Neither argument is modified.  With ``pattern`` set, ``sparsity`` is ignored and ``blocksize`` must be
    a multiple of M.
    """
    W_hat, damp, dead, _ = sparsegpt_prune_quantize(
        W, H, sparsity, pattern, blocksize, percdamp, layer_name, None
    )
    return W_hat, damp, dead


def sparsegpt_prune_quantize(
    W: torch.Tensor,
    H: torch.Tensor,
    sparsity: float,
    pattern: NMPattern | None,
    blocksize: int,
    percdamp: float,
    layer_name: str,
    quantizer: QuantizerConfig | None,
) -> tuple[torch.Tensor, float, int, QuantizedWeight | None]:
    """``sparsegpt_prune`` that also quantizes each column after masking it when ``quantizer`` is given;
    returns (Ŵ, dampening used, dead inputs, the quantization grid or None)."""
    result = sparsegpt_rows(W, H, sparsity, pattern, blocksize, percdamp, layer_name, quantizer)
    return result.W_hat, result.damp, result.dead, result.grid


def sparsegpt_rows(
    W: torch.Tensor,
    H: torch.Tensor,
    sparsity: float,
    pattern: NMPattern | None,
    blocksize: int,
    percdamp: float,
    layer_name: str,
    quantizer: QuantizerConfig | None = None,
    splits: Sequence[int] | None = None,
) -> SparseGPTResult:
    """SparseGPT on one or several matrices that read the same input, stacked by rows (``splits``: their
    row counts; None = one matrix), with one damped inverse Hessian and one column loop.

    Rows are independent in the OBS update, and every per-matrix choice stays per matrix: the unstructured
    mask of each column block is chosen over that matrix's rows only (its quota is per matrix), and the
    lazy update is applied matrix by matrix, so each matrix comes out as it would alone.
    """
    W = W.detach().float().clone()
    H = H.detach().float()  # read only: copied where changed
    rows, columns = W.shape
    blocks = row_blocks(splits if splits is not None else [rows])
    if pattern is not None and blocksize % pattern.group:
        raise ValueError(f"blocksize={blocksize} is not a multiple of the N:M group size {pattern.group}")
    H, dead = zero_dead_inputs(H, W)
    Hinv, damp = damped_inverse_cholesky(H, percdamp, layer_name)
    W_start = W.clone()
    err_sq = torch.zeros(rows, dtype=torch.float32, device=W.device)
    group_size = quantizer.group_size if quantizer is not None else None
    scales: list[torch.Tensor] = []
    zeros: list[torch.Tensor] = []
    if quantizer is not None and group_size is None:
        scale, zero = find_params(W, quantizer)
        scales, zeros = [scale], [zero]
        scale_row, (low, high) = scale.squeeze(1), level_bounds(zero.squeeze(1), quantizer.maxq)

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        lazy = LazyColumnBlock(W, Hinv, i1, i2, blocks, inner_block(pattern, blocksize))
        W1 = lazy.WT.t()  # (rows, block columns) view of the transposed block
        d = lazy.Hinv1.diagonal()

        maskT = torch.zeros_like(lazy.WT, dtype=torch.bool)  # row i = column i's mask, contiguous
        mask1 = maskT.t()
        if pattern is None:
            saliency = W1.square() / d.square().unsqueeze(0)
            for block in blocks:
                # Cumulative rounding: the blocks together prune exactly floor(sparsity · rows · columns)
                # of each matrix.
                n = block.stop - block.start
                count = math.floor(sparsity * n * i2) - math.floor(sparsity * n * i1)
                mask1[block] = lowest_mask(saliency[block].reshape(1, -1), count).reshape(n, i2 - i1)

        w_rows, err_rows = lazy.WT.unbind(0), lazy.ErrT.unbind(0)
        for i in range(i2 - i1):
            if pattern is not None and i % pattern.group == 0:
                # N:M groups are chosen on the weights as updated by the columns to their left.
                lazy.need(i, i + pattern.group)
                group = slice(i, i + pattern.group)
                saliency = W1[:, group].square() / d[group].square().unsqueeze(0)
                mask1[:, group] = lowest_mask(saliency, pattern.pruned)
            if quantizer is not None and group_size is not None and (i1 + i) % group_size == 0:
                stop = min(i1 + i + group_size, columns)
                lazy.need(i, stop - i1)
                segment = updated_columns(W, W1, lazy.ErrT.t(), Hinv, i1, i1 + i, stop)
                known = mask1[:, i : stop - i1]  # the mask of this block (N:M: chosen up to this group)
                segment[:, : known.shape[1]] = segment[:, : known.shape[1]].masked_fill(known, 0.0)
                scale, zero = find_params(segment, quantizer)
                scales.append(scale)
                zeros.append(zero)
                scale_row, (low, high) = scale.squeeze(1), level_bounds(zero.squeeze(1), quantizer.maxq)
            if i == lazy.end:
                lazy.flush(i)
            w, err, pruned = w_rows[i], err_rows[i], maskT[i]
            # err = (w − ŵ) / Hinv_ii, computed in place; column i itself becomes exactly ŵ.
            err.copy_(w)
            w.masked_fill_(pruned, 0.0)
            if quantizer is not None:
                # Mask, then quantize: 0 maps to exactly 0 on the grid, so the pattern survives.
                fake_quantize_into(w, w, scale_row, low, high)
            err.sub_(w).div_(lazy.d[i])
            lazy.spread(i)  # OBS update of the not-yet-visited columns of this window

        W[:, i1:i2] = W1
        Err1 = lazy.errors()
        err_sq += Err1.square().sum(dim=1)
        # Lazy batch update: the whole block's errors reach every later column in one matmul per matrix
        # (the same product, bit for bit, as for the matrix alone).
        for block in blocks:
            W[block, i2:].addmm_(Err1[block], Hinv[i1:i2, i2:], alpha=-1.0)

    grid = None
    if quantizer is not None:
        grid = QuantizedWeight(quantizer, torch.cat(scales, dim=1).cpu(), torch.cat(zeros, dim=1).cpu())
    damping = damp * float(H.diagonal().mean())
    errors = errors_from_column_loop(W_start, W, H, err_sq, damping, [b.stop - b.start for b in blocks])
    return SparseGPTResult(W, damp, int(dead.sum()), grid, errors)


class SparseGPT(CompressionMethod):
    """Unstructured or N:M pruning with OBS updates of the remaining weights; needs the full Hessian."""

    name: ClassVar[str] = "sparsegpt"
    options = (*PRUNING, *CALIBRATION_OPTIONS, TRUE_SEQUENTIAL, *HESSIAN)
    #: with bits=: joint sparse + quant in the same column loop (no act_order: the mask order is fixed)
    quantizer_options = QUANTIZER
    needs_calibration: ClassVar[bool] = True
    needs_hessian: ClassVar[bool] = True
    uses_feature_norms: ClassVar[bool] = False
    reports_errors: ClassVar[bool] = True

    @classmethod
    def check(cls, values: dict[str, Any], given: Mapping[str, Any]) -> None:
        """N:M groups are chosen inside column blocks, so no group may straddle two blocks."""
        nm = values["pattern"]
        if nm is not None and values["blocksize"] % nm.group:
            raise CompressionArgumentError(
                f"blocksize={values['blocksize']} must be a multiple of M={nm.group} with pattern={nm}, "
                f"so that no N:M group straddles two column blocks; e.g. blocksize=128"
            )

    def compress_layer(self, job: LayerJob) -> dict[str, float]:
        """Prune the layer in place with SparseGPT; report the dampening and dead inputs when notable."""
        return self.compress_group([job])[0]

    def compress_group(self, jobs: list[LayerJob]) -> list[dict[str, float]]:
        """Prune linears that read the same input together: one damped inverse Hessian and one column
        loop over their stacked rows (each matrix's mask quota and result as alone); each entry carries
        its ``recon_error`` from the loop."""
        statistics = jobs[0].statistics_for("sparsegpt", exact_hessian=True)
        spec, device = jobs[0].spec, jobs[0].device
        quantizer = quantizer_config(spec) if spec.bits is not None else None
        weights = [job.target.weight for job in jobs]
        result = sparsegpt_rows(
            torch.cat([w.to(device=device, dtype=torch.float32) for w in weights]),
            statistics.hessian.to(device),
            spec.sparsity,
            spec.pattern,
            spec.blocksize,
            spec.percdamp,
            "+".join(job.target.name for job in jobs),
            quantizer,
            [w.shape[0] for w in weights],
        )
        extras = []
        for job, weight, rows, error in zip(
            jobs, weights, row_blocks([w.shape[0] for w in weights]), result.errors, strict=True
        ):
            weight.copy_(result.W_hat[rows].to(device=weight.device, dtype=weight.dtype))
            extra: dict[str, float] = {"recon_error": error}
            if quantizer is not None and result.grid is not None:
                grid = result.grid
                self.quantized[job.target.name] = QuantizedWeight(
                    grid.config, grid.scale[rows].clone(), grid.zero[rows].clone(), grid.g_idx
                )
                extra.update(bits=quantizer.bits, group_size=quantizer.group_size or -1)
            if result.damp != spec.percdamp:
                extra["percdamp"] = result.damp
            if result.dead:
                extra["dead_inputs"] = result.dead
            extras.append(extra)
        return extras
