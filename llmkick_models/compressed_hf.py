"""``compressed-hf``: lm-eval's HF model, compressed on load before any request is served.

    lm_eval --model compressed-hf --model_args pretrained=X,method=magnitude,sparsity=0.5 --tasks ...

compressed-hf's own arguments are the named parameters below; everything else is HFLM's (``dtype``,
``device``, ``parallelize``, ...) or ``from_pretrained``'s, exactly as with ``--model hf``.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import transformers
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from llmkick_models.arguments import build_spec, reject_incompatible_load_args, reject_misspelled_args
from llmkick_models.compress import compress_model
from llmkick_models.report import CompressionReport

log = logging.getLogger(__name__)

_HFLM_ARGS = frozenset(inspect.signature(HFLM.__init__).parameters)


def _route_logs_through_lm_eval() -> None:
    """Show our INFO lines where lm-eval shows its own (lm-eval only configures the ``lm_eval`` logger)."""
    ours, theirs = logging.getLogger("llmkick_models"), logging.getLogger("lm_eval")
    if not ours.handlers and theirs.handlers:
        for handler in theirs.handlers:
            ours.addHandler(handler)
        ours.setLevel(theirs.getEffectiveLevel())
        ours.propagate = False


@register_model("compressed-hf")
class CompressedHFLM(HFLM):
    """HFLM whose decoder linears are pruned or quantized right after loading.

    Args:
        pretrained: model id, local directory, or an already-loaded ``PreTrainedModel`` (compressed in place).
        method: ``none`` (dense) or ``magnitude``.
        sparsity: fraction of each decoder weight matrix to zero, in [0, 1).
        pattern: ``unstructured`` (default) or ``N:M``: N zeros in every M consecutive input weights of a
            row (LLM-KICK's convention: ``2:4`` and ``4:8`` are 50%); fixes the sparsity to N/M.
        **kwargs: passed to ``HFLM`` and from there to ``from_pretrained``.
    """

    def __init__(
        self,
        pretrained: str | transformers.PreTrainedModel,
        method: str | None = "none",
        sparsity: float | str | None = None,
        pattern: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Validate everything before HFLM loads anything.
        self.compression_spec = build_spec(method, sparsity, pattern)
        reject_misspelled_args(kwargs, _HFLM_ARGS)
        reject_incompatible_load_args(self.compression_spec, kwargs)
        self.compression_report: CompressionReport | None = None
        _route_logs_through_lm_eval()
        super().__init__(pretrained=pretrained, **kwargs)
        if self.compression_report is None:  # a loaded model skips _create_model
            self._compress()

    def _create_model(self, *args: Any, **kwargs: Any) -> None:
        super()._create_model(*args, **kwargs)
        self._compress()

    def _compress(self) -> None:
        model = self._model
        # Weights may still be on the CPU (HFLM moves the model afterwards): do the per-layer work on the
        # accelerator anyway.  With a device_map, leave each layer where it lives.
        on_accelerator = self._device.type not in ("cpu", "meta") and not hasattr(model, "hf_device_map")
        self.compression_report = compress_model(
            model, self.compression_spec, self._device if on_accelerator else None
        )
        if not self.compression_spec.is_dense:
            self.compression_report.log()

    def get_model_info(self) -> dict[str, Any]:
        """HFLM's model info plus the compression report (lands in the results JSON ``config``)."""
        info = super().get_model_info()
        if self.compression_report is not None:
            info["llmkick_compression"] = self.compression_report.to_dict()
        return info


__all__ = ["CompressedHFLM"]
