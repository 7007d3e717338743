"""The layer-by-layer calibration driver shared by every calibrated method (Wanda, SparseGPT, GPTQ).

SPEC §2: capture the inputs of block 0 for all calibration samples, then for each block i

1. hook its linears and run the block to accumulate their input statistics (``InputStatistics``),
2. compress the linears with those statistics and record each one's reconstruction error,
3. run the block again, now compressed, and keep its outputs as the inputs of block i+1,

so that errors propagate from block to block as in the reference implementations.

Generic by construction: block 0's inputs (hidden states plus whatever the model passes along: attention
mask, position ids, rotary position embeddings, cache position...) are captured by a forward pre-hook on
the block itself, never rebuilt per architecture.  Linears that read the very same input tensor (q/k/v,
gate/up) share one set of statistics, found by a probe run of each block.

Memory: one block's activations (``nsamples × seqlen × hidden``, updated in place) plus one block's
statistics at a time.  Placement: all work runs on ``device`` when given (a GPU while the model sits on
the CPU: each block is moved there and back in turn), else where each block executes; blocks dispatched
with accelerate (``device_map``) run on their hook's execution device, and offloaded ones are loaded for
the duration of their compression and written back to their offload store afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from llmkick_models.engine.hessian import InputStatistics, relative_reconstruction_error
from llmkick_models.engine.methods.base import CompressionMethod
from llmkick_models.engine.model_layout import TargetLinear, decoder_linears, find_decoder_blocks
from llmkick_models.engine.report import LayerReport, measure_layer
from llmkick_models.engine.spec import CompressionSpec

log = logging.getLogger(__name__)

#: Calibration tokens per block forward: large enough for efficient matmuls, small enough that the
#: attention and MLP intermediates of one batch stay far below the stored activations.
DEFAULT_BATCH_TOKENS = 8192


class _StopForward(Exception):
    """Raised from a hook once everything needed from a forward pass has been seen."""


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to every tensor inside nested tuples / lists / dicts; other objects pass through."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(_map_tensors(v, fn) for v in value)
    if isinstance(value, list):
        return [_map_tensors(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def _same(a: Any, b: Any) -> bool:
    """Structural equality of captured block arguments (tensors compared by value)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and a.device == b.device
            and torch.equal(a, b)
        )
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return a is b or bool(a == b)
    except Exception:  # objects whose == is not a plain bool
        return False


@dataclass
class _BlockCall:
    """How the model called the first block for one batch of samples (the hidden states left out)."""

    rows: slice
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    hidden_in_kwargs: bool

    def run(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Call ``block`` on ``hidden`` with the captured arguments; return its output hidden states."""
        if self.hidden_in_kwargs:
            output = block(*self.args, **{**self.kwargs, "hidden_states": hidden})
        else:
            output = block(hidden, *self.args, **self.kwargs)
        return output[0] if isinstance(output, (tuple, list)) else output


@dataclass
class BlockInputs:
    """The inputs of the current block for every calibration sample, and the other arguments it takes."""

    hidden: torch.Tensor  # (nsamples, seqlen, hidden_size)
    calls: list[_BlockCall]

    def to(self, device: torch.device) -> None:
        """Move everything to ``device`` (when consecutive blocks execute on different devices)."""
        if self.hidden.device == device:
            return
        self.hidden = self.hidden.to(device)
        for call in self.calls:
            call.args = _map_tensors(call.args, lambda t: t.to(device))
            call.kwargs = _map_tensors(call.kwargs, lambda t: t.to(device))

    def run_all(self, block: nn.Module) -> None:
        """Run ``block`` over every batch, ignoring outputs (statistics passes; hooks may stop early)."""
        for call in self.calls:
            with contextlib.suppress(_StopForward):
                call.run(block, self.hidden[call.rows])

    def advance(self, block: nn.Module) -> None:
        """Replace the stored inputs by ``block``'s outputs, batch by batch (they feed the next block)."""
        for call in self.calls:
            self.hidden[call.rows] = call.run(block, self.hidden[call.rows])


def _input_device(model: nn.Module) -> torch.device:
    """Where the model expects ``input_ids``: the embedding's (execution) device."""
    embeddings = model.get_input_embeddings()
    hook = getattr(embeddings, "_hf_hook", None) or getattr(model, "_hf_hook", None)
    if getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    device = embeddings.weight.device
    return device if device.type != "meta" else torch.device("cpu")


def batch_rows(nsamples: int, batch_size: int) -> list[slice]:
    """Sample ranges of the block calls: the first holds a single sample, so that the per-block probe
    (``probe_input_groups``) costs one sample's forward; the rest hold ``batch_size`` samples each."""
    rows = [slice(0, 1)]
    rows += [slice(s, min(s + batch_size, nsamples)) for s in range(1, nsamples, batch_size)]
    return rows


def capture_first_block_inputs(
    model: nn.Module,
    first_block: nn.Module,
    input_ids: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> BlockInputs:
    """Run the model on ``input_ids`` until the first block and keep what the block was called with.

    Everything before the block runs where the model lives; the captured tensors then move to ``device``.
    Batches follow ``batch_rows``.  Arguments equal to those of the previous batch (masks and position
    embeddings usually are) are stored once.
    """
    captured: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def stop_at_block(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append((args, kwargs))
        raise _StopForward

    handle = first_block.register_forward_pre_hook(stop_at_block, with_kwargs=True)
    input_device = _input_device(model)
    hidden_batches: list[torch.Tensor] = []
    calls: list[_BlockCall] = []
    try:
        for rows in batch_rows(input_ids.shape[0], batch_size):
            batch = input_ids[rows].to(input_device)
            try:
                model(input_ids=batch, use_cache=False)
            except _StopForward:
                pass
            else:
                raise RuntimeError("the model's forward never reached its first decoder block")
            args, kwargs = captured.pop()
            hidden_in_kwargs = not args
            hidden = kwargs.pop("hidden_states") if hidden_in_kwargs else args[0]
            args = args if hidden_in_kwargs else args[1:]
            hidden_batches.append(hidden.to(device))
            args = _map_tensors(args, lambda t: t.to(device))
            kwargs = _map_tensors(kwargs, lambda t: t.to(device))
            previous = calls[-1] if calls else None
            if previous is not None and (previous.rows.stop - previous.rows.start) == batch.shape[0]:
                args = previous.args if _same(args, previous.args) else args
                kwargs = previous.kwargs if _same(kwargs, previous.kwargs) else kwargs
            calls.append(_BlockCall(rows, args, kwargs, hidden_in_kwargs))
    finally:
        handle.remove()
    return BlockInputs(torch.cat(hidden_batches), calls)


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


def accumulate_statistics(
    block: nn.Module,
    inputs: BlockInputs,
    groups: list[_InputGroup],
    device: torch.device,
    hessian_stride: int,
    stop_early: bool,
) -> dict[str, InputStatistics]:
    """Run ``block`` over all samples with hooks on the groups' owners; statistics keyed by owner name.

    With ``stop_early`` the forward is cut once the last owner (in execution order) has its input: the
    rest of the block does not affect these statistics.
    """
    statistics = {g.owner.name: InputStatistics(g.owner.shape[1], device, hessian_stride) for g in groups}
    last = groups[-1].owner.module if stop_early else None

    def collect(stats: InputStatistics) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            stats.add(_first_input(args, kwargs))
            if module is last:
                raise _StopForward

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


def _execution_device(block: nn.Module) -> torch.device:
    """Where ``block`` computes: its accelerate hook's execution device, else where its weights are."""
    hook = getattr(block, "_hf_hook", None)
    if getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    for parameter in block.parameters():
        if parameter.device.type != "meta":
            return parameter.device
    return torch.device("cpu")


def _offloaded_modules(block: nn.Module) -> list[nn.Module]:
    """Submodules (the block included) whose weights accelerate keeps off-device between forwards."""
    return [m for m in block.modules() if getattr(getattr(m, "_hf_hook", None), "offload", False)]


def _write_back_offloaded(module: nn.Module) -> None:
    """Store the module's current (compressed) weights where its offload hook reloads them from.

    accelerate reads an offloaded weight from ``weights_map``: a prefixed view of an
    ``OffloadedWeightsLoader`` whose in-memory ``state_dict`` takes priority over the disk index, so a
    compressed weight written there is what every later forward loads.
    """
    weights_map = module._hf_hook.weights_map
    store, prefix = getattr(weights_map, "dataset", weights_map), getattr(weights_map, "prefix", "")
    state_dict = getattr(store, "state_dict", None)
    if not isinstance(state_dict, dict):
        raise RuntimeError(
            f"cannot write compressed weights back to the offload store of {type(module).__name__}"
        )
    stored = set(state_dict) | set(getattr(store, "index", {}))
    for name, parameter in module.named_parameters():
        key = f"{prefix}{name}"
        if key in stored:
            state_dict[key] = parameter.detach().to("cpu", copy=True)


@contextlib.contextmanager
def block_on_device(block: nn.Module, device: torch.device | None) -> Iterator[torch.device]:
    """Yield the device on which ``block`` computes; restore its placement afterwards.

    Blocks dispatched by accelerate (``device_map``) compute where their hook executes them (offloaded
    weights are loaded by the hook at every forward); other blocks move to ``device`` when given, and back.
    """
    if getattr(block, "_hf_hook", None) is not None or _offloaded_modules(block) or device is None:
        yield _execution_device(block)
        return
    original = _execution_device(block)
    block.to(device)
    try:
        yield device
    finally:
        block.to(original)


@contextlib.contextmanager
def weights_materialized(block: nn.Module) -> Iterator[None]:
    """Make offloaded weights of ``block`` real tensors for in-place edits, and persist the edits.

    Outside a forward, accelerate keeps offloaded weights on the meta device and reloads them from its
    offload store at every forward, so compressed weights must be written back to that store or the next
    forward would silently run the dense ones.  A no-op for blocks that are not offloaded.
    """
    offloaded = _offloaded_modules(block)
    if not offloaded:
        yield
        return
    from accelerate.utils import align_module_device

    with contextlib.ExitStack() as stack:
        for module in offloaded:
            stack.enter_context(align_module_device(module))
        yield
        for module in offloaded:
            _write_back_offloaded(module)


def hessian_stride(method: CompressionMethod, spec: CompressionSpec, total_tokens: int) -> int:
    """Every token for Hessian methods; otherwise enough of a stride to keep ``error_tokens`` tokens."""
    if method.uses_full_hessian(spec) or spec.error_tokens is None:
        return 1
    return max(1, math.ceil(total_tokens / spec.error_tokens))


def compress_sequential(
    model: nn.Module,
    method: CompressionMethod,
    spec: CompressionSpec,
    input_ids: torch.Tensor,
    device: torch.device | str | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> list[LayerReport]:
    """Compress every decoder linear of ``model`` in place, block by block, on calibration ``input_ids``.

    ``input_ids``: (nsamples, seqlen) token ids.  ``device``: where the work runs (None: where each block
    executes).  Returns one measured ``LayerReport`` per linear, each with ``recon_error`` (‖WX − ŴX‖² /
    ‖WX‖² on the layer's calibration inputs) and ``error_tokens`` (how many tokens that was measured on).
    """
    _, blocks = find_decoder_blocks(model)
    targets = decoder_linears(model)
    by_block: dict[int, list[TargetLinear]] = {}
    for target in targets:
        by_block.setdefault(target.block_index, []).append(target)
    compute_device = torch.device(device) if device is not None else None
    nsamples, seqlen = input_ids.shape
    batch_size = max(1, batch_tokens // seqlen)
    stride = hessian_stride(method, spec, nsamples * seqlen)
    layers: list[LayerReport] = []

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            capture_device = compute_device or _execution_device(blocks[0])
            inputs = capture_first_block_inputs(model, blocks[0], input_ids, batch_size, capture_device)
            progress = tqdm(range(len(blocks)), desc=f"llmkick {spec.method}", unit="block", leave=False)
            for index in progress:
                start = time.perf_counter()
                block = blocks[index]
                block_targets = by_block.get(index, [])
                block_layers: list[LayerReport] = []
                with block_on_device(block, compute_device) as block_device:
                    inputs.to(block_device)
                    if block_targets:
                        block_layers = _compress_block(
                            block, block_targets, inputs, method, spec, block_device, stride
                        )
                    if index + 1 < len(blocks):  # the last block's outputs feed nothing
                        inputs.advance(block)
                layers.extend(block_layers)
                errors = [layer.extra["recon_error"] for layer in block_layers]
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
    return layers


def _compress_block(
    block: nn.Module,
    targets: list[TargetLinear],
    inputs: BlockInputs,
    method: CompressionMethod,
    spec: CompressionSpec,
    device: torch.device,
    stride: int,
) -> list[LayerReport]:
    """Statistics pass(es) and compression of one block's linears (the block is already on ``device``)."""
    groups, single_calls = probe_input_groups(block, targets, inputs)
    # true_sequential: one statistics pass per input group, after the groups before it are compressed.
    passes = [[group] for group in groups] if spec.true_sequential else [groups]
    reports: list[LayerReport] = []
    for pass_groups in passes:
        statistics = accumulate_statistics(block, inputs, pass_groups, device, stride, single_calls)
        with weights_materialized(block):
            reports.extend(_compress_groups(pass_groups, statistics, method, spec, device))
    return reports


def _compress_groups(
    groups: list[_InputGroup],
    statistics: dict[str, InputStatistics],
    method: CompressionMethod,
    spec: CompressionSpec,
    device: torch.device,
) -> list[LayerReport]:
    """Compress each member of ``groups`` with its group's statistics; measure sparsity and error."""
    reports: list[LayerReport] = []
    for group in groups:
        stats = statistics[group.owner.name]
        if stats.tokens == 0:
            raise RuntimeError(
                f"{group.owner.name} received no calibration tokens; a layer that calibration never "
                f"reaches cannot be compressed by method={spec.method}"
            )
        for target in group.members:
            W = target.weight.detach().to(device=device, dtype=torch.float32, copy=True)
            extra = method.compress_layer(target, spec, device, stats)
            extra["recon_error"] = relative_reconstruction_error(W, target.weight.to(device), stats.hessian)
            extra["error_tokens"] = stats.hessian_tokens
            reports.append(measure_layer(target, spec, extra))
    return reports
