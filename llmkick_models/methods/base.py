"""The interface every compression method implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch

from llmkick_models.model_layout import TargetLinear
from llmkick_models.spec import CompressionSpec

if TYPE_CHECKING:
    from llmkick_models.hessian import InputStatistics


class CompressionMethod(ABC):
    """Compresses one decoder linear at a time, in place.

    ``compress_layer`` returns extra per-layer facts for the report (e.g. the dampening used); the measured
    sparsity is added by the report itself, from the weights, and the reconstruction error by the
    sequential driver, from the layer's input statistics.

    Class flags tell the driver what to collect: ``needs_calibration`` methods only run through
    ``llmkick_models.sequential`` and receive the ``InputStatistics`` of the layer's input;
    ``needs_hessian`` methods need its Hessian over every calibration token (otherwise the Hessian is
    accumulated on a subsample, only to measure the reconstruction error).
    """

    name: ClassVar[str]
    needs_calibration: ClassVar[bool] = False
    needs_hessian: ClassVar[bool] = False

    @abstractmethod
    def compress_layer(
        self,
        target: TargetLinear,
        spec: CompressionSpec,
        device: torch.device,
        statistics: InputStatistics | None = None,
    ) -> dict[str, float]:
        """Compress ``target``'s weight in place, computing on ``device``."""
