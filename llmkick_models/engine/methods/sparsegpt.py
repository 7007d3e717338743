"""SparseGPT (Frantar & Alistarh 2023): one-shot pruning with optimal-brain-surgeon weight updates.

For each linear, with H = (2/n) Σ x xᵀ over the calibration inputs:

1. dead inputs (H_jj = 0) get weight 0; H is dampened by λ = percdamp · mean(diag H);
2. Hinv = upper Cholesky factor of H⁻¹ (``llmkick_models.engine.hessian``), so row j of Hinv holds the OBS
   update direction of column j given that columns < j are already fixed;
3. the OBS column loop shared with GPTQ (``column_loop.obs_column_loop``) visits the columns left to right
   in blocks of ``blocksize``.  SparseGPT's step chooses the mask on the weights as updated so far, by the
   OBS saliency w² / Hinv_jj²: per block over rows × block columns (unstructured), or, at every column j
   with j % M == 0, the N lowest of the next M columns of each row (N:M);
4. at column j: pruned weights become 0, and the loop spreads the error e = (w − ŵ) / Hinv_jj over the
   remaining columns, W[:, j+1:] −= e · Hinv[j, j+1:] (lazily, a block at a time).

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
reconstruction error of each comes from the loop (``column_loop.errors_from_column_loop``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from llmkick_models.engine.column_grids import ColumnGrid, GridLog, row_grid
from llmkick_models.engine.column_loop import (
    LazyColumnBlock,
    errors_from_column_loop,
    inner_block,
    obs_column_loop,
    row_blocks,
)
from llmkick_models.engine.hessian import damped_inverse_cholesky, zero_dead_inputs
from llmkick_models.engine.masks import lowest_mask
from llmkick_models.engine.methods.base import FULL_HESSIAN, CompressionMethod, LayerJob, LayerResult, Needs
from llmkick_models.engine.methods.stacked_rows import loop_facts, stack_weights, unstack_results
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
    quantizer_config,
)
from llmkick_models.engine.spec import CompressionSpec, NMPattern


@dataclass
class SparseGPTResult:
    """What ``sparsegpt_rows`` produced for matrices stacked by rows (one shared input Hessian)."""

    W_hat: torch.Tensor  # (rows, columns) fp32
    damp: float  # the dampening that factorised
    dead: int  # inputs with H_jj = 0
    grid: QuantizedWeight | None  # joint quantization grid (all rows), or None
    errors: list[float]  # relative reconstruction error per stacked matrix


class PruneStep:
    """SparseGPT's column step: the mask by OBS saliency, chosen on the weights as updated so far (a block,
    or an N:M group, at a time); with a quantizer, the masked column then quantized."""

    def __init__(
        self,
        W: torch.Tensor,
        sparsity: float,
        pattern: NMPattern | None,
        blocks: list[slice],
        quantizer: QuantizerConfig | None,
    ) -> None:
        self.sparsity, self.pattern, self.blocks, self.quantizer = sparsity, pattern, blocks, quantizer
        self.grids = GridLog(quantizer) if quantizer is not None else None
        self.grid: ColumnGrid | None = None  # the quantization grid in force
        self.group_size = quantizer.group_size if quantizer is not None else None
        if quantizer is not None and self.group_size is None:
            self._use_grid(*find_params(W, quantizer))  # per channel: found on W before the loop
        self.maskT = torch.empty(0, dtype=torch.bool)  # row i = block column i's mask
        self.pruned: tuple[torch.Tensor, ...] = ()
        self.zero = torch.zeros((), dtype=W.dtype, device=W.device)

    def begin_block(self, block: LazyColumnBlock) -> None:
        """A fresh mask for the block; unstructured: chosen now, per matrix."""
        self.maskT = torch.zeros_like(block.WT, dtype=torch.bool)
        self.pruned = self.maskT.unbind(0)
        if self.pattern is None:
            self._choose_block_mask(block)

    def column(self, block: LazyColumnBlock, i: int) -> None:
        """ŵ = quant(mask(w)): 0 maps to exactly 0 on the grid, so the pattern survives quantization."""
        if self.pattern is not None and i % self.pattern.group == 0:
            self._choose_group_mask(block, i)
        if self.group_size is not None and (block.i1 + i) % self.group_size == 0:
            self._find_group_grid(block, i)
        q = block.q[i]
        torch.where(self.pruned[i], self.zero, block.w[i], out=q)  # one op where copy + fill took two
        if self.grid is not None:
            fake_quantize_into(q, q, *self.grid)

    def _choose_block_mask(self, block: LazyColumnBlock) -> None:
        """The block's lowest saliencies of each matrix.  Cumulative rounding: the blocks together prune
        exactly floor(sparsity · rows · columns) of each matrix."""
        saliency = block.WT.t().square() / block.Hinv1.diagonal().square().unsqueeze(0)
        mask1 = self.maskT.t()
        for rows in self.blocks:
            n = rows.stop - rows.start
            count = math.floor(self.sparsity * n * block.i2) - math.floor(self.sparsity * n * block.i1)
            mask1[rows] = lowest_mask(saliency[rows].reshape(1, -1), count).reshape(n, block.count)

    def _choose_group_mask(self, block: LazyColumnBlock, i: int) -> None:
        """N:M: the N lowest saliencies of each row in columns [i, i + M), on the weights as updated by the
        columns to their left."""
        assert self.pattern is not None
        group = slice(i, i + self.pattern.group)
        block.need(i, group.stop)
        saliency = block.WT.t()[:, group].square() / block.Hinv1.diagonal()[group].square().unsqueeze(0)
        self.maskT.t()[:, group] = lowest_mask(saliency, self.pattern.pruned)

    def _find_group_grid(self, block: LazyColumnBlock, i: int) -> None:
        """The grid of the group that begins at block column ``i``: found on a copy of its columns as
        updated so far, with the block's mask known so far applied (N:M: chosen up to this group)."""
        assert self.quantizer is not None and self.group_size is not None
        stop = min(block.i1 + i + self.group_size, block.W.shape[1])
        block.need(i, stop - block.i1)
        segment = block.columns_now(block.i1 + i, stop)
        known = self.maskT.t()[:, i : stop - block.i1]
        segment[:, : known.shape[1]] = segment[:, : known.shape[1]].masked_fill(known, 0.0)
        self._use_grid(*find_params(segment, self.quantizer))

    def _use_grid(self, scale: torch.Tensor, zero: torch.Tensor) -> None:
        assert self.grids is not None and self.quantizer is not None
        self.grids.add(scale, zero)
        self.grid = row_grid(scale.squeeze(1), zero.squeeze(1), self.quantizer.maxq)

    def quantized_weight(self) -> QuantizedWeight | None:
        """The joint quantization grid of all rows, or None without a quantizer."""
        return self.grids.quantized_weight() if self.grids is not None else None


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
    result = sparsegpt_rows(W, H, sparsity, pattern, blocksize, percdamp, layer_name)
    return result.W_hat, result.damp, result.dead


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
    row counts; None = one matrix), with one damped inverse Hessian and one column loop; with
    ``quantizer``, each column is quantized after masking it (joint sparse + quant).

    Rows are independent in the OBS update, and every per-matrix choice stays per matrix: the unstructured
    mask of each column block is chosen over that matrix's rows only (its quota is per matrix), and the
    lazy update is applied matrix by matrix, so each matrix comes out as it would alone.
    """
    W = W.detach().float().clone()
    H = H.detach().float()  # read only: copied where changed
    blocks = row_blocks(splits if splits is not None else [W.shape[0]])
    if pattern is not None and blocksize % pattern.group:
        raise ValueError(f"blocksize={blocksize} is not a multiple of the N:M group size {pattern.group}")
    H, dead = zero_dead_inputs(H, W)
    Hinv, damp = damped_inverse_cholesky(H, percdamp, layer_name)
    W_start = W.clone()
    step = PruneStep(W, sparsity, pattern, blocks, quantizer)
    W_hat, err_sq = obs_column_loop(W, Hinv, step, blocksize, blocks, inner_block(pattern, blocksize))
    errors = errors_from_column_loop(W_start, W_hat, H, err_sq, damp * float(H.diagonal().mean()), blocks)
    return SparseGPTResult(W_hat, damp, int(dead.sum()), step.quantized_weight(), errors)


class SparseGPT(CompressionMethod):
    """Unstructured or N:M pruning with OBS updates of the remaining weights; needs the full Hessian."""

    name: ClassVar[str] = "sparsegpt"
    options = (*PRUNING, *CALIBRATION_OPTIONS, TRUE_SEQUENTIAL, *HESSIAN)
    #: with bits=: joint sparse + quant in the same column loop (no act_order: the mask order is fixed)
    quantizer_options = QUANTIZER

    @classmethod
    def check(cls, values: dict[str, Any], given: Mapping[str, Any]) -> None:
        """N:M groups are chosen inside column blocks, so no group may straddle two blocks."""
        nm = values["pattern"]
        if nm is not None and values["blocksize"] % nm.group:
            raise CompressionArgumentError(
                f"blocksize={values['blocksize']} must be a multiple of M={nm.group} with pattern={nm}, "
                f"so that no N:M group straddles two column blocks; e.g. blocksize=128"
            )

    @classmethod
    def needs(cls, spec: CompressionSpec) -> Needs:
        """The Hessian over every calibration token."""
        return FULL_HESSIAN

    def compress_group(self, jobs: list[LayerJob]) -> list[LayerResult]:
        """Prune linears that read the same input together: one damped inverse Hessian and one column
        loop over their stacked rows (each matrix's mask quota and result as alone); each result carries
        its error from the loop (and, with ``bits=``, its grid)."""
        statistics = jobs[0].statistics_for("sparsegpt", exact_hessian=True)
        spec = jobs[0].spec
        quantizer = quantizer_config(spec) if spec.bits is not None else None
        W, splits = stack_weights(jobs)
        result = sparsegpt_rows(
            W,
            statistics.hessian.to(jobs[0].device),
            spec.sparsity,
            spec.pattern,
            spec.blocksize,
            spec.percdamp,
            "+".join(job.target.name for job in jobs),
            quantizer,
            splits,
        )
        facts = (quantizer.facts() if quantizer is not None else {}) | loop_facts(
            result.damp, spec.percdamp, result.dead
        )
        return unstack_results(jobs, result.W_hat, splits, result.errors, facts, result.grid)
