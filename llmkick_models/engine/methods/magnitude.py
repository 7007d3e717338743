"""Magnitude pruning: score |W|, zero the smallest (per matrix, or per N:M group). No calibration."""

from __future__ import annotations

from typing import ClassVar

import torch

from llmkick_models.engine.masks import pruning_mask
from llmkick_models.engine.methods.base import LayerJob
from llmkick_models.engine.methods.prune_then_quantize import PruningMethod
from llmkick_models.engine.options import CALIBRATION_OPTIONS, ERROR_TOKENS, PRUNING


class Magnitude(PruningMethod):
    """Unstructured: the ``sparsity`` fraction of smallest |W| in the whole matrix (LLM-KICK's baseline)."""

    name: ClassVar[str] = "magnitude"
    #: calibration= only serves to measure reconstruction errors (or a GPTQ quantizer after pruning).
    options = (*PRUNING, *CALIBRATION_OPTIONS, ERROR_TOKENS)

    def prune(self, job: LayerJob) -> torch.Tensor:
        """Zero the lowest-|W| weights of the layer in place; return the mask (with ``bits=`` the layer is
        then quantized keeping it; the statistics serve only a GPTQ quantizer)."""
        weight, spec = job.target.weight, job.spec
        scores = weight.to(device=job.device, dtype=torch.float32).abs()
        mask = pruning_mask(scores, spec.sparsity, spec.pattern, per_row=False)
        weight.masked_fill_(mask.to(weight.device), 0)
        return mask
