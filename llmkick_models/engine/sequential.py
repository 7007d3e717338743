"""The layer-by-layer calibration driver shared by every calibrated method (Wanda, SparseGPT, GPTQ).

Capture the inputs of block 0 for all calibration samples, then for each block i

1. hook its linears and run the block to accumulate their input statistics (``InputStatistics``),
2. compress the linears with those statistics (``CompressionMethod.compress_block``: by default group by
   group; a method may take the whole block at once) and record each one's reconstruction error,
3. run the block again, now compressed, and keep its outputs as the inputs of block i+1,

so that errors propagate from block to block as in the reference implementations.

Block inputs are captured and carried by ``block_inputs``; where each block computes is ``placement``'s
business.  Linears that read the very same input tensor (q/k/v, gate/up) share one set of statistics,
found by a probe run of the first block (again for any block of another structure, and for every block
whose linears do not each run exactly once, e.g. routed experts).  Memory: one block's activations plus
one block's statistics at a time (on the CPU, freed memory is kept for reuse meanwhile: ``host_memory``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from llmkick_models.engine.block_inputs import BlockInputs, StopForward, capture_first_block_inputs
from llmkick_models.engine.host_memory import release_free_memory, retain_freed_memory
from llmkick_models.engine.input_statistics import InputStatistics
from llmkick_models.engine.methods.base import BlockJob, CompressionMethod, LayerJob, compress_block_jobs
from llmkick_models.engine.model_layout import TargetLinear, decoder_linears, find_decoder_blocks
from llmkick_models.engine.placement import block_on_device, execution_device, weights_materialized
from llmkick_models.engine.quantizer import QuantizedWeight
from llmkick_models.engine.report import LayerReport, measure_layer
from llmkick_models.engine.spec import CompressionSpec

log = logging.getLogger(__name__)

#: Calibration tokens per block forward: large enough for efficient matmuls, small enough that the
#: attention and MLP intermediates of one batch stay far below the stored activations.  Also what keeps
#: the resident set down on the CPU: with 8192, SmolLM2-135M's per-block intermediates (tens of MB each,
#: allocated and freed in changing sizes) left glibc's heap fragmented and the peak RSS of GPTQ at
#: 1.32-1.39x the dense load, against 1.15-1.25x with 2048, at the same CPU time.
DEFAULT_BATCH_TOKENS = 2048


@dataclass
class _InputGroup:
    """Linears that read the same input tensor; the first one executed owns the shared statistics."""

    members: list[TargetLinear] = field(default_factory=list)

    @property
    def owner(self) -> TargetLinear:
        """The linear whose hook collects the group's statistics."""
        return self.members[0]


def _first_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else next(iter(kwargs.values()))


def probe_input_groups(
    block: nn.Module, targets: list[TargetLinear], inputs: BlockInputs
) -> tuple[list[_InputGroup], bool]:
    """Run ``block`` on the first batch to learn the order in which its linears execute and which share
    an input tensor.  Returns the groups in execution order and whether every linear ran exactly once
    (then a statistics pass may stop as soon as its last linear has received its input)."""
    seen: list[tuple[TargetLinear, torch.Tensor]] = []  # references keep ids from being reused
    calls: dict[str, int] = {t.name: 0 for t in targets}

    def record(target: TargetLinear) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            calls[target.name] += 1
            if calls[target.name] == 1:
                seen.append((target, _first_input(args, kwargs)))

        return hook

    handles = [t.module.register_forward_pre_hook(record(t), with_kwargs=True) for t in targets]
    try:
        first = inputs.calls[0]
        first.run(block, inputs.hidden[first.rows])
    finally:
        for handle in handles:
            handle.remove()
    groups: list[_InputGroup] = []
    for index, (target, x) in enumerate(seen):
        shared = next((i for i, (_, y) in enumerate(seen[:index]) if y is x), None)
        if shared is None:
            groups.append(_InputGroup([target]))
        else:
            next(g for g in groups if g.owner is seen[shared][0]).members.append(target)
    executed = {t.name for t, _ in seen}
    # Linears the probe batch never reached (e.g. unrouted experts) get their own statistics, last.
    groups.extend(_InputGroup([t]) for t in targets if t.name not in executed)
    return groups, all(count == 1 for count in calls.values())


@dataclass(frozen=True)
class _GroupLayout:
    """A probed block's input groups by the linears' names inside the block, to reuse for the next blocks
    of the same class with the same linears (decoder blocks repeat one structure: probing each costs one
    sample's forward per block for nothing).  Only kept when every linear of the probed block ran exactly
    once, so a block with routing (MoE experts) is probed every time."""

    block_type: type
    groups: tuple[tuple[str, ...], ...]  # relative names, in execution order


def _relative_names(block: nn.Module, targets: list[TargetLinear]) -> dict[str, TargetLinear]:
    inside = {id(module): name for name, module in block.named_modules()}
    return {inside[id(t.module)]: t for t in targets}


def block_input_groups(
    block: nn.Module, targets: list[TargetLinear], inputs: BlockInputs, layout: _GroupLayout | None
) -> tuple[list[_InputGroup], bool, _GroupLayout | None]:
    """The block's input groups and whether each linear runs once: from ``layout`` when it describes a
    block like this one, else by ``probe_input_groups``.  Returns the layout to use for the next block."""
    by_name = _relative_names(block, targets)
    if layout is not None and type(block) is layout.block_type:
        if sorted(by_name) == sorted(name for group in layout.groups for name in group):
            groups = [_InputGroup([by_name[name] for name in group]) for group in layout.groups]
            return groups, True, layout
    groups, single_calls = probe_input_groups(block, targets, inputs)
    if not single_calls:
        return groups, single_calls, None
    relative = {id(t): name for name, t in by_name.items()}
    names = tuple(tuple(relative[id(t)] for t in group.members) for group in groups)
    return groups, single_calls, _GroupLayout(type(block), names)


def accumulate_statistics(
    block: nn.Module,
    inputs: BlockInputs,
    groups: list[_InputGroup],
    device: torch.device,
    hessian_stride: int,
    stop_early: bool,
    feature_norms: bool = True,
    feature_abs_means: bool = False,
) -> dict[str, InputStatistics]:
    """Run ``block`` over all samples with hooks on the groups' owners; statistics keyed by owner name.

    With ``stop_early`` the forward is cut once the last owner (in execution order) has its input: the
    rest of the block does not affect these statistics.
    """
    statistics = {
        g.owner.name: InputStatistics(
            g.owner.shape[1], device, hessian_stride, feature_norms, feature_abs_means
        )
        for g in groups
    }
    last = groups[-1].owner.module if stop_early else None

    def collect(stats: InputStatistics) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            stats.add(_first_input(args, kwargs))
            if module is last:
                raise StopForward

        return hook

    handles = [
        g.owner.module.register_forward_pre_hook(collect(statistics[g.owner.name]), with_kwargs=True)
        for g in groups
    ]
    try:
        inputs.run_all(block)
    finally:
        for handle in handles:
            handle.remove()
    return statistics


def hessian_stride(method: CompressionMethod, spec: CompressionSpec, total_tokens: int) -> int:
    """Every token for Hessian methods; otherwise enough of a stride to keep ``error_tokens`` tokens."""
    if method.needs(spec).full_hessian or spec.error_tokens is None:
        return 1
    return max(1, math.ceil(total_tokens / spec.error_tokens))


def compress_sequential(
    model: nn.Module,
    method: CompressionMethod,
    spec: CompressionSpec,
    input_ids: torch.Tensor,
    device: torch.device | str | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> tuple[list[LayerReport], dict[str, QuantizedWeight]]:
    """Compress every decoder linear of ``model`` in place, block by block, on calibration ``input_ids``.

    ``input_ids``: (nsamples, seqlen) token ids.  ``device``: where the work runs (None: where each block
    executes).  Returns one measured ``LayerReport`` per linear, each with ``recon_error`` (‖WX − ŴX‖² /
    ‖WX‖² on the layer's calibration inputs) and ``error_tokens`` (how many tokens that was measured on),
    and the quantization grids of the linears that were quantized, by name.
    """
    stack_name, blocks = find_decoder_blocks(model)
    targets = decoder_linears(model)
    by_block: dict[int, list[TargetLinear]] = {}
    for target in targets:
        by_block.setdefault(target.block_index, []).append(target)
    compute_device = torch.device(device) if device is not None else None
    nsamples, seqlen = input_ids.shape
    batch_size = max(1, batch_tokens // seqlen)
    stride = hessian_stride(method, spec, nsamples * seqlen)
    layers: list[LayerReport] = []
    grids: dict[str, QuantizedWeight] = {}

    was_training = model.training
    model.eval()
    capture_device = compute_device or execution_device(blocks[0])
    retained = capture_device.type == "cpu" and retain_freed_memory()
    try:
        with torch.no_grad():
            inputs = capture_first_block_inputs(model, blocks[0], input_ids, batch_size, capture_device)
            progress = tqdm(range(len(blocks)), desc=f"llmkick {spec.method}", unit="block", leave=False)
            layout: _GroupLayout | None = None
            for index in progress:
                start = time.perf_counter()
                block = blocks[index]
                block_targets = by_block.get(index, [])
                block_layers: list[tuple[LayerReport, QuantizedWeight | None]] = []
                with block_on_device(block, compute_device) as block_device:
                    inputs.to(block_device)
                    if block_targets:
                        block_layers, layout = _compress_block(
                            f"{stack_name}.{index}",
                            block,
                            block_targets,
                            inputs,
                            method,
                            spec,
                            block_device,
                            stride,
                            layout,
                        )
                    if index + 1 < len(blocks):  # the last block's outputs feed nothing
                        inputs.advance(block)
                layers.extend(layer for layer, _ in block_layers)
                grids.update((layer.name, grid) for layer, grid in block_layers if grid is not None)
                errors = [layer.extra["recon_error"] for layer, _ in block_layers]
                log.info(
                    "block %d/%d: %s on %d linears in %.2fs (mean recon error %.4g)",
                    index + 1,
                    len(blocks),
                    spec.method,
                    len(block_targets),
                    time.perf_counter() - start,
                    sum(errors) / len(errors) if errors else 0.0,
                )
    finally:
        model.train(was_training)
        if retained:
            release_free_memory()
    return layers, grids


def _compress_block(
    name: str,
    block: nn.Module,
    targets: list[TargetLinear],
    inputs: BlockInputs,
    method: CompressionMethod,
    spec: CompressionSpec,
    device: torch.device,
    stride: int,
    layout: _GroupLayout | None = None,
) -> tuple[list[tuple[LayerReport, QuantizedWeight | None]], _GroupLayout | None]:
    """Statistics pass(es) and compression of one block's linears (the block is already on ``device``):
    each linear's report and grid; also returns the group layout for the next block."""
    groups, single_calls, layout = block_input_groups(block, targets, inputs, layout)
    # true_sequential: one statistics pass per input group, after the groups before it are compressed.
    passes = [[group] for group in groups] if spec.true_sequential else [groups]
    reports: list[tuple[LayerReport, QuantizedWeight | None]] = []
    needs = method.needs(spec)
    first = inputs.calls[0]
    for pass_groups in passes:
        statistics = accumulate_statistics(
            block,
            inputs,
            pass_groups,
            device,
            stride,
            single_calls,
            needs.feature_norms,
            needs.feature_abs_means,
        )
        jobs = _group_jobs(pass_groups, statistics, spec, device)
        job = BlockJob(name, block, jobs, lambda: first.run(block, inputs.hidden[first.rows]))
        with weights_materialized(block):
            reports.extend(_compress_measured(job, method, spec, device))
    return reports, layout


def _group_jobs(
    groups: list[_InputGroup],
    statistics: dict[str, InputStatistics],
    spec: CompressionSpec,
    device: torch.device,
) -> list[list[LayerJob]]:
    """One job per member of each group, sharing the group's statistics; a group that calibration never
    reached is refused."""
    jobs = []
    for group in groups:
        stats = statistics[group.owner.name]
        if stats.tokens == 0:
            raise RuntimeError(
                f"{group.owner.name} received no calibration tokens; a layer that calibration never "
                f"reaches cannot be compressed by method={spec.method}"
            )
        jobs.append([LayerJob(t, spec, device, stats) for t in group.members])
    return jobs


def _compress_measured(
    block: BlockJob, method: CompressionMethod, spec: CompressionSpec, device: torch.device
) -> list[tuple[LayerReport, QuantizedWeight | None]]:
    """Compress the block's groups (``compress_block``: by default each group's members together, so
    work on the shared statistics is done once); each linear's measured report and grid.

    An error the method measured itself (SparseGPT, GPTQ: from their column loop, see
    ``column_loop.errors_from_column_loop``; AWQ: against the weight before its scales) is kept; otherwise
    it is measured here from the statistics (exact Hessian, or the token subsample for methods without
    one), against a copy of each weight taken before the call.
    """
    jobs = [job for group in block.groups for job in group]
    originals = [job.target.weight.detach().clone() for job in jobs]  # in their own dtype: exact
    results = [result for group in compress_block_jobs(method, block) for result in group]
    compressed: list[tuple[LayerReport, QuantizedWeight | None]] = []
    for job, original, result in zip(jobs, originals, results, strict=True):
        stats = job.statistics
        assert stats is not None
        error = result.error
        if error is None:
            W = original.to(device=device, dtype=torch.float32)
            error = stats.relative_error(W, job.target.weight.to(device))
        extra = {**result.facts, "recon_error": error, "error_tokens": stats.hessian_tokens}
        compressed.append((measure_layer(job.target, spec, extra), result.grid))
    return compressed
