"""LLM.int8() as run-time modules: decoder linears replaced by bitsandbytes' ``Linear8bitLt``.

Everything that touches bitsandbytes lives here, imported only when ``method=llm_int8`` runs, so llmkick
works without the optional ``[int8]`` extra.  The modules are bitsandbytes' own, built exactly as its
documentation says (float weights in an ``Int8Params``, quantized when moved to a device): int8 weights
with one absmax scale per output row, and at every forward int8 activations with one absmax scale per
token, except the input dimensions in which some token of the forward reaches ``threshold`` (those are
multiplied in the activations' own dtype).  The outlier share is read from bitsandbytes' own record of
which dimensions it routed (``state.idx``), not recomputed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch
from torch import nn

from llmkick_models.engine.model_layout import Conv1D, TargetLinear

#: The oldest bitsandbytes whose CPU backend runs ``Linear8bitLt`` (the one tested: 0.50.2).
MIN_BITSANDBYTES = (0, 50)
INSTALL_HINT = "pip install 'llmkick[int8]' (or: pip install 'bitsandbytes>=0.50')"
#: bitsandbytes logs this at WARNING on every forward of a non-float16 input (once per linear per batch).
_CAST_WARNING = "MatMul8bitLt: inputs will be cast from"


def bitsandbytes_problem() -> str | None:
    """Why ``method=llm_int8`` cannot run here (one line), or None; checked without importing it."""
    try:
        found = importlib.util.find_spec("bitsandbytes") is not None
    except ValueError:  # present in sys.modules without a spec (e.g. set to None)
        found = False
    if not found:
        return f"method=llm_int8 needs bitsandbytes, which is not installed: {INSTALL_HINT}"
    try:
        installed = version("bitsandbytes")
    except PackageNotFoundError:
        return None  # an uninstalled source checkout: let the import decide
    numbers = tuple(int(part) for part in installed.split(".")[:2] if part.isdigit())
    if numbers < MIN_BITSANDBYTES:
        return f"method=llm_int8 needs bitsandbytes>=0.50 (found {installed}): {INSTALL_HINT}"
    return None


class _DropCastWarning(logging.Filter):
    """Drops bitsandbytes' per-forward cast warning; the README and the report state the cast once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_CAST_WARNING)


def _bnb() -> Any:
    import bitsandbytes

    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropCastWarning) for f in logger.filters):
        logger.addFilter(_DropCastWarning())
    return bitsandbytes


def int8_linear(module: nn.Module, threshold: float, device: torch.device) -> nn.Module:
    """A bitsandbytes ``Linear8bitLt`` with ``module``'s weight quantized on ``device`` (an ``nn.Linear``
    or GPT-2 ``Conv1D``, whose (in, out) weight is transposed first)."""
    bnb = _bnb()
    weight = module.weight.data
    weight = weight.t() if isinstance(module, Conv1D) else weight
    out_features, in_features = weight.shape
    bias = module.bias
    layer = bnb.nn.Linear8bitLt(
        in_features,
        out_features,
        bias is not None,
        has_fp16_weights=False,
        threshold=threshold,
        device="meta",
    )
    layer.weight = bnb.nn.Int8Params(
        weight.detach().contiguous().to("cpu"), requires_grad=False, has_fp16_weights=False
    )
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    layer.train(module.training)
    return layer.to(device)  # Int8Params quantizes here (row absmax), as bitsandbytes documents


def replace_with_int8(
    model: nn.Module, targets: list[TargetLinear], threshold: float, device: torch.device | None
) -> list[TargetLinear]:
    """Replace each target linear of ``model`` by its ``int8_linear``; the targets, now the new modules."""
    offloaded = next((t.name for t in targets if t.module.weight.device.type == "meta"), None)
    if offloaded is not None:  # accelerate's CPU/disk offload keeps no weight in the module to quantize
        raise ValueError(
            f"method=llm_int8: {offloaded} is offloaded (device_map with CPU/disk offload); bitsandbytes "
            f"needs every decoder weight in memory: load the model without offloading"
        )
    replaced: list[TargetLinear] = []
    for target in targets:
        where = device if device is not None else target.module.weight.device
        layer = int8_linear(target.module, threshold, where)
        model.set_submodule(target.name, layer)
        replaced.append(TargetLinear(target.name, layer, target.block_index))
    return replaced


@dataclass
class OutlierCount:
    """Input dimensions of one layer that bitsandbytes computed in 16 bit, forward by forward."""

    in_features: int
    forwards: int = 0
    routed: int = 0  # summed over forwards
    most: int = 0  # the largest count in one forward
    ever: set[int] = field(default_factory=set)

    def facts(self) -> dict[str, float]:
        """The layer's report entries (see the README: outlier share)."""
        return {
            "outlier_share": self.routed / (self.forwards * self.in_features) if self.forwards else 0.0,
            "outlier_share_max": self.most / self.in_features,
            "outlier_dims_ever": len(self.ever) / self.in_features,
            "outlier_forwards": self.forwards,
        }


@contextlib.contextmanager
def counting_outliers(targets: list[TargetLinear]) -> Iterator[dict[str, OutlierCount]]:
    """Count, after every forward of each int8 target, the dimensions bitsandbytes routed to 16 bit."""
    counts = {t.name: OutlierCount(t.shape[1]) for t in targets}

    def record(count: OutlierCount) -> Any:
        def hook(module: nn.Module, _args: Any, _output: Any) -> None:
            routed = module.state.idx  # set by bitsandbytes at this very forward (threshold > 0)
            dims = [] if routed is None else routed.tolist()
            count.forwards += 1
            count.routed += len(dims)
            count.most = max(count.most, len(dims))
            count.ever.update(dims)

        return hook

    handles = [t.module.register_forward_hook(record(counts[t.name])) for t in targets]
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


def int8_state(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(int8 codes, row scales) of a ``Linear8bitLt``, wherever bitsandbytes keeps them now."""
    scales = getattr(module.weight, "SCB", None)
    return module.weight.data, scales if scales is not None else module.state.SCB


def int8_problems(targets: list[TargetLinear], threshold: float) -> list[str]:
    """What is wrong with ``targets`` as LLM.int8() modules of ``threshold`` (empty when nothing): module
    kind and settings, int8 codes, and absmax row scales (each nonzero row has a code of magnitude 127)."""
    bnb = _bnb()
    problems: list[str] = []
    for target in targets:
        module = target.module
        if not isinstance(module, bnb.nn.Linear8bitLt):
            problems.append(f"{target.name} is a {type(module).__name__}, not a bitsandbytes Linear8bitLt")
            continue
        state = module.state
        if state.threshold != threshold or state.has_fp16_weights:
            problems.append(
                f"{target.name}: threshold {state.threshold}, has_fp16_weights {state.has_fp16_weights}; "
                f"expected threshold {threshold} with int8 weights"
            )
        codes, scales = int8_state(module)
        if codes.dtype != torch.int8 or scales is None or scales.shape != (codes.shape[0],):
            problems.append(f"{target.name}: no int8 weight with one scale per row")
            continue
        peak = codes.abs().amax(dim=1).to(torch.int32)
        bad = (
            ~torch.isfinite(scales)
            | (scales < 0)
            | ((scales > 0) & (peak != 127))
            | ((scales == 0) & (peak > 0))
        )
        if bool(bad.any()):
            problems.append(f"{target.name}: {int(bad.sum())} rows are not on an absmax int8 grid")
    return problems
