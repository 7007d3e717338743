"""Quantizing a pruned layer without losing its mask: Wanda and magnitude with ``bits=``.

``quantizer=gptq`` (calibrated: GPTQ with the pruned weights forced to 0 at their turn, their error
compensated by the kept ones) or ``quantizer=rtn`` (round-to-nearest; 0 maps to 0).  SparseGPT instead
quantizes inside its own column loop (joint sparse + quant).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from llmkick_models.engine.methods.base import LayerJob
from llmkick_models.engine.methods.gptq import check_static_groups, gptq_group, gptq_layer
from llmkick_models.engine.methods.rtn import rtn_layer
from llmkick_models.engine.options import (
    GPTQ_ORDER,
    HESSIAN,
    QUANTIZER,
    QUANTIZER_CHOICE,
    CompressionArgumentError,
)
from llmkick_models.engine.spec import CompressionSpec

if TYPE_CHECKING:
    from llmkick_models.engine.quantizer import QuantizedWeight

#: The options of a pruning method that quantizes afterwards; meaningful only with ``bits=``.
PRUNE_THEN_QUANTIZE_OPTIONS = (*QUANTIZER, QUANTIZER_CHOICE, *GPTQ_ORDER, *HESSIAN)
_GPTQ_ONLY = ("act_order", "static_groups", "percdamp", "blocksize")


class QuantizeAfterPruning:
    """Mixin for a pruning ``CompressionMethod``: with ``bits=``, quantize each pruned layer, mask kept."""

    name: ClassVar[str]
    needs_calibration: ClassVar[bool]
    quantizer_options = PRUNE_THEN_QUANTIZE_OPTIONS
    quantized: dict[str, QuantizedWeight]

    @classmethod
    def check(cls, values: dict[str, Any], given: Mapping[str, Any]) -> None:
        """Choose the quantizer (GPTQ when the method is calibrated anyway, else RTN); with RTN, GPTQ's
        options are refused when given and left out of the spec otherwise."""
        if "bits" not in values:
            return
        values["quantizer"] = values["quantizer"] or ("gptq" if cls.needs_calibration else "rtn")
        if values["quantizer"] == "rtn":
            for arg in _GPTQ_ONLY:
                if arg in given:
                    raise CompressionArgumentError(
                        f"{arg}={given[arg]!r} is a GPTQ option, but method={cls.name} quantizes with "
                        f"quantizer=rtn here; use quantizer=gptq or drop {arg}="
                    )
                values.pop(arg)
        check_static_groups(values)

    @classmethod
    def requires_calibration(cls, spec: CompressionSpec) -> bool:
        """Calibration is needed for the method itself or for a GPTQ quantizer."""
        return cls.needs_calibration or cls._gptq_after(spec)

    @classmethod
    def uses_full_hessian(cls, spec: CompressionSpec) -> bool:
        """GPTQ after pruning needs the Hessian over every token."""
        return cls._gptq_after(spec)

    @staticmethod
    def _gptq_after(spec: CompressionSpec) -> bool:
        return spec.bits is not None and spec.quantizer == "gptq"

    def prune(self, job: LayerJob) -> torch.Tensor:
        """Zero the layer's pruned weights in place; return the mask (True = pruned)."""
        raise NotImplementedError

    def compress_layer(self, job: LayerJob) -> dict[str, float]:
        """Prune the layer in place; with ``bits=``, quantize it keeping the mask."""
        return self.quantize_pruned(job, self.prune(job))

    def compress_group(self, jobs: list[LayerJob]) -> list[dict[str, float]]:
        """With a GPTQ quantizer, linears that read the same input are pruned one by one, then quantized
        together (one damped inverse, one column loop over their stacked rows, each as alone)."""
        if not jobs or not self._gptq_after(jobs[0].spec):
            return [self.compress_layer(job) for job in jobs]
        masks = [self.prune(job) for job in jobs]
        extras = []
        for job, (extra, grid) in zip(jobs, gptq_group(jobs, masks), strict=True):
            extra.pop("recon_error")  # relative to the pruned weight; the driver's is to the dense one
            self.quantized[job.target.name] = grid
            extras.append(extra)
        return extras

    def quantize_pruned(self, job: LayerJob, mask: torch.Tensor) -> dict[str, float]:
        """No-op without ``bits``; else quantize the layer in place keeping ``mask`` (True = pruned) zero."""
        if job.spec.bits is None:
            return {}
        if self._gptq_after(job.spec):
            extra, grid = gptq_layer(job, mask)
        else:
            extra, grid = rtn_layer(job)
        self.quantized[job.target.name] = grid
        return extra
