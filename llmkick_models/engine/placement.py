"""Where the layer-by-layer driver computes: moving one block to the work device and back, and keeping
weights that accelerate offloads (``device_map`` with CPU/disk offload) in sync with their compressed values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def execution_device(block: nn.Module) -> torch.device:
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
        yield execution_device(block)
        return
    original = execution_device(block)
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
