"""GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers"): quantize one column at a time and let the not-yet-quantized columns absorb the error.

For a linear y = W x with input Hessian H = (2/n) Σ x xᵀ:

1. dead inputs (H_jj = 0) get weight 0; with ``act_order`` the columns are permuted by descending H_jj
   (most active inputs first, while the most freedom to compensate is left);
2. H is dampened by λ = percdamp · mean(diag H) and Hinv = upper Cholesky factor of H⁻¹
   (``llmkick_models.engine.hessian``, with the retry-on-failure of the shared code);
3. columns are visited in blocks of ``blocksize``; at column j: Q_j = quant(W_j),
   Err_j = (W_j − Q_j) / Hinv_jj, W[:, j+1:] −= Err_j · Hinv[j, j+1:] (inside the block at once, for later
   blocks lazily, one matmul per block);
4. grids: per channel (one min-max grid per row, found on W before the loop), dynamic groups (the
   reference default, as IST-DASLab's ``fasterquant`` and GPTQ-for-LLaMa: the grid of a group is found
   when the loop reaches its first column, on the group's columns as they stood at the start of the
   current column block — every earlier block's update applied, none of the current block's; so with
   ``group_size`` < ``blocksize`` the result depends on ``blocksize``, exactly as in the reference) or
   ``static_groups`` (all group grids found on the original W before the loop, so with act_order a
   group's grid does not depend on the processing order);
5. with act_order the result is put back in the original column order with the inverse permutation.

Linears that read the same input are quantized together (``GPTQ.compress_group``, ``splits``): one
damped inverse and one column loop over their stacked rows, each matrix bit for bit as alone; the error
of each comes from the loop (``hessian.errors_from_column_loop``).

``mask`` (joint sparse + quant after Wanda/magnitude pruning): masked weights are quantized to exactly 0
at their turn, and their removal error is spread over the remaining columns like any quantization error;
a pruned weight is never revived.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from llmkick_models.engine.hessian import (
    LazyColumnBlock,
    damped_inverse_cholesky,
    errors_from_column_loop,
    inner_block,
    row_blocks,
    zero_dead_inputs,
)
from llmkick_models.engine.methods.base import CompressionMethod, LayerJob
from llmkick_models.engine.options import (
    CALIBRATION_OPTIONS,
    GPTQ_ORDER,
    HESSIAN,
    QUANTIZER,
    REQUIRED_BITS,
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

#: A quantization grid for one column: per row the scale and the clamp bounds of ``fake_quantize_into``.
_Grid = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _row_grid(scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> _Grid:
    """The per-row grid (scale, zero) as ``fake_quantize_into`` takes it, contiguous."""
    low, high = level_bounds(zero, maxq)
    return scale.contiguous(), low.contiguous(), high.contiguous()


def _block_group_grids(
    W: torch.Tensor, mask: torch.Tensor | None, i1: int, i2: int, config: QuantizerConfig
) -> tuple[dict[int, _Grid], torch.Tensor, torch.Tensor]:
    """Grids of the groups that begin in the column block [i1, i2), found on W's columns as they are now
    (masked weights as 0), in one ``find_params`` call.  Returns the grids by first column and their
    scales and zero points (rows, groups), in column order."""
    group_size = config.group_size
    assert group_size is not None
    rows, columns = W.shape
    starts = range(-(-i1 // group_size) * group_size, i2, group_size)
    if not starts:
        empty = W.new_empty(rows, 0)
        return {}, empty, empty
    first, stop = starts[0], min(starts[-1] + group_size, columns)
    segment = W[:, first:stop]
    if mask is not None:
        segment = segment.masked_fill(mask[:, first:stop], 0.0)
    full = (stop - first) // group_size  # a layer's last group may be narrower
    scales, zeros = [], []
    if full:
        scale, zero = find_params(segment[:, : full * group_size].reshape(rows * full, group_size), config)
        scales.append(scale.view(rows, full))
        zeros.append(zero.view(rows, full))
    if full < len(starts):
        scale, zero = find_params(segment[:, full * group_size :], config)
        scales.append(scale)
        zeros.append(zero)
    scale, zero = torch.cat(scales, dim=1), torch.cat(zeros, dim=1)
    grids = {start: _row_grid(scale[:, k], zero[:, k], config.maxq) for k, start in enumerate(starts)}
    return grids, scale, zero


@dataclass
class GPTQResult:
    """What ``gptq_quantize`` produced for one layer (or for matrices stacked by rows)."""

    Q: torch.Tensor  # fake-quantized weight (rows, columns), fp32, original column order
    grid: QuantizedWeight
    damp: float  # the dampening that factorised (percdamp unless the retry raised it)
    dead: int  # inputs with H_jj = 0
    errors: list[float] = field(default_factory=list)  # relative reconstruction error per stacked matrix


def gptq_quantize(
    W: torch.Tensor,
    H: torch.Tensor,
    config: QuantizerConfig,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    act_order: bool = False,
    static_groups: bool = False,
    mask: torch.Tensor | None = None,
    layer_name: str = "layer",
    splits: Sequence[int] | None = None,
) -> GPTQResult:
    """Quantize W (out, in) with GPTQ given its input Hessian H (in, in); neither is modified.

    ``mask`` (out, in), True = pruned: those weights end up exactly 0.  ``splits``: W holds several
    matrices that read the same input, stacked by rows (their row counts); they share the damped inverse
    and the column loop, and each comes out as it would alone (rows are independent in GPTQ, grids are
    per row, and the lazy update runs matrix by matrix so each product is the one of the matrix alone).
    """
    W = W.detach().float().clone()
    H = H.detach().float()  # read only: copied where changed
    rows, columns = W.shape
    blocks = row_blocks(splits if splits is not None else [rows])
    H, dead = zero_dead_inputs(H, W)
    group_size = config.group_size
    maxq = config.maxq

    static_scale = static_zero = None
    if group_size is not None and static_groups:
        # Grids of the original column groups, on the weights before any update (order-independent).
        masked = W if mask is None else W.masked_fill(mask, 0.0)
        found = [find_params(masked[:, s : s + group_size], config) for s in range(0, columns, group_size)]
        static_scale = torch.cat([scale for scale, _ in found], dim=1)
        static_zero = torch.cat([zero for _, zero in found], dim=1)

    perm = torch.arange(columns, device=W.device)
    if act_order:
        perm = torch.argsort(H.diagonal(), descending=True, stable=True)
        W, H = W[:, perm], H[perm][:, perm]
        mask = mask[:, perm] if mask is not None else None

    Hinv, damp = damped_inverse_cholesky(H, percdamp, layer_name)
    W_start = W.clone()
    err_sq = torch.zeros(rows, dtype=torch.float32, device=W.device)

    if group_size is None:  # per channel: one grid per row, found before the loop (as the reference)
        scale, zero = find_params(W if mask is None else W.masked_fill(mask, 0.0), config)
        channel_grid = _row_grid(scale.squeeze(1), zero.squeeze(1), maxq)
    elif static_scale is not None:
        group_grids = [
            _row_grid(static_scale[:, g], static_zero[:, g], maxq) for g in range(static_scale.shape[1])
        ]
        order = perm.tolist()
    dynamic_scales: list[torch.Tensor] = []
    dynamic_zeros: list[torch.Tensor] = []
    grid_now: _Grid | None = None  # the dynamic group grid in force (a group may straddle two blocks)

    Q = torch.empty_like(W)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        # The grid of each column of the block, in processing order.
        if group_size is None:
            grids = [channel_grid] * (i2 - i1)
        elif static_scale is not None:
            grids = [group_grids[order[j] // group_size] for j in range(i1, i2)]
        else:
            # Dynamic groups as the reference: the grid of a group is found when the loop reaches its
            # first column, on its columns as they stood at the start of this block (W is not touched
            # inside the block; the block's copy is), so every group beginning here is found now.
            beginning, block_scale, block_zero = _block_group_grids(W, mask, i1, i2, config)
            dynamic_scales.append(block_scale)
            dynamic_zeros.append(block_zero)
            grids = []
            for j in range(i1, i2):
                grid_now = beginning.get(j, grid_now)
                assert grid_now is not None  # column 0 begins a group
                grids.append(grid_now)

        lazy = LazyColumnBlock(W, Hinv, i1, i2, blocks, inner_block(None, blocksize))
        Q1T = torch.empty_like(lazy.WT)  # row i = quantized column i
        maskT = mask[:, i1:i2].t().contiguous() if mask is not None else None
        WT, Hinv1, d = lazy.WT, lazy.Hinv1, lazy.d
        w_rows, err_rows, q_rows = WT.unbind(0), lazy.ErrT.unbind(0), Q1T.unbind(0)
        for k1 in range(0, i2 - i1, lazy.inner):  # inner windows
            lazy.flush(k1)
            k2 = lazy.end
            for i in range(k1, k2):
                w, q, err = w_rows[i], q_rows[i], err_rows[i]
                scale_row, low, high = grids[i]
                # q = s · (clamp(round(w / s) + z, 0, maxq) − z), in place in its row of Q1T.
                fake_quantize_into(q, w, scale_row, low, high)
                if maskT is not None:
                    q.masked_fill_(maskT[i], 0.0)
                torch.sub(w, q, out=err).div_(d[i])
                if i + 1 < k2:  # OBS update of the not-yet-quantized columns of this window
                    WT[i + 1 : k2].addr_(Hinv1[i, i + 1 : k2], err, alpha=-1.0)

        Q[:, i1:i2] = Q1T.t()
        Err1 = lazy.errors()
        err_sq += Err1.square().sum(dim=1)
        # Lazy batch update: the block's errors reach every later column in one matmul per matrix.
        for block in blocks:
            W[block, i2:].addmm_(Err1[block], Hinv[i1:i2, i2:], alpha=-1.0)

    # Errors in processing order (traces do not depend on the column order).
    damping = damp * float(H.diagonal().mean())
    errors = errors_from_column_loop(W_start, Q, H, err_sq, damping, [b.stop - b.start for b in blocks])

    g_idx = None
    if act_order:
        inverse = torch.argsort(perm)
        Q = Q[:, inverse]
        if group_size is not None and static_scale is None:
            # Column perm[j] was quantized in dynamic group j // group_size.
            g_idx = torch.empty(columns, dtype=torch.long)
            g_idx[perm.cpu()] = torch.arange(columns) // group_size
    if group_size is None:
        grid = QuantizedWeight(config, scale.cpu(), zero.cpu())
    elif static_scale is not None:
        grid = QuantizedWeight(config, static_scale.cpu(), static_zero.cpu())
    else:
        grid = QuantizedWeight(
            config, torch.cat(dynamic_scales, dim=1).cpu(), torch.cat(dynamic_zeros, dim=1).cpu(), g_idx
        )
    return GPTQResult(Q, grid, damp, int(dead.sum()), errors)


def gptq_layer(job: LayerJob, mask: torch.Tensor | None = None) -> tuple[dict[str, float], QuantizedWeight]:
    """Quantize the layer's weight in place with GPTQ (keeping ``mask`` zero); its report facts and grid."""
    [(extra, grid)] = gptq_group([job], None if mask is None else [mask])
    extra.pop("recon_error")  # relative to the weight GPTQ received; the caller's may differ (pruned)
    return extra, grid


def gptq_group(
    jobs: list[LayerJob], masks: list[torch.Tensor] | None = None
) -> list[tuple[dict[str, float], QuantizedWeight]]:
    """Quantize linears that read the same input in place with one GPTQ run over their stacked rows
    (keeping ``masks`` zero); per layer its report facts (``recon_error`` relative to the weight as
    received) and its grid."""
    statistics = jobs[0].statistics_for("gptq", exact_hessian=True)
    spec, device = jobs[0].spec, jobs[0].device
    config = quantizer_config(spec)
    weights = [job.target.weight for job in jobs]
    splits = [w.shape[0] for w in weights]
    result = gptq_quantize(
        torch.cat([w.to(device=device, dtype=torch.float32) for w in weights]),
        statistics.hessian.to(device),
        config,
        blocksize=spec.blocksize,
        percdamp=spec.percdamp,
        act_order=spec.act_order,
        static_groups=spec.static_groups,
        mask=torch.cat([m.to(device) for m in masks]) if masks is not None else None,
        layer_name="+".join(job.target.name for job in jobs),
        splits=splits,
    )
    out = []
    for weight, rows, error in zip(weights, row_blocks(splits), result.errors, strict=True):
        extra: dict[str, float] = {"bits": config.bits, "group_size": config.group_size or -1}
        if result.damp != spec.percdamp:
            extra["percdamp"] = result.damp
        if result.dead:
            extra["dead_inputs"] = result.dead
        extra["recon_error"] = error
        weight.copy_(result.Q[rows].to(device=weight.device, dtype=weight.dtype))
        grid = result.grid
        out.append(
            (extra, QuantizedWeight(config, grid.scale[rows].clone(), grid.zero[rows].clone(), grid.g_idx))
        )
    return out


def check_static_groups(values: Mapping[str, Any]) -> None:
    """Static groups need groups to be static."""
    if values.get("static_groups") and values.get("group_size") is None:
        raise CompressionArgumentError(
            "static_groups=true needs groups, but group_size=-1 quantizes per channel; give a "
            "group_size (e.g. 128) or drop static_groups"
        )


class GPTQ(CompressionMethod):
    """GPTQ weight quantization with OBS error compensation; needs the full Hessian."""

    name: ClassVar[str] = "gptq"
    options = (REQUIRED_BITS, *QUANTIZER[1:], *GPTQ_ORDER, *CALIBRATION_OPTIONS, TRUE_SEQUENTIAL, *HESSIAN)
    needs_calibration: ClassVar[bool] = True
    needs_hessian: ClassVar[bool] = True
    uses_feature_norms: ClassVar[bool] = False
    reports_errors: ClassVar[bool] = True

    @classmethod
    def check(cls, values: dict[str, Any], given: Mapping[str, Any]) -> None:
        """Static groups need a group size."""
        check_static_groups(values)

    def compress_layer(self, job: LayerJob) -> dict[str, float]:
        """Quantize the layer in place with GPTQ; keep its grid for packed export."""
        return self.compress_group([job])[0]

    def compress_group(self, jobs: list[LayerJob]) -> list[dict[str, float]]:
        """Quantize linears that read the same input with one damped inverse and one column loop (each
        layer as alone); keep their grids for packed export."""
        extras = []
        for job, (extra, grid) in zip(jobs, gptq_group(jobs), strict=True):
            self.quantized[job.target.name] = grid
            extras.append(extra)
        return extras
