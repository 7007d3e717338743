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


@dataclass(frozen=True)
class MethodInfo:
    """What the argument parser needs to know about a method, without importing it."""

    name: str
    implementation: str  # "module:Class"; empty for "none"
    accepts: frozenset[str]
    summary: str


METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        MethodInfo("none", "", frozenset(), "no compression (the dense baseline)"),
        MethodInfo(
            "magnitude",
            "llmkick_models.methods.magnitude:Magnitude",
            PRUNING_ARGS,
            "zero the smallest |W| per weight matrix (unstructured) or per N:M group; no calibration",
        ),
    )
}


def load_method(name: str) -> CompressionMethod:
    """Instantiate the implementation of a registered method."""
    module_name, _, class_name = METHODS[name].implementation.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()
