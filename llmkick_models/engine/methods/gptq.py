"""GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers"): quantize one column at a time and let the not-yet-quantized columns absorb the error.

For a linear y = W x with input Hessian H = (2/n) Σ x xᵀ:

1. dead inputs (H_jj = 0) get weight 0; with ``act_order`` the columns are permuted by descending H_jj
   (most active inputs first, while the most freedom to compensate is left);
2. H is dampened by λ = percdamp · mean(diag H) and Hinv = upper Cholesky factor of H⁻¹
   (``llmkick_models.engine.hessian``, with the retry-on-failure of the shared code);
3. the OBS column loop shared with SparseGPT (``column_loop.obs_column_loop``) visits the columns in
   blocks of ``blocksize``; GPTQ's step at column j is Q_j = quant(W_j) on the column's grid, and the loop
   spreads Err_j = (W_j − Q_j) / Hinv_jj over the columns not yet quantized;
4. grids (``column_grids``): per channel (found on W before the loop), dynamic groups (the reference
   default: found when the loop reaches a group, on its columns as they stood at the start of the current
   column block) or ``static_groups`` (found on the original W before the loop, so with act_order a
   group's grid does not depend on the processing order);
5. with act_order the result is put back in the original column order with the inverse permutation.

Linears that read the same input are quantized together (``GPTQ.compress_group``, ``splits``): one
damped inverse and one column loop over their stacked rows, each matrix bit for bit as alone; the error
of each comes from the loop (``column_loop.errors_from_column_loop``).

``mask`` (joint sparse + quant after Wanda/magnitude pruning): masked weights are quantized to exactly 0
at their turn, and their removal error is spread over the remaining columns like any quantization error;
a pruned weight is never revived.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from llmkick_models.engine.column_grids import (
    ChannelGrid,
    ColumnGrid,
    DynamicGroupGrids,
    StaticGroupGrids,
    column_grids,
    find_static_groups,
)
from llmkick_models.engine.column_loop import (
    LazyColumnBlock,
    errors_from_column_loop,
    inner_block,
    obs_column_loop,
    order_by_activity,
    original_order,
    row_blocks,
)
from llmkick_models.engine.hessian import damped_inverse_cholesky, zero_dead_inputs
from llmkick_models.engine.methods.base import FULL_HESSIAN, CompressionMethod, LayerJob, LayerResult, Needs
from llmkick_models.engine.methods.stacked_rows import loop_facts, stack_weights, unstack_results
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
    quantizer_config,
)
from llmkick_models.engine.spec import CompressionSpec


@dataclass
class GPTQResult:
    """What ``gptq_quantize`` produced for one layer (or for matrices stacked by rows)."""

    Q: torch.Tensor  # fake-quantized weight (rows, columns), fp32, original column order
    grid: QuantizedWeight
    damp: float  # the dampening that factorised (percdamp unless the retry raised it)
    dead: int  # inputs with H_jj = 0
    errors: list[float] = field(default_factory=list)  # relative reconstruction error per stacked matrix


class QuantizeStep:
    """GPTQ's column step: the column rounded to its grid; masked (pruned) weights to exactly 0."""

    def __init__(
        self, grids: ChannelGrid | StaticGroupGrids | DynamicGroupGrids, mask: torch.Tensor | None
    ) -> None:
        self.grids, self.mask = grids, mask
        self.block_grids: list[ColumnGrid] = []
        self.pruned: tuple[torch.Tensor, ...] | None = None

    def begin_block(self, block: LazyColumnBlock) -> None:
        """The grid of each column of the block (dynamic groups beginning here are found now), its mask."""
        self.block_grids = self.grids.block_grids(block)
        if self.mask is not None:
            self.pruned = self.mask[:, block.i1 : block.i2].t().contiguous().unbind(0)

    def column(self, block: LazyColumnBlock, i: int) -> None:
        """q = s · (clamp(round(w / s) + z, 0, maxq) − z), then 0 where pruned."""
        q = block.q[i]
        fake_quantize_into(q, block.w[i], *self.block_grids[i])
        if self.pruned is not None:
            q.masked_fill_(self.pruned[i], 0.0)


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
    blocks = row_blocks(splits if splits is not None else [W.shape[0]])
    H, dead = zero_dead_inputs(H, W)
    static = None
    if static_groups and config.group_size is not None:
        static = find_static_groups(W, mask, config)  # on the weights before any update or reordering
    perm = None
    if act_order:
        W, H, perm = order_by_activity(W, H)
        mask = mask[:, perm] if mask is not None else None
    Hinv, damp = damped_inverse_cholesky(H, percdamp, layer_name)
    grids = column_grids(W, mask, config, static, perm)
    W_start = W.clone()
    Q, err_sq = obs_column_loop(
        W, Hinv, QuantizeStep(grids, mask), blocksize, blocks, inner_block(None, blocksize)
    )
    # Errors in processing order (traces do not depend on the column order).
    errors = errors_from_column_loop(W_start, Q, H, err_sq, damp * float(H.diagonal().mean()), blocks)
    if perm is not None:
        Q = original_order(Q, perm)
    return GPTQResult(Q, grids.quantized_weight(), damp, int(dead.sum()), errors)


def gptq_group(jobs: list[LayerJob], masks: list[torch.Tensor] | None = None) -> list[LayerResult]:
    """Quantize linears that read the same input in place with one GPTQ run over their stacked rows
    (keeping ``masks`` zero).  Each result's error is relative to the weight as GPTQ received it."""
    statistics = jobs[0].statistics_for("gptq", exact_hessian=True)
    spec, device = jobs[0].spec, jobs[0].device
    config = quantizer_config(spec)
    W, splits = stack_weights(jobs)
    result = gptq_quantize(
        W,
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
    facts = config.facts() | loop_facts(result.damp, spec.percdamp, result.dead)
    return unstack_results(jobs, result.Q, splits, result.errors, facts, result.grid)


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

    @classmethod
    def check(cls, values: dict[str, Any], given: Mapping[str, Any]) -> None:
        """Static groups need a group size."""
        check_static_groups(values)

    @classmethod
    def needs(cls, spec: CompressionSpec) -> Needs:
        """The Hessian over every calibration token."""
        return FULL_HESSIAN

    def compress_group(self, jobs: list[LayerJob]) -> list[LayerResult]:
        """Quantize linears that read the same input with one damped inverse and one column loop (each
        layer as alone); each result carries its error from the loop and its grid."""
        return gptq_group(jobs)
