"""The interface every compression method implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from llmkick_models.model_layout import TargetLinear
from llmkick_models.spec import CompressionSpec


class CompressionMethod(ABC):
    """Compresses one decoder linear at a time, in place.

    ``compress_layer`` returns extra per-layer facts for the report (e.g. a reconstruction error); the
    measured sparsity is added by the report itself, from the weights.
    """

    name: ClassVar[str]
    needs_calibration: ClassVar[bool] = False

    @abstractmethod
    def compress_layer(
        self, target: TargetLinear, spec: CompressionSpec, device: torch.device
    ) -> dict[str, float]:
        """Compress ``target``'s weight in place, computing on ``device``."""
