"""``method=llm_int8``: LLM.int8() (Dettmers et al., arXiv 2208.07339) through bitsandbytes, on load.

Not a weight-only fake quantization: the decoder linears become bitsandbytes ``Linear8bitLt`` modules
(``engine.int8_modules``) that quantize the activations at every forward.  The weights need no calibration;
the calibration tokens only measure how many input dimensions bitsandbytes routes to 16 bit (the outlier
share), so that the report says what the threshold did on this model rather than what was asked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from llmkick_models.engine.calibration import CalibrationSet
from llmkick_models.engine.methods.base import CompressionMethod, Needs
from llmkick_models.engine.model_layout import TargetLinear, decoder_linears
from llmkick_models.engine.options import (
    CALIBRATION_OPTIONS,
    CompressionArgumentError,
    Option,
    integer,
    positive_number,
)
from llmkick_models.engine.report import CompressionReport, measure_layer
from llmkick_models.engine.spec import CompressionSpec

log = logging.getLogger(__name__)

_BITS_ALLOWED = "bits=8 (LLM.int8() has 8-bit weights and activations; for fewer bits use gptq or rtn)"
INT8_BITS = Option(
    "bits", integer("bits", _BITS_ALLOWED, 8, 8), 8, "bits per quantized weight", "8", field="bits"
)
_THRESHOLD_ALLOWED = "a number > 0, e.g. int8_threshold=6.0 (the paper's)"
INT8_THRESHOLD = Option(
    "int8_threshold",
    positive_number("int8_threshold", _THRESHOLD_ALLOWED),
    6.0,
    "input dimensions in which some token of a forward reaches this magnitude are computed in 16 bit",
    "a number > 0",
)


class LLMInt8(CompressionMethod):
    """LLM.int8(): bitsandbytes ``Linear8bitLt`` modules, int8 weights and activations with outliers in
    16 bit; the calibration tokens measure the outlier share."""

    name: ClassVar[str] = "llm_int8"
    options = (INT8_BITS, INT8_THRESHOLD, *CALIBRATION_OPTIONS)
    fixed_fields: ClassVar[dict[str, Any]] = {"group_size": None}  # one absmax scale per output row
    #: vLLM is handed plain weight folders; the int8 modules and their outlier routing are bitsandbytes'.
    plain_weights: ClassVar[bool] = False

    @classmethod
    def check(cls, values: dict[str, Any], given: Mapping[str, Any]) -> None:
        """Refuse before anything loads when bitsandbytes is missing (one line naming the extra)."""
        from llmkick_models.engine.int8_modules import bitsandbytes_problem

        problem = bitsandbytes_problem()
        if problem is not None:
            raise CompressionArgumentError(problem)

    @classmethod
    def needs(cls, spec: CompressionSpec) -> Needs:
        """Calibration tokens, only to measure the outlier share."""
        return Needs(calibration=True)

    def compress_whole_model(
        self,
        model: nn.Module,
        spec: CompressionSpec,
        device: torch.device | None,
        calibration: CalibrationSet | None,
    ) -> CompressionReport:
        """Replace the decoder linears by ``Linear8bitLt`` (on ``device`` when given, with the whole model)
        and measure each one's outlier share on the calibration windows."""
        from llmkick_models.engine.int8_modules import replace_with_int8

        assert calibration is not None  # compress_model refuses a method that needs it without it
        start = time.perf_counter()
        targets = decoder_linears(model)
        if device is not None:
            model.to(device)  # the calibration forwards run through the whole model
        threshold = spec.option("int8_threshold")
        was_training = model.training
        model.eval()  # in training mode bitsandbytes' CPU path skips the activation quantization
        try:
            with torch.no_grad():
                int8_targets = replace_with_int8(model, targets, threshold, device)
                facts = measure_outlier_share(model, int8_targets, calibration.input_ids)
        finally:
            model.train(was_training)
        layers = [measure_layer(t, spec, facts[t.name]) for t in int8_targets]
        return CompressionReport(spec, layers, time.perf_counter() - start, calibration.describe())

    @classmethod
    def loaded_problems(cls, targets: list[TargetLinear], spec: CompressionSpec) -> list[str]:
        """The loaded linears must be ``Linear8bitLt`` of this threshold on an absmax int8 grid."""
        from llmkick_models.engine.int8_modules import int8_problems

        return int8_problems(targets, spec.option("int8_threshold"))


def measure_outlier_share(
    model: nn.Module, targets: list[TargetLinear], input_ids: torch.Tensor
) -> dict[str, dict[str, float]]:
    """Run ``model`` on each calibration window alone (one forward per window, as one lm-eval request of
    that length) and return each target's outlier facts (``int8_modules.OutlierCount.facts``)."""
    from llmkick_models.engine.int8_modules import counting_outliers

    device = model.get_input_embeddings().weight.device
    with counting_outliers(targets) as counts:
        for window in tqdm(input_ids, desc="llmkick llm_int8 outlier share", unit="window", leave=False):
            model(input_ids=window[None].to(device), use_cache=False)
    return {name: count.facts() for name, count in counts.items()}
