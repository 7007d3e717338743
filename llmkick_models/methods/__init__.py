"""Registry of compression methods: name -> implementation module and the model_args it accepts.

Pure data so that arguments can be validated before torch or the model is loaded.  A new method is one new
module in this package plus one entry in ``METHODS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmkick_models.methods.base import CompressionMethod

PRUNING_ARGS = frozenset({"sparsity", "pattern"})
#: Where the calibration tokens come from and how many; ``error_tokens`` bounds the tokens on which a
#: method without a full Hessian measures its reconstruction error.
CALIBRATION_ARGS = frozenset({"calibration", "nsamples", "seqlen", "calibration_seed"})
#: Options of the layer-by-layer driver for methods whose statistics depend on earlier compressed layers.
SEQUENTIAL_ARGS = frozenset({"true_sequential"})
#: Options of the Hessian-based methods (SparseGPT now, GPTQ next).
HESSIAN_ARGS = frozenset({"percdamp", "blocksize"})


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
            "llmkick_models.methods.magnitude:Magnitude",
            PRUNING_ARGS | CALIBRATION_ARGS | {"error_tokens"},
            "zero the smallest |W| per weight matrix (unstructured) or per N:M group; no calibration "
            "(given calibration=, it is used only to measure the reconstruction error)",
        ),
        MethodInfo(
            "wanda",
            "llmkick_models.methods.wanda:Wanda",
            PRUNING_ARGS | CALIBRATION_ARGS | SEQUENTIAL_ARGS | {"error_tokens"},
            "zero the smallest |W_ij|·‖X_j‖ within each output row (or N:M group); calibrated",
            calibrated=True,
        ),
        MethodInfo(
            "sparsegpt",
            "llmkick_models.methods.sparsegpt:SparseGPT",
            PRUNING_ARGS | CALIBRATION_ARGS | SEQUENTIAL_ARGS | HESSIAN_ARGS,
            "OBS pruning with the inverse Hessian, masks chosen on updated weights; calibrated",
            calibrated=True,
        ),
    )
}


def load_method(name: str) -> CompressionMethod:
    """Instantiate the implementation of a registered method."""
    module_name, _, class_name = METHODS[name].implementation.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()
