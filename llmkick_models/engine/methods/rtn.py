"""Round-to-nearest (RTN): every weight snapped to its group's min-max grid, no calibration, no updates.

The baseline GPTQ is measured against (same quantizer, ``llmkick_models.engine.quantizer``).  Given
``calibration=``, the tokens only serve to measure each layer's reconstruction error, as for magnitude.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from llmkick_models.engine.methods.base import CompressionMethod
from llmkick_models.engine.methods.gptq import quantize_target
from llmkick_models.engine.model_layout import TargetLinear
from llmkick_models.engine.spec import CompressionSpec

if TYPE_CHECKING:
    from llmkick_models.engine.hessian import InputStatistics


class RTN(CompressionMethod):
    """Min-max round-to-nearest per channel or per group of input columns."""

    name: ClassVar[str] = "rtn"

    def compress_layer(
        self,
        target: TargetLinear,
        spec: CompressionSpec,
        device: torch.device,
        statistics: InputStatistics | None = None,
    ) -> dict[str, float]:
        """Quantize ``target`` in place (``statistics`` are not used); keep its grid for packed export."""
        extra, grid = quantize_target(target, spec, device, None, use_gptq=False)
        self.quantized[target.name] = grid
        return extra
