"""Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs"): prune by |W| · ‖X‖.

The score of weight W_ij is S_ij = |W_ij| · ‖X_j‖₂, where X_j is input feature j over all calibration
tokens.  Comparison happens per output row (unstructured: the ``sparsity · in`` lowest scores of
each row) or per N:M group, so any positive per-feature scale is irrelevant: the running mean of x_j²
that the driver keeps gives the same masks as the sum of squares.  No weight is updated.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from llmkick_models.engine.masks import pruning_mask
from llmkick_models.engine.methods.base import LayerJob, Needs
from llmkick_models.engine.methods.prune_then_quantize import PruningMethod
from llmkick_models.engine.options import CALIBRATION_OPTIONS, ERROR_TOKENS, PRUNING, TRUE_SEQUENTIAL


def wanda_scores(W: torch.Tensor, feature_sq_mean: torch.Tensor) -> torch.Tensor:
    """S = |W| · ‖X_j‖ broadcast over rows; W is (out, in), ``feature_sq_mean`` is (in,)."""
    return W.float().abs() * feature_sq_mean.float().sqrt().unsqueeze(0)


class Wanda(PruningMethod):
    """Per-output-row (or N:M) pruning by |W| · ‖X‖; needs only the input feature norms."""

    name: ClassVar[str] = "wanda"
    options = (*PRUNING, *CALIBRATION_OPTIONS, TRUE_SEQUENTIAL, ERROR_TOKENS)
    pruning_needs: ClassVar[Needs] = Needs(calibration=True, feature_norms=True)

    def prune(self, job: LayerJob) -> torch.Tensor:
        """Zero the lowest-scoring weights of each row (or N:M group) in place; return the mask."""
        statistics = job.statistics_for("wanda")
        weight, spec = job.target.weight, job.spec
        scores = wanda_scores(weight.to(job.device), statistics.feature_sq_mean.to(job.device))
        mask = pruning_mask(scores, spec.sparsity, spec.pattern, per_row=True)
        weight.masked_fill_(mask.to(weight.device), 0)
        return mask
