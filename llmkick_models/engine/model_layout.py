"""Where the compressible weights are: a model's decoder blocks and the linear layers inside them.

Found from the module tree, not from architecture names: the decoder stack is the ``nn.ModuleList`` of
identical blocks whose length matches the config's layer count.  Only the linears inside those blocks are
compressed; embeddings, ``lm_head`` and norms are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

try:  # GPT-2 family: a linear with its weight stored as (in, out)
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers always ships it today
    Conv1D = ()  # type: ignore[assignment,misc]

_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


class UnsupportedModelError(ValueError):
    """The model has no decoder-block stack we can find, or its layers are of an unsupported kind."""


@dataclass
class TargetLinear:
    """One compressible linear layer of a decoder block."""

    name: str
    module: nn.Module
    block_index: int

    @property
    def weight(self) -> torch.Tensor:
        """The weight as (out_features, in_features); a view, so in-place edits reach the module."""
        weight = self.module.weight.data
        return weight.t() if isinstance(self.module, Conv1D) else weight

    @property
    def shape(self) -> tuple[int, int]:
        """(out_features, in_features)."""
        rows, cols = self.weight.shape
        return int(rows), int(cols)


def is_linear(module: nn.Module) -> bool:
    """True for layers we know how to compress: ``nn.Linear`` and GPT-2's transposed ``Conv1D``."""
    return isinstance(module, (nn.Linear, Conv1D))


def _expected_layer_count(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for candidate in (getattr(config, "text_config", None), config):
        for key in _LAYER_COUNT_KEYS:
            value = getattr(candidate, key, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def find_decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return the qualified name and the ``ModuleList`` holding the decoder blocks.

    Candidates are ModuleLists of same-class modules that contain linears.  Preferred: the one whose length
    is the config's layer count; among equals, the one with most parameters (skips e.g. vision towers).
    """
    expected = _expected_layer_count(model)
    candidates: list[tuple[bool, int, str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(block) for block in module}) != 1:
            continue
        if not any(is_linear(m) for m in module[0].modules()):
            continue
        size = sum(p.numel() for p in module.parameters())
        candidates.append((len(module) == expected, size, name, module))
    if not candidates:
        raise UnsupportedModelError(
            f"{type(model).__name__}: no stack of identical decoder blocks with linear layers was found"
        )
    _, _, name, blocks = max(candidates, key=lambda c: (c[0], c[1]))
    return name, blocks


def decoder_linears(model: nn.Module) -> list[TargetLinear]:
    """Every compressible linear inside the decoder blocks, in block order, shared weights listed once."""
    stack_name, blocks = find_decoder_blocks(model)
    seen: set[int] = set()
    targets: list[TargetLinear] = []
    for index, block in enumerate(blocks):
        for sub_name, module in block.named_modules():
            if not is_linear(module) or id(module.weight) in seen:
                continue
            seen.add(id(module.weight))
            targets.append(TargetLinear(f"{stack_name}.{index}.{sub_name}", module, index))
    if not targets:
        raise UnsupportedModelError(f"{type(model).__name__}: the decoder blocks hold no linear layers")
    return targets
