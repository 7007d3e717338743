"""Where AWQ's per-channel scales go: the op that produces each input group's input, found and checked.

AWQ multiplies a group's weight columns by s and must divide the group's input by s where it is made, so
the float model is unchanged.  For each input group of a decoder block (``BlockJob.groups``):

* if a module with parameters outputs the group's input tensor itself (q/k/v after the attention norm,
  gate/up after the MLP norm), that module must absorb the scale: a norm with a per-channel ``weight``
  (and ``bias``) of the input's width — y·w + b becomes y·(w/s) + b/s, or, for norms that multiply by
  (1 + w) such as Gemma's, w becomes (1 + w)/s − 1, the form told apart by running the norm — or a linear,
  whose rows (and bias) are divided by s.  Anything else is refused naming the module, before any weight
  changes;
* otherwise (no module makes it, or one without parameters: an activation) the input is computed between
  modules (o_proj's reads attention applied to v; down_proj's reads act(gate) · up).  A linear of the
  block that ran before the group and whose rows (or a slice of rows of the input's width: the up half
  of a fused gate_up, v of a fused qkv) scale the input channel by channel is found by trying it on the
  first calibration sample: the reference's o ← v (only where v feeds o channel for channel, i.e. no
  grouped-query attention) and down ← up.  When none does (GQA, gelu(fc1) → fc2), the group gets no
  scales, as in the reference.

The search runs once per block structure (relative module names); every block's folding is then checked
on the first calibration sample (``methods.awq``) and undone, with an error, if it changed the output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmkick_models.engine.methods.base import BlockJob
from llmkick_models.engine.model_layout import TargetLinear, is_linear


class AWQFoldingError(ValueError):
    """A scale cannot be folded into the op before a group of linears."""


#: Relative tolerance of the numeric checks (a wrong op is off by O(1); float32 round-off is ~1e-6).
_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
_HALF_TOLERANCE = 2e-2
_HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class SinkLayout:
    """Where one group's scale goes, by names relative to the block: ``kind`` is ``norm`` (y·w + b),
    ``norm_offset`` (y·(1 + w)) or ``linear`` (rows ``start:stop`` of its (out, in) weight)."""

    module: str
    kind: str
    start: int = 0
    stop: int = 0


@dataclass
class ScaleSink:
    """The op that absorbs a group's 1/s, bound to one block's module."""

    name: str
    kind: str
    module: nn.Module
    rows: slice

    def fold(self, s: torch.Tensor) -> torch.Tensor:
        """Divide the op's output channels by ``s`` (in place, in the parameters' dtype); returns the
        divisor the stored weights realise per channel (float32), for the linears' columns to match.

        A norm's weight is one number per channel, so its rounding is undone exactly by multiplying the
        columns by the realised divisor instead of ``s``: in (1 + w) form, w' = (1 + w)/s − 1 lies near −1
        for large s, where half precision keeps only ~2^-9 of 1 + w' (tens of percent of it)."""
        if self.kind == "linear":
            weight = TargetLinear(self.name, self.module, -1).weight
            weight[self.rows].div_(s.to(weight.device, weight.dtype).unsqueeze(1))
            bias = getattr(self.module, "bias", None)
            if bias is not None:
                bias.data[self.rows].div_(s.to(bias.device, bias.dtype))
            return s.float()  # rounded element by element: no per-channel correction exists
        weight = self.module.weight.data
        scale = s.to(weight.device, torch.float32)
        offset = 1.0 if self.kind == "norm_offset" else 0.0
        gain = weight.float() + offset
        target = gain / scale
        if offset:  # 1 + w' must not round to 0 (a live channel silenced): keep it at least one ulp of 1
            eps = torch.finfo(weight.dtype).eps
            tiny = (target.abs() < eps) & (gain != 0)
            target = torch.where(tiny, torch.full_like(target, eps).copysign(target), target)
        weight.copy_((target - offset).to(weight.dtype))
        realised = torch.where(gain == 0, scale, gain / (weight.float() + offset))
        bias = getattr(self.module, "bias", None)
        if bias is not None:
            bias.data.copy_((bias.data.float() / realised).to(bias.dtype))
        return realised.to(s.device)

    def parameters(self) -> list[torch.Tensor]:
        """The tensors ``fold`` changes (to save and restore)."""
        return [
            p.data
            for p in (getattr(self.module, "weight", None), getattr(self.module, "bias", None))
            if p is not None
        ]


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of a folding check for weights of ``dtype``."""
    return _TOLERANCE.get(dtype, _HALF_TOLERANCE)


def _upcast(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype in _HALF_DTYPES:
        return value.float()
    if isinstance(value, tuple | list):
        return type(value)(_upcast(v) for v in value)
    return value


@contextmanager
def in_float32(block: nn.Module) -> Iterator[None]:
    """Run ``block`` on copies of its parameters inside the context, half-precision ones upcast (exactly)
    to float32 as are its floating inputs; on exit the very same stored tensors, untouched, are back.

    A folding check compares two forwards; in half precision each forward's own round-off, amplified
    where a block is ill-conditioned (a norm of a near-zero attention output), reaches tens of percent on
    Gemma 3, while the folded weights themselves differ from the original only by their storage rounding."""
    stored = {p: p.data for p in block.parameters()}
    for parameter, data in stored.items():
        parameter.data = data.to(torch.float32 if data.dtype in _HALF_DTYPES else data.dtype, copy=True)

    def upcast(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        return _upcast(args), {k: _upcast(v) for k, v in kwargs.items()}

    handle = block.register_forward_pre_hook(upcast, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
        for parameter, data in stored.items():
            parameter.data = data


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float32."""
    b = b.float()
    return float((a.float() - b).norm() / b.norm().clamp_min(1e-30))


def _first_tensor(value: Any) -> torch.Tensor | None:
    return value if isinstance(value, torch.Tensor) else None


def _trace(
    block: nn.Module, probe: Callable[[], torch.Tensor], owners: list[nn.Module]
) -> tuple[list[tuple[str, nn.Module, torch.Tensor | None, torch.Tensor | None]], list[torch.Tensor]]:
    """Run the probe with hooks: every submodule's (name, module, first input, output) in completion
    order, and each owner's input."""
    names = {id(m): n for n, m in block.named_modules() if n}
    record: list[tuple[str, nn.Module, torch.Tensor | None, torch.Tensor | None]] = []
    owner_inputs: dict[int, torch.Tensor] = {}

    def after(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        record.append(
            (names[id(module)], module, _first_tensor(args[0]) if args else None, _first_tensor(output))
        )

    def before(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        owner_inputs.setdefault(id(module), args[0] if args else next(iter(kwargs.values())))

    handles = [m.register_forward_hook(after) for n, m in block.named_modules() if n]
    handles += [m.register_forward_pre_hook(before, with_kwargs=True) for m in owners]
    try:
        probe()
    finally:
        for handle in handles:
            handle.remove()
    return record, [owner_inputs[id(m)] for m in owners]


def _capture_input(block: nn.Module, probe: Callable[[], torch.Tensor], owner: nn.Module) -> torch.Tensor:
    """The input ``owner`` receives when the probe runs."""
    captured: list[torch.Tensor] = []

    def before(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not captured:
            captured.append((args[0] if args else next(iter(kwargs.values()))).detach().clone())

    handle = owner.register_forward_pre_hook(before, with_kwargs=True)
    try:
        probe()
    finally:
        handle.remove()
    return captured[0]


def _norm_kind(name: str, module: nn.Module, x: torch.Tensor | None, width: int, group: str) -> str:
    """``norm`` or ``norm_offset``, told apart by running the module with trial weights; refused
    otherwise, naming it."""
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    shaped = isinstance(weight, torch.Tensor) and weight.dim() == 1 and weight.numel() == width
    shaped = shaped and (bias is None or (isinstance(bias, torch.Tensor) and bias.shape == weight.shape))
    if not shaped or x is None:
        raise AWQFoldingError(
            f"method=awq cannot fold its scales into {name} ({type(module).__name__}), which produces the "
            f"input of {group}: it is neither a norm with a per-channel weight of width {width} nor a "
            f"linear (no weight has been changed)"
        )
    generator = torch.Generator().manual_seed(0)
    s = torch.rand(width, generator=generator).add_(0.5).to(weight.device)
    # In float32 and by the smaller error: in half precision y·(1 + w/s) passes for y·(1 + w)/s within
    # the half tolerance when |w| is large (Gemma 3's norms reach |w| ≈ 60), and the wrong form is chosen.
    with in_float32(module):
        expected = module(x).float() / s
    errors: dict[str, float] = {}
    for kind in ("norm", "norm_offset"):
        with in_float32(module):  # the trial fold lands on float32 copies: the stored weights never change
            ScaleSink(name, kind, module, slice(None)).fold(s)
            errors[kind] = relative_difference(module(x), expected)
    best = min(errors, key=errors.__getitem__)
    if errors[best] <= tolerance(torch.float32):
        return best
    raise AWQFoldingError(
        f"method=awq cannot fold its scales into {name} ({type(module).__name__}), which produces the input "
        f"of {group}: dividing its weight by s (or 1 + weight, as Gemma's norms) does not divide its output "
        f"by s (no weight has been changed)"
    )


def _linear_slice(
    block: nn.Module,
    probe: Callable[[], torch.Tensor],
    candidates: list[tuple[str, nn.Module]],
    owner: nn.Module,
    x: torch.Tensor,
) -> SinkLayout | None:
    """The latest-run linear (or slice of its rows of the input's width) whose row scaling scales the
    owner's input channel by channel, tried on the first calibration sample; None if none does."""
    width = x.shape[-1]
    generator = torch.Generator().manual_seed(0)
    for name, module in reversed(candidates):
        rows = TargetLinear(name, module, -1).shape[0]
        if rows % width:
            continue
        for start in range(0, rows, width):
            r = torch.rand(width, generator=generator).add_(0.5).to(x.device)
            sink = ScaleSink(name, "linear", module, slice(start, start + width))
            saved = [p.clone() for p in sink.parameters()]
            sink.fold(1 / r)
            try:
                scaled = _capture_input(block, probe, owner)
            finally:
                for p, old in zip(sink.parameters(), saved, strict=True):
                    p.copy_(old)
            if relative_difference(scaled, x.float() * r) <= tolerance(module.weight.dtype):
                return SinkLayout(name, "linear", start, start + width)
    return None


def find_sinks(job: BlockJob) -> list[SinkLayout | None]:
    """For each input group of the block, where its scales fold (None: nowhere, the group keeps s = 1).
    Raises ``AWQFoldingError`` naming the module when the op making a group's input cannot absorb them."""
    block, groups = job.block, job.groups
    owners = [jobs[0].target.module for jobs in groups]
    with torch.no_grad():
        record, inputs = _trace(block, job.probe, owners)
        linears = {id(m) for jobs in groups for m in (j.target.module for j in jobs)}
        sinks: list[SinkLayout | None] = []
        for jobs, owner, x in zip(groups, owners, inputs, strict=True):
            group = "+".join(j.target.name for j in jobs)
            producer = next(((n, m, xin) for n, m, xin, out in record if out is x), None)
            # A parameterless producer (an activation, dropout) computes the input like attention does:
            # look for a linear before it, as for o and down.
            if producer is not None and any(True for _ in producer[1].parameters()):
                name, module, module_input = producer
                if is_linear(module):
                    sinks.append(SinkLayout(name, "linear", 0, x.shape[-1]))
                else:
                    kind = _norm_kind(f"{job.name}.{name}", module, module_input, x.shape[-1], group)
                    sinks.append(SinkLayout(name, kind))
                continue
            position = next(i for i, (_, m, _, _) in enumerate(record) if m is owner)
            before = [(n, m) for n, m, _, _ in record[:position] if id(m) in linears]
            sinks.append(_linear_slice(block, job.probe, before, owner, x.detach().clone()))
    return sinks


def bind(job: BlockJob, layout: SinkLayout) -> ScaleSink:
    """The sink of ``layout`` in this block's modules."""
    module = job.block.get_submodule(layout.module)
    rows = slice(layout.start, layout.stop) if layout.kind == "linear" else slice(None)
    return ScaleSink(f"{job.name}.{layout.module}", layout.kind, module, rows)
