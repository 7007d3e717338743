"""AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration",
arXiv 2306.00978): scale each input channel by a power of its mean activation magnitude before rounding.

Per decoder block (``AWQ.compress_block``, the block-level hook of the method contract), on the block's
float weights and the statistics of one pass over the calibration tokens:

1. for every input group (q/k/v, o, gate/up, down) find where its scales fold (``awq_folding``: the norm
   before, or the rows of v / up); a group whose input no op can absorb channel by channel (o under
   grouped-query attention) keeps s = 1, as in the reference; an op that makes the input but cannot absorb
   a scale is refused naming it, before any weight changes;
2. search α per group (``awq_search.search_scales``) on the original weights, minimising the group's
   output error tr(ΔW H ΔWᵀ) over every calibration token;
3. fold every scale (norm weights / v's or up's rows divided by s, the group's columns multiplied by s),
   checked on the first calibration sample: the block's output must not change;
4. quantize each linear's scaled weight (optionally after the clip search, ``awq_clip``) with the
   round-to-nearest min-max grid, and measure its error against its original weight and original inputs.

The driver then runs the quantized block to make the next block's inputs, as for every other method, so
quantization errors propagate from block to block.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from llmkick_models.engine.awq_folding import (
    AWQFoldingError,
    ScaleSink,
    SinkLayout,
    bind,
    find_sinks,
    in_float32,
    relative_difference,
    tolerance,
)
from llmkick_models.engine.awq_search import ScaleChoice, search_clip, search_scales
from llmkick_models.engine.input_statistics import relative_reconstruction_error
from llmkick_models.engine.methods.base import BlockJob, CompressionMethod, LayerJob, LayerResult, Needs
from llmkick_models.engine.model_layout import TargetLinear
from llmkick_models.engine.options import (
    AWQ_PRUNING_REASON,
    BITS,
    CALIBRATION_OPTIONS,
    GROUP_SIZE,
    SYM,
    Option,
    boolean,
    integer,
)
from llmkick_models.engine.quantizer import QuantizedWeight, QuantizerConfig, quantizer_config, rtn_quantize
from llmkick_models.engine.spec import CompressionSpec

log = logging.getLogger(__name__)

AWQ_BITS = Option(BITS.name, BITS.parse, 4, BITS.help, BITS.allowed, BITS.field)
AWQ_SYM = Option(SYM.name, SYM.parse, False, SYM.help, SYM.allowed, SYM.field)
_GRID_ALLOWED = "an integer >= 1 (α is tried at 0, 1/n, ..., (n-1)/n), e.g. awq_grid=20"
AWQ_GRID = Option(
    "awq_grid",
    integer("awq_grid", _GRID_ALLOWED, 1),
    20,
    "AWQ: candidates n of the scale exponent α ∈ {0, 1/n, …, (n−1)/n}",
    "an integer >= 1",
)
AWQ_CLIP = Option(
    "awq_clip",
    boolean("awq_clip"),
    True,
    "AWQ: search a clip ratio (1 … 0.55) of the largest magnitude per output row and group, as the reference",
    "true or false",
)


def quantize_scaled(
    W: torch.Tensor, H: torch.Tensor, config: QuantizerConfig, clip: bool
) -> tuple[torch.Tensor, QuantizedWeight, torch.Tensor | None]:
    """Round-to-nearest of the scaled weight W (after the clip search when ``clip``, with the Hessian H of
    the scaled inputs); returns (Ŵ in fp32, its grid, the clip ratios (rows, groups) or None)."""
    ratios = None
    if clip:
        W, ratios = search_clip(W, H, config)
    Q, grid = rtn_quantize(W, config)
    return Q, grid, ratios


class AWQ(CompressionMethod):
    """Activation-aware weight quantization: per-channel scales searched per input group, folded into the
    op before, then round-to-nearest (with the reference's clip search)."""

    name: ClassVar[str] = "awq"
    options = (AWQ_BITS, GROUP_SIZE, AWQ_SYM, AWQ_GRID, AWQ_CLIP, *CALIBRATION_OPTIONS)
    refused_options: ClassVar[Mapping[str, str]] = {
        "sparsity": AWQ_PRUNING_REASON,
        "pattern": AWQ_PRUNING_REASON,
    }

    def __init__(self) -> None:
        #: Where each block structure's scales fold, by (block class, groups' relative names).
        self._layouts: dict[tuple[Any, ...], list[SinkLayout | None]] = {}

    @classmethod
    def needs(cls, spec: CompressionSpec) -> Needs:
        """Calibration, the Hessian over every token (for exact output errors) and mean |x| per input."""
        return Needs(calibration=True, full_hessian=True, feature_abs_means=True)

    def compress_group(self, jobs: list[LayerJob]) -> list[LayerResult]:
        """Never called: AWQ needs calibration, and with it the driver calls ``compress_block``."""
        raise RuntimeError("method=awq compresses whole decoder blocks (compress_block), with calibration")

    def _sinks(self, block: BlockJob) -> list[ScaleSink | None]:
        names = {id(m): n for n, m in block.block.named_modules()}
        key = (
            type(block.block),
            tuple(tuple(names[id(j.target.module)] for j in jobs) for jobs in block.groups),
        )
        if key not in self._layouts:
            self._layouts[key] = find_sinks(block)
            unscaled = [
                jobs for jobs, sink in zip(block.groups, self._layouts[key], strict=True) if sink is None
            ]
            for jobs in unscaled:  # said once per block structure; each layer's report has awq_scaled: 0
                log.info(
                    "method=awq: no op before %s (and the same linears of the following blocks) absorbs a "
                    "per-channel scale; they are rounded without AWQ scales, as the reference does",
                    "+".join(job.target.name for job in jobs),
                )
        return [None if layout is None else bind(block, layout) for layout in self._layouts[key]]

    def compress_block(self, block: BlockJob) -> list[list[LayerResult]]:
        """Search every group's scales on the float weights, fold them all, then quantize each linear."""
        spec, device = block.groups[0][0].spec, block.groups[0][0].device
        config = quantizer_config(spec)
        sinks = self._sinks(block)  # refuses an op that cannot absorb a scale, before any change
        statistics = [jobs[0].statistics_for(self.name, exact_hessian=True) for jobs in block.groups]
        originals = {
            id(job): job.target.weight.detach().to(device=device, dtype=torch.float32).clone()
            for jobs in block.groups
            for job in jobs
        }
        choices: list[ScaleChoice | None] = []
        for jobs, stats, sink in zip(block.groups, statistics, sinks, strict=True):
            if sink is None:
                choices.append(None)
                continue
            W = torch.cat([originals[id(job)] for job in jobs])
            H, magnitude = stats.hessian.to(device), stats.feature_abs_mean.to(device)
            choices.append(search_scales(W, magnitude, H, config, spec.option("awq_grid")))
        row_scales, column_scales = _fold_checked(block, sinks, choices)
        results = []
        for jobs, stats, choice, scales in zip(block.groups, statistics, choices, column_scales, strict=True):
            H = stats.hessian.to(device)
            columns = torch.ones(H.shape[0], device=device) if scales is None else scales.to(device)
            facts = config.facts() | ({"awq_scaled": 0.0} if choice is None else {"awq_alpha": choice.alpha})
            group_results = []
            for job in jobs:
                rows = row_scales.get(id(job.target.module))
                rows = torch.ones(job.target.shape[0], device=device) if rows is None else rows.to(device)
                group_results.append(
                    _quantize(job, originals[id(job)], H, rows, columns, config, spec, facts)
                )
            results.append(group_results)
        return results


def _quantize(
    job: LayerJob,
    original: torch.Tensor,
    H: torch.Tensor,
    rows: torch.Tensor,
    columns: torch.Tensor,
    config: QuantizerConfig,
    spec: CompressionSpec,
    facts: dict[str, float],
) -> LayerResult:
    """Quantize diag(rows)·W·diag(columns) into the layer; its error against W on the original inputs."""
    scaled_H = H / columns.unsqueeze(1) / columns.unsqueeze(0)
    Q, grid, ratios = quantize_scaled(
        rows.unsqueeze(1) * original * columns, scaled_H, config, spec.option("awq_clip")
    )
    weight = job.target.weight
    weight.copy_(Q.to(device=weight.device, dtype=weight.dtype))
    effective = Q / rows.unsqueeze(1) / columns
    error = relative_reconstruction_error(original, effective, H)
    layer_facts = dict(facts)
    if ratios is not None:
        layer_facts |= {"awq_clip_mean": float(ratios.mean()), "awq_clip_min": float(ratios.min())}
    return LayerResult(layer_facts, error, grid)


def _fold_checked(
    block: BlockJob, sinks: list[ScaleSink | None], choices: list[ScaleChoice | None]
) -> tuple[dict[int, torch.Tensor], list[torch.Tensor | None]]:
    """Fold every chosen scale (sink's output channels ÷ s, the group's columns × s, s as the sink's
    stored weights realise it); the block's output on the first calibration sample must not change, else
    everything is put back and the block named.  Returns the row scale each linear received as a sink, by
    module id, and each group's realised column scales (None: unscaled)."""
    touched = [p for sink in sinks if sink is not None for p in sink.parameters()]
    touched += [job.target.weight for jobs in block.groups for job in jobs]
    saved = [t.clone() for t in touched]
    dtype = block.groups[0][0].target.weight.dtype  # storage rounding of the folded weights
    row_scales: dict[int, torch.Tensor] = {}
    column_scales: list[torch.Tensor | None] = []
    with torch.no_grad():
        with in_float32(block.block):  # compare the folding, not two half-precision forwards' round-off
            before = block.probe()
        for jobs, sink, choice in zip(block.groups, sinks, choices, strict=True):
            if sink is None or choice is None:
                column_scales.append(None)
                continue
            scales = sink.fold(choice.scales)
            column_scales.append(scales)
            if sink.kind == "linear":
                rows = _row_scale(sink, row_scales)
                rows[sink.rows] /= scales.to(rows.device)
            for job in jobs:
                weight = job.target.weight
                weight.copy_((weight.float() * scales.to(weight.device)).to(weight.dtype))  # one rounding
        with in_float32(block.block):
            difference = relative_difference(block.probe(), before)
        if difference > tolerance(dtype):
            for tensor, old in zip(touched, saved, strict=True):
                tensor.copy_(old)
            raise AWQFoldingError(
                f"method=awq: folding the scales of {block.name} into the ops before its linears changed the "
                f"block's output by {difference:.3g} (relative) on the first calibration sample; its weights "
                f"were put back. This architecture computes something between those ops and the linears "
                f"that does not commute with a per-channel scale"
            )
    return row_scales, column_scales


def _row_scale(sink: ScaleSink, row_scales: dict[int, torch.Tensor]) -> torch.Tensor:
    """The running row scale of the linear ``sink`` folds into (ones on first use)."""
    key = id(sink.module)
    if key not in row_scales:
        rows = TargetLinear(sink.name, sink.module, -1).shape[0]
        row_scales[key] = torch.ones(rows, device=sink.module.weight.device)
    return row_scales[key]
