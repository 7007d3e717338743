"""Registry of compression methods: name -> implementation module and the model_args it accepts.

Pure data so that arguments can be validated before torch or the model is loaded.  A new method is one new
module in this package plus one entry in ``METHODS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmkick_models.engine.methods.base import CompressionMethod

PRUNING_ARGS = frozenset({"sparsity", "pattern"})
#: Where the calibration tokens come from and how many; ``error_tokens`` bounds the tokens on which a
#: method without a full Hessian measures its reconstruction error.
CALIBRATION_ARGS = frozenset({"calibration", "nsamples", "seqlen", "calibration_seed"})
#: Options of the layer-by-layer driver for methods whose statistics depend on earlier compressed layers.
SEQUENTIAL_ARGS = frozenset({"true_sequential"})
#: Options of the Hessian-based methods (SparseGPT, GPTQ).
HESSIAN_ARGS = frozenset({"percdamp", "blocksize"})
#: The weight quantizer (``llmkick_models.engine.quantizer``): used by gptq/rtn, and after pruning when given.
QUANTIZER_ARGS = frozenset({"bits", "group_size", "sym"})
#: GPTQ's column order and group grids.
GPTQ_ARGS = frozenset({"act_order", "static_groups"})
#: Wanda/magnitude with ``bits=``: which quantizer runs after pruning (gptq or rtn), and its options.
PRUNE_THEN_QUANTIZE_ARGS = QUANTIZER_ARGS | GPTQ_ARGS | HESSIAN_ARGS | {"quantizer"}


@dataclass(frozen=True)
class MethodInfo:
    """What the argument parser needs to know about a method, without importing it.

    ``calibrated``: the method cannot run without calibration data (it defaults to ``c4``, the paper's);
    a method that merely *accepts* the calibration args uses them only when they are given.
    """

    name: str
    implementation: str  # "module:Class"; empty for "none"
    accepts: frozenset[str]
    summary: str
    calibrated: bool = False


METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        MethodInfo("none", "", frozenset(), "no compression (the dense baseline)"),
        MethodInfo(
            "magnitude",
            "llmkick_models.engine.methods.magnitude:Magnitude",
            PRUNING_ARGS | CALIBRATION_ARGS | PRUNE_THEN_QUANTIZE_ARGS | {"error_tokens"},
            "zero the smallest |W| per weight matrix (unstructured) or per N:M group; no calibration "
            "(given calibration=, it is used only to measure the reconstruction error, or by "
            "quantizer=gptq); with bits=, quantized after pruning keeping the mask",
        ),
        MethodInfo(
            "wanda",
            "llmkick_models.engine.methods.wanda:Wanda",
            PRUNING_ARGS | CALIBRATION_ARGS | SEQUENTIAL_ARGS | PRUNE_THEN_QUANTIZE_ARGS | {"error_tokens"},
            "zero the smallest |W_ij|·‖X_j‖ within each output row (or N:M group); calibrated; with "
            "bits=, quantized after pruning keeping the mask",
            calibrated=True,
        ),
        MethodInfo(
            "sparsegpt",
            "llmkick_models.engine.methods.sparsegpt:SparseGPT",
            PRUNING_ARGS | CALIBRATION_ARGS | SEQUENTIAL_ARGS | HESSIAN_ARGS | QUANTIZER_ARGS,
            "OBS pruning with the inverse Hessian, masks chosen on updated weights; calibrated; with "
            "bits=, joint sparse + quant in the same column loop",
            calibrated=True,
        ),
        MethodInfo(
            "gptq",
            "llmkick_models.engine.methods.gptq:GPTQ",
            QUANTIZER_ARGS | GPTQ_ARGS | CALIBRATION_ARGS | SEQUENTIAL_ARGS | HESSIAN_ARGS,
            "GPTQ weight quantization: column by column, OBS error compensation; calibrated",
            calibrated=True,
        ),
        MethodInfo(
            "rtn",
            "llmkick_models.engine.methods.rtn:RTN",
            QUANTIZER_ARGS | CALIBRATION_ARGS | {"error_tokens"},
            "round-to-nearest on the same min-max grid; no calibration (given calibration=, it is "
            "used only to measure the reconstruction error)",
        ),
    )
}


def quantization_only_args(name: str) -> frozenset[str]:
    """Arguments that ``name`` takes only together with ``bits=`` (a pruning method that may quantize).

    For gptq/rtn nothing (they always quantize); for Wanda/magnitude also GPTQ's percdamp/blocksize.
    """
    accepts = METHODS[name].accepts
    if "bits" not in accepts or "sparsity" not in accepts:
        return frozenset()
    extra = HESSIAN_ARGS if "quantizer" in accepts else frozenset()
    return (QUANTIZER_ARGS | GPTQ_ARGS | {"quantizer"} | extra) & accepts


def load_method(name: str) -> CompressionMethod:
    """Instantiate the implementation of a registered method."""
    module_name, _, class_name = METHODS[name].implementation.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()
