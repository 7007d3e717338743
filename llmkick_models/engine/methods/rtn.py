"""Round-to-nearest (RTN): every weight snapped to its group's min-max grid, no calibration, no updates.

The baseline GPTQ is measured against (same quantizer, ``llmkick_models.engine.quantizer``).  Given
``calibration=``, the tokens only serve to measure each layer's reconstruction error, as for magnitude.
"""

from __future__ import annotations

from typing import ClassVar

from llmkick_models.engine.methods.base import CompressionMethod, LayerJob, LayerResult
from llmkick_models.engine.options import CALIBRATION_OPTIONS, ERROR_TOKENS, QUANTIZER, REQUIRED_BITS
from llmkick_models.engine.quantizer import quantizer_config, rtn_quantize


def rtn_layer(job: LayerJob) -> LayerResult:
    """Quantize ``job.target``'s weight in place to its nearest grid points; its facts and grid.

    RTN maps 0 to exactly 0, so a pruned weight stays pruned without any mask bookkeeping.
    """
    config = quantizer_config(job.spec)
    weight = job.target.weight
    Q, grid = rtn_quantize(weight.to(job.device), config)
    weight.copy_(Q.to(device=weight.device, dtype=weight.dtype))
    return LayerResult(facts=config.facts(), grid=grid)


class RTN(CompressionMethod):
    """Min-max round-to-nearest per channel or per group of input columns."""

    name: ClassVar[str] = "rtn"
    options = (REQUIRED_BITS, *QUANTIZER[1:], *CALIBRATION_OPTIONS, ERROR_TOKENS)

    def compress_layer(self, job: LayerJob) -> LayerResult:
        """Quantize the layer in place (statistics are not used)."""
        return rtn_layer(job)
