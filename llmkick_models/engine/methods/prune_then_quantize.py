"""Pruning methods that choose a mask of their own (Wanda, magnitude), and quantize after it with ``bits=``.

``quantizer=gptq`` (calibrated: GPTQ with the pruned weights forced to 0 at their turn, their error
compensated by the kept ones) or ``quantizer=rtn`` (round-to-nearest; 0 maps to 0).  SparseGPT instead
quantizes inside its own column loop (joint sparse + quant).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import torch

from llmkick_models.engine.methods.base import FULL_HESSIAN, CompressionMethod, LayerJob, LayerResult, Needs
from llmkick_models.engine.methods.gptq import check_static_groups, gptq_group
from llmkick_models.engine.methods.rtn import rtn_layer
from llmkick_models.engine.options import (
    GPTQ_ORDER,
    HESSIAN,
    QUANTIZER,
    QUANTIZER_CHOICE,
    CompressionArgumentError,
)
from llmkick_models.engine.spec import CompressionSpec

#: The options of a pruning method that quantizes afterwards; meaningful only with ``bits=``.
PRUNE_THEN_QUANTIZE_OPTIONS = (*QUANTIZER, QUANTIZER_CHOICE, *GPTQ_ORDER, *HESSIAN)
_GPTQ_ONLY = ("act_order", "static_groups", "percdamp", "blocksize")


def _gptq_after(spec: CompressionSpec) -> bool:
    return spec.bits is not None and spec.quantizer == "gptq"


class PruningMethod(CompressionMethod):
    """A method that zeroes the weights of a mask it chooses (``prune``); with ``bits=``, each pruned
    layer is then quantized keeping the mask."""

    quantizer_options = PRUNE_THEN_QUANTIZE_OPTIONS
    #: What choosing the mask needs (Wanda: calibration tokens and the input feature norms).  A method
    #: calibrated anyway quantizes with GPTQ by default, one without calibration with RTN.
    pruning_needs: ClassVar[Needs] = Needs()

    @classmethod
    def check(cls, values: dict[str, Any], given: Mapping[str, Any]) -> None:
        """Choose the quantizer (GPTQ when the method is calibrated anyway, else RTN); with RTN, GPTQ's
        options are refused when given and left out of the spec otherwise."""
        if "bits" not in values:
            return
        values["quantizer"] = values["quantizer"] or ("gptq" if cls.pruning_needs.calibration else "rtn")
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
    def needs(cls, spec: CompressionSpec) -> Needs:
        """What pruning needs, and the full Hessian for a GPTQ quantizer after it."""
        return cls.pruning_needs | (FULL_HESSIAN if _gptq_after(spec) else Needs())

    def prune(self, job: LayerJob) -> torch.Tensor:
        """Zero the layer's pruned weights in place; return the mask (True = pruned)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement prune")

    def compress_group(self, jobs: list[LayerJob]) -> list[LayerResult]:
        """Prune each layer; with ``bits=``, quantize it keeping its mask: with GPTQ, linears that read the
        same input together (one damped inverse, one column loop over their stacked rows, each as alone)."""
        masks = [self.prune(job) for job in jobs]
        if not jobs or jobs[0].spec.bits is None:
            return [LayerResult() for _ in jobs]
        if _gptq_after(jobs[0].spec):
            # GPTQ's loop measures its error against the pruned weight; the one reported is against the
            # weight this method received, so the driver measures it.
            return [replace(result, error=None) for result in gptq_group(jobs, masks)]
        return [rtn_layer(job) for job in jobs]
