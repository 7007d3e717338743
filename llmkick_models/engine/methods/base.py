"""The interface every compression method implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch

from llmkick_models.engine.model_layout import TargetLinear
from llmkick_models.engine.spec import CompressionSpec

if TYPE_CHECKING:
    from llmkick_models.engine.hessian import InputStatistics
    from llmkick_models.engine.quantizer import QuantizedWeight


class CompressionMethod(ABC):
    """Compresses one decoder linear at a time, in place.

    ``compress_layer`` returns extra per-layer facts for the report (e.g. the dampening used); the measured
    sparsity is added by the report itself, from the weights, and the reconstruction error by the
    sequential driver, from the layer's input statistics.

    Class flags tell the driver what to collect: ``needs_calibration`` methods only run through
    ``llmkick_models.engine.sequential`` and receive the ``InputStatistics`` of the layer's input;
    ``needs_hessian`` methods need its Hessian over every calibration token (otherwise the Hessian is
    accumulated on a subsample, only to measure the reconstruction error).  A method whose needs depend on
    the spec (Wanda/magnitude followed by GPTQ) overrides ``requires_calibration``/``uses_full_hessian``.

    Quantizing methods record each layer's grid (scales, zero points) in ``quantized``, keyed by layer
    name, for packed export; it is not part of the saved fake-quantized weights.
    """

    name: ClassVar[str]
    needs_calibration: ClassVar[bool] = False
    needs_hessian: ClassVar[bool] = False

    def __init__(self) -> None:
        self.quantized: dict[str, QuantizedWeight] = {}

    def requires_calibration(self, spec: CompressionSpec) -> bool:
        """True when this method cannot run on ``spec`` without calibration tokens."""
        return self.needs_calibration

    def uses_full_hessian(self, spec: CompressionSpec) -> bool:
        """True when this method needs the Hessian over every calibration token for ``spec``."""
        return self.needs_hessian

    @abstractmethod
    def compress_layer(
        self,
        target: TargetLinear,
        spec: CompressionSpec,
        device: torch.device,
        statistics: InputStatistics | None = None,
    ) -> dict[str, float]:
        """Compress ``target``'s weight in place, computing on ``device``."""
