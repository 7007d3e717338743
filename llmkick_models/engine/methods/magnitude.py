"""Magnitude pruning: score |W|, zero the smallest (per matrix, or per N:M group). No calibration."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from llmkick_models.engine.masks import pruning_mask
from llmkick_models.engine.methods.base import CompressionMethod
from llmkick_models.engine.methods.gptq import QuantizeAfterPruning
from llmkick_models.engine.model_layout import TargetLinear
from llmkick_models.engine.spec import CompressionSpec

if TYPE_CHECKING:
    from llmkick_models.engine.hessian import InputStatistics


class Magnitude(QuantizeAfterPruning, CompressionMethod):
    """Unstructured: the ``sparsity`` fraction of smallest |W| in the whole matrix (LLM-KICK's baseline)."""

    name: ClassVar[str] = "magnitude"

    def compress_layer(
        self,
        target: TargetLinear,
        spec: CompressionSpec,
        device: torch.device,
        statistics: InputStatistics | None = None,
    ) -> dict[str, float]:
        """Zero the lowest-|W| weights of ``target`` in place; with ``bits=``, quantize it keeping the mask
        (``statistics`` serve only a GPTQ quantizer)."""
        weight = target.weight
        scores = weight.to(device=device, dtype=torch.float32).abs()
        mask = pruning_mask(scores, spec.sparsity, spec.pattern, per_row=False)
        weight.masked_fill_(mask.to(weight.device), 0)
        return self.quantize_pruned(target, spec, device, statistics, mask)
